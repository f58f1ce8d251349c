"""The caching rule, driver by driver: a second identical call, new data of the same shape,
and a fresh but equal optimiser or objective cause no new trace of the driver's programs
and no new compilation (neither an XLA compile nor a read from the persistent cache). A
different optimiser does compile (the check has power), and the persistent compilation
cache serves a second process.
"""

import contextlib
import importlib
import os
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import optax
import pytest

import ppl
from ppl.runtime.cache import by_value
from ppl.smc import diffusion as D
from tests.models import SIGMA, Y, eight_schools
from tests.seeds import key
from tests.smc.test_tempered import X, regression
from tests.smc.test_tempered import Y as Y_REGRESSION
from tests.vi.models import NORMAL_PARAMS, normal_guide, normal_model
from tests.vi.models import Y as Y_VI

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
CACHE_EVENTS = ("/jax/compilation_cache/cache_hits", "/jax/compilation_cache/cache_misses")


@contextlib.contextmanager
def count_compiles():
    """Every compilation: an XLA compile, or an executable read from the persistent cache
    (which records no compile event)."""
    counter = []

    def on_duration(event, duration, **_):
        if event == BACKEND_COMPILE:
            counter.append(event)

    def on_event(event, **_):
        if event in CACHE_EVENTS:
            counter.append(event)

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    try:
        yield counter
    finally:
        jax.monitoring.unregister_event_duration_listener(on_duration)
        jax.monitoring.unregister_event_listener(on_event)


def programs(module: str, *names: str) -> list:
    module = importlib.import_module(module)
    return [getattr(module, name) for name in names]


def assert_no_new_trace_or_compile(call, variants, jitted):
    """``call(variant)`` once to warm up, then every variant: no cache growth, no compile."""
    call(variants[0])
    sizes = [program._cache_size() for program in jitted]
    for variant in variants:
        with count_compiles() as compiles:
            call(variant)
        assert [program._cache_size() for program in jitted] == sizes, variant
        assert not compiles, (variant, len(compiles))


def test_nuts_and_hmc():
    def call(y):
        for sampler in (ppl.nuts, ppl.hmc):
            sampler(eight_schools, SIGMA, y=y, key=key(0), chains=2, warmup=30, draws=30)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # short runs warn about ESS
        assert_no_new_trace_or_compile(
            call,
            [jnp.asarray(Y), jnp.asarray(Y), jnp.asarray(Y + 1.0)],
            programs("ppl.mcmc.sampler", "_init_chains", "_advance")
            + programs("ppl.model.compile", "constrain_draws"),
        )


def test_vi_fit_with_a_fresh_equal_optimiser_and_objective():
    def call(variant):
        y, learning_rate = variant
        elbo = ppl.vi.objectives.elbo(normal_model, normal_guide())  # written anew, as users do
        ppl.vi.fit(elbo, NORMAL_PARAMS, y, optimizer=optax.adam(learning_rate), steps=40, key=key(3))

    y = jnp.asarray(Y_VI)
    assert_no_new_trace_or_compile(
        call, [(y, 0.02), (y, 0.02), (y + 1.0, 0.02)], programs("ppl.vi.fit", "_advance")
    )
    # power: another optimiser is another program
    size = programs("ppl.vi.fit", "_advance")[0]._cache_size()
    call((y, 0.05))
    assert programs("ppl.vi.fit", "_advance")[0]._cache_size() == size + 1


def test_by_value_tells_optimisers_apart():
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    assert by_value(optax.adam(1e-3), params) == by_value(optax.adam(1e-3), params)
    schedule = optax.cosine_decay_schedule(1e-3, 100)
    assert by_value(optax.adam(schedule), params) == by_value(
        optax.adam(optax.cosine_decay_schedule(1e-3, 100)), params
    )
    different = [optax.adam(2e-3), optax.sgd(1e-3), optax.adam(optax.cosine_decay_schedule(1e-3, 200))]
    assert all(by_value(opt, params) != by_value(optax.adam(1e-3), params) for opt in different)
    assert by_value(optax.adam(1e-3), params) != by_value(
        optax.adam(1e-3), {"w": jnp.zeros(4), "b": jnp.zeros(())}
    )


def test_tempered_smc():
    def call(y):
        ppl.smc.tempered(regression, X, y=y, key=key(0), num_particles=100, num_islands=2)

    y = jnp.asarray(Y_REGRESSION)
    assert_no_new_trace_or_compile(
        call,
        [y, y, y + 0.5],
        programs("ppl.smc.tempered", "_init_islands", "_advance")
        + programs("ppl.model.compile", "constrain_draws"),
    )


@pytest.mark.parametrize("sampler", ["tds", "mcgdiff", "afdps", "fps", "dps"])
def test_diffusion_samplers_on_a_new_instance_of_the_same_shape(sampler):
    def call(seed):
        mixture, observation, _ = D.grid_mixture_problem(seed, 4, 2)
        with contextlib.suppress(FloatingPointError):  # afdps-sde may diverge on 3 steps
            getattr(D, sampler)(
                mixture.diffusion_prior(D.vp()),
                observation,
                key=key(0),
                num_particles=20,
                num_steps=3,
            )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # weight collapse on a tiny run
        assert_no_new_trace_or_compile(
            call,
            [11, 11, 12],
            programs(
                "ppl.smc.diffusion.base", "_init_islands", "_advance", "_finish", "_pointwise_log_likelihood"
            ),
        )


def test_train_score_with_a_fresh_equal_optimiser():
    network = D.NoiseMLP(D.vp(), 2, hidden=8, depth=1, time_features=4)
    data = jax.random.normal(key(1), (64, 2))
    jitted = programs("ppl.smc.diffusion.training", "_advance")

    def call(variant):
        data, learning_rate = variant
        optimizer = None if learning_rate is None else optax.adam(learning_rate)
        D.train_score(data, D.vp(), key=key(0), network=network, num_steps=20, optimizer=optimizer)

    for learning_rate in (None, 1e-3):  # the default, and one written anew in each call
        assert_no_new_trace_or_compile(call, [(data, learning_rate), (data + 1.0, learning_rate)], jitted)


PERSISTENT = textwrap.dedent(
    """
    import time, jax
    import ppl
    from tests.models import SIGMA, Y, eight_schools
    from tests.seeds import key
    events = []
    jax.monitoring.register_event_listener(lambda event, **_: events.append(event))
    start = time.perf_counter()
    ppl.nuts(eight_schools, SIGMA, y=Y, key=key(0), chains=2, warmup=20, draws=20)
    seconds = time.perf_counter() - start
    hits = events.count("/jax/compilation_cache/cache_hits")
    misses = events.count("/jax/compilation_cache/cache_misses")
    print("cache", jax.config.jax_compilation_cache_dir, "hits", hits, "misses", misses, "seconds", seconds)
    """
)


def test_a_second_process_reads_the_persistent_compilation_cache(tmp_path):
    env = dict(os.environ, PPL_COMPILATION_CACHE_DIR=str(tmp_path), JAX_PLATFORMS="cpu")
    env.pop("PPL_COMPILATION_CACHE", None)

    def run():
        result = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", PERSISTENT],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout.split()

    first, second = run(), run()
    assert first[1] == str(tmp_path) and int(first[5]) >= 3  # NUTS's programs were compiled...
    assert int(second[3]) >= 3 and int(second[5]) == 0  # ...and the second process read every one back
    assert any(name.endswith("-cache") for name in os.listdir(tmp_path))
    off = subprocess.run(
        [sys.executable, "-c", "import jax, ppl; print(jax.config.jax_compilation_cache_dir)"],
        cwd=ROOT,
        env=dict(env, PPL_COMPILATION_CACHE="0"),
        capture_output=True,
        text=True,
    )
    assert off.stdout.strip() == "None"
