"""NUTS and HMC on a compiled model: BlackJAX kernels, Stan's window adaptation, all devices.

The kernels and the adaptation are BlackJAX's (``blackjax.nuts.build_kernel``,
``blackjax.hmc.build_kernel``, ``window_adaptation.base`` and its schedule). This
module is the thin driver: it lays chains over devices, runs warmup and sampling as
jitted ``lax.scan`` chunks, keeps every sampler statistic, and returns a
:class:`Posterior`.

Reproducibility: chain ``i`` uses ``fold_in(key, i)`` and step ``t`` of a phase uses
``fold_in(phase_key, t)``, so a chain's draws depend only on ``key`` and ``i`` — not
on the number of chains, devices, or progress-bar chunks.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.window_adaptation import base as window_adaptation_base
from blackjax.adaptation.window_adaptation import build_schedule
from numpyro import handlers
from numpyro.infer.util import constrain_fn

from ppl.compile import (
    CompiledModel,
    Layout,
    StaticData,
    compile,
    find_initial_position,
    is_factor,
    make_logdensity,
    merge_data,
    unflatten,
)
from ppl.errors import ModelError
from ppl.parallel import map_chains, plan_devices
from ppl.progress import ProgressBar, chunk_sizes, progress_enabled

__all__ = ["Posterior", "SamplerSettings", "hmc", "nuts", "validate_key"]

SAMPLE_STATS = ("lp", "diverging", "energy", "acceptance_rate", "step_size", "n_steps", "tree_depth")


class SamplerSettings(NamedTuple):
    """Static sampler configuration (part of the compiled program's cache key)."""

    algorithm: str = "nuts"  # "nuts" or "hmc"
    target_accept: float = 0.8
    max_tree_depth: int = 10
    num_integration_steps: int = 16
    dense_mass: bool = False
    initial_step_size: float = 1.0
    init_radius: float = 2.0
    init_attempts: int = 100
    vectorized: bool = False  # vmap chains within a device instead of lax.map


@dataclasses.dataclass(frozen=True)
class Posterior:
    """Draws from an MCMC run, grouped by chain.

    Attributes:
        samples: site name -> constrained draws ``(chains, draws, *site_shape)``;
            latent and deterministic sites.
        sample_stats: ``lp``, ``diverging``, ``energy``, ``acceptance_rate``, ``step_size``,
            ``n_steps`` (and ``tree_depth`` for NUTS), each ``(chains, draws)``.
        log_likelihood: observed site name -> pointwise log-likelihood ``(chains, draws, *batch)``.
        unconstrained: the flat unconstrained draws ``(chains, draws, dim)``.
        step_size: adapted step size per chain ``(chains,)``.
        inverse_mass_matrix: adapted per chain, ``(chains, dim)`` or ``(chains, dim, dim)``.
        warmup_divergences: divergent warmup transitions per chain ``(chains,)``.
        timing: wall seconds per phase (``init``, ``warmup``, ``sampling``), compile included.
        compiled: the :class:`~ppl.CompiledModel` (model, data, dims, coords).
    """

    samples: dict[str, np.ndarray]
    sample_stats: dict[str, np.ndarray]
    log_likelihood: dict[str, np.ndarray]
    unconstrained: np.ndarray
    step_size: np.ndarray
    inverse_mass_matrix: np.ndarray
    warmup_divergences: np.ndarray
    timing: dict[str, float]
    compiled: CompiledModel

    @property
    def num_chains(self) -> int:
        return self.unconstrained.shape[0]

    @property
    def num_draws(self) -> int:
        return self.unconstrained.shape[1]

    def to_arviz(
        self,
        *,
        prior: dict | None = None,
        posterior_predictive: dict | None = None,
        coords: dict | None = None,
        dims: dict | None = None,
    ):
        """Convert to ArviZ (``InferenceData`` on arviz 0.x, ``DataTree`` on 1.x).

        Args:
            prior: output of ``ppl.predictive(model, None, ...)``; fills ``prior`` and
                ``prior_predictive``.
            posterior_predictive: output of ``ppl.predictive(model, posterior, ...)``.
            coords: extra or overriding coordinates, e.g. ``{"school": names}``.
            dims: extra or overriding dims per variable.
        """
        from ppl.arviz import to_inference_data

        return to_inference_data(
            self, prior=prior, posterior_predictive=posterior_predictive, coords=coords, dims=dims
        )


# ------------------------------------------------------------------ keys, checks


def validate_key(key) -> jax.Array:
    """Accept a ``jax.random.key`` (typed) or ``jax.random.PRNGKey`` (raw uint32[2])."""
    if key is None or isinstance(key, int | np.integer):
        raise TypeError(
            "key must be a JAX PRNG key, e.g. key=jax.random.key(0); got "
            f"{type(key).__name__}. Every random function in ppl takes an explicit key."
        )
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape != (2,):
        raise TypeError(f"key must be a single PRNG key, got an array of shape {key.shape}")
    return key


def _check_counts(chains: int, warmup: int, draws: int) -> None:
    for name, value, low in (("chains", chains, 1), ("warmup", warmup, 0), ("draws", draws, 1)):
        if not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


# --------------------------------------------------------------- the programs


class _Programs(NamedTuple):
    init: Callable
    run: Callable
    postprocess: Callable


# Phase codes of one transition, passed to the run program as data.
SAMPLING, WARMUP, LAST_WARMUP = 0, 1, 2


@functools.lru_cache(maxsize=64)
def _programs(
    model: Callable, layout: Layout, static: StaticData, settings: SamplerSettings, num_devices: int
) -> _Programs:
    """The jitted programs of one (model, data structure, settings, devices): cached so
    that a repeated run, or a run on new data of the same shape, never re-traces.

    Warmup and sampling share one program (one copy of the kernel to compile): each
    transition carries a phase code, and only warmup transitions update the adaptation.
    """
    dim = sum(int(np.prod(shape)) for _, shape in layout)
    with warnings.catch_warnings():
        # blackjax 1.7 marks base() deprecated in favour of staged_adaptation, whose
        # per-step pieces are private; base() is still the public init/update/final
        # triple that lets warmup share one compiled program with sampling.
        warnings.simplefilter("ignore", DeprecationWarning)
        adapt_init, adapt_update, adapt_final = window_adaptation_base(
            is_mass_matrix_diagonal=not settings.dense_mass,
            target_acceptance_rate=settings.target_accept,
        )
    if settings.algorithm == "nuts":
        kernel = blackjax.nuts.build_kernel()
        kernel_args = {"max_num_doublings": settings.max_tree_depth}
    else:
        kernel = blackjax.hmc.build_kernel()
        kernel_args = {"num_integration_steps": settings.num_integration_steps}

    def logdensity_of(arrays):
        args, kwargs = merge_data(arrays, static)
        return make_logdensity(model, layout, args, kwargs)

    def init_chain(init_key, arrays):
        logdensity = logdensity_of(arrays)
        u, ok = find_initial_position(init_key, logdensity, dim, settings.init_radius, settings.init_attempts)
        adapt_state = adapt_init(u, settings.initial_step_size)
        carry = _Carry(
            blackjax.hmc.init(u, logdensity),
            adapt_state,
            adapt_state.step_size,
            adapt_state.inverse_mass_matrix,
        )
        # Strong types: the run program's outputs are strongly typed, so a weakly
        # typed initial carry would make the second call recompile.
        return jax.tree.map(lambda x: jax.lax.convert_element_type(x, jnp.result_type(x)), carry), ok

    def run_chain(per_chain, shared):
        carry, chain_key = per_chain
        arrays, steps, phases, stages = shared
        logdensity = logdensity_of(arrays)

        def transition(carry, xs):
            t, phase, stage = xs
            state, info = kernel(
                jax.random.fold_in(chain_key, t),
                carry.state,
                logdensity,
                carry.step_size,
                carry.inverse_mass_matrix,
                **kernel_args,
            )

            def adapt(carry):
                adapt_state = adapt_update(
                    carry.adapt_state, (stage[0], stage[1]), state.position, info.acceptance_rate
                )
                final_step_size, final_inverse_mass_matrix = adapt_final(adapt_state)
                last = phase == LAST_WARMUP
                return _Carry(
                    state,
                    adapt_state,
                    jnp.where(last, final_step_size, adapt_state.step_size),
                    jnp.where(last, final_inverse_mass_matrix, adapt_state.inverse_mass_matrix),
                )

            carry = jax.lax.cond(phase == SAMPLING, lambda c: c._replace(state=state), adapt, carry)
            stats = {
                "lp": state.logdensity,
                "diverging": info.is_divergent,
                "energy": info.energy,
                "acceptance_rate": info.acceptance_rate,
                "n_steps": info.num_integration_steps,
            }
            if settings.algorithm == "nuts":
                stats["tree_depth"] = info.num_trajectory_expansions
            return carry, (state.position, stats)

        return jax.lax.scan(transition, carry, (steps, phases, stages))

    def postprocess_one(u, arrays):
        args, kwargs = merge_data(arrays, static)
        values = constrain_fn(model, args, kwargs, unflatten(u, layout), return_deterministic=True)
        latent = {name: values[name] for name, _ in layout}
        tr = handlers.trace(handlers.substitute(handlers.seed(model, 0), latent)).get_trace(*args, **kwargs)
        loglik = {
            name: site["fn"].log_prob(site["value"])
            for name, site in tr.items()
            if site["type"] == "sample" and site["is_observed"] and not is_factor(site)
        }
        return values, loglik

    return _Programs(
        init=jax.jit(map_chains(init_chain, num_devices, settings.vectorized)),
        run=jax.jit(map_chains(run_chain, num_devices, settings.vectorized)),
        postprocess=jax.jit(jax.vmap(postprocess_one, in_axes=(0, None))),
    )


class _Carry(NamedTuple):
    state: Any  # blackjax HMCState
    adapt_state: Any  # blackjax WindowAdaptationState
    step_size: jax.Array
    inverse_mass_matrix: jax.Array


def _schedule(warmup: int, draws: int) -> tuple[np.ndarray, np.ndarray]:
    """Phase code and window-adaptation stage of every transition, warmup then draws."""
    phases = np.full(warmup + draws, SAMPLING, np.int32)
    stages = np.zeros((warmup + draws, 2), np.int32)
    if warmup:
        phases[:warmup] = WARMUP
        phases[warmup - 1] = LAST_WARMUP
        stages[:warmup] = np.asarray(build_schedule(warmup))
    return phases, stages


# ------------------------------------------------------------------- the driver


def _run(model, args, kwargs, *, key, chains, warmup, draws, settings, devices, progress_bar):
    key = validate_key(key)
    _check_counts(chains, warmup, draws)
    compiled = compile(model, *args, **kwargs)
    algorithm = settings.algorithm.upper()
    compiled.require_continuous(algorithm)
    if compiled.dim == 0:
        raise ModelError(
            f"the model has no latent continuous site; there is nothing for {algorithm} to sample"
        )
    plan = plan_devices(chains, devices)
    programs = _programs(model, compiled.layout, compiled.static_data, settings, plan.num_devices)
    arrays = compiled._arrays

    chain_keys = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(key, i)))(
        jnp.arange(plan.padded_chains)
    )
    init_keys, run_keys = chain_keys[:, 0], chain_keys[:, 1]
    timing = {}

    started = time.perf_counter()
    carry, ok = programs.init(init_keys, arrays)
    ok = np.asarray(ok)[:chains]
    timing["init"] = time.perf_counter() - started
    if not ok.all():
        failed = int(np.argmin(ok))
        raise ModelError(compiled.describe_nonfinite(carry.state.position[failed], settings.init_attempts))

    phases, stages = _schedule(warmup, draws)
    show = progress_enabled(progress_bar)
    bar = ProgressBar(plan.padded_chains * (warmup + draws), plan.padded_chains, show)
    outputs, warmup_divergences = [], 0
    try:
        for name, first, length in (("warmup", 0, warmup), ("sampling", warmup, draws)):
            started = time.perf_counter()
            bar.phase(name)
            for chunk_start, chunk_length in chunk_sizes(first, length, show):
                window = slice(chunk_start, chunk_start + chunk_length)
                shared = (
                    arrays,
                    jnp.arange(chunk_start, chunk_start + chunk_length),
                    phases[window],
                    stages[window],
                )
                carry, (positions, stats) = programs.run((carry, run_keys), shared)
                if name == "warmup":
                    warmup_divergences += np.asarray(stats["diverging"]).sum(axis=1)
                else:
                    outputs.append(jax.device_get((positions, stats)))
                bar.advance(chunk_length)
            jax.block_until_ready(carry)
            timing[name] = time.perf_counter() - started
    finally:
        bar.close()

    positions = np.concatenate([out[0] for out in outputs], axis=1)[:chains]
    stats = {k: np.concatenate([out[1][k] for out in outputs], axis=1)[:chains] for k in outputs[0][1]}
    step_size = np.asarray(carry.step_size)[:chains]
    stats["step_size"] = np.broadcast_to(step_size[:, None], positions.shape[:2]).copy()

    started = time.perf_counter()
    flat = positions.reshape(-1, compiled.dim)
    values, loglik = jax.device_get(programs.postprocess(flat, arrays))
    shape = positions.shape[:2]
    samples = {k: np.asarray(v).reshape(shape + v.shape[1:]) for k, v in values.items()}
    loglik = {k: np.asarray(v).reshape(shape + v.shape[1:]) for k, v in loglik.items()}
    timing["postprocess"] = time.perf_counter() - started

    posterior = Posterior(
        samples=samples,
        sample_stats={k: stats[k] for k in SAMPLE_STATS if k in stats},
        log_likelihood=loglik,
        unconstrained=positions,
        step_size=step_size,
        inverse_mass_matrix=np.asarray(carry.inverse_mass_matrix)[:chains],
        warmup_divergences=np.broadcast_to(np.asarray(warmup_divergences), (plan.padded_chains,))[:chains],
        timing=timing,
        compiled=compiled,
    )
    _warn_on_problems(posterior)
    return posterior


def _warn_on_problems(posterior: Posterior) -> None:
    """Warnings with counts: divergences, R-hat > 1.01, bulk ESS < 100 per chain."""
    import arviz as az

    diverging = posterior.sample_stats["diverging"]
    if diverging.any():
        per_chain = diverging.sum(axis=1).tolist()
        warnings.warn(
            f"{int(diverging.sum())} of {diverging.size} post-warmup transitions diverged "
            f"(per chain: {per_chain}); the posterior may be biased. Try a higher "
            "target_accept or a non-centred parameterisation.",
            stacklevel=4,
        )
    if posterior.num_draws < 4:
        return
    # Diagnose the sampler's own coordinates (the flat unconstrained draws): one array
    # instead of one xarray variable per site, and R-hat / rank-normalised ESS are
    # unchanged by the elementwise monotone transforms of scalar sites.
    draws = {"u": posterior.unconstrained}
    owner = np.repeat(
        [name for name, _ in posterior.compiled.layout],
        [int(np.prod(shape)) for _, shape in posterior.compiled.layout],
    )

    def counts(mask):
        names, numbers = np.unique(owner[mask], return_counts=True)
        return dict(zip(names.tolist(), numbers.tolist(), strict=True))

    if posterior.num_chains > 1:
        bad = counts(az.rhat(draws)["u"].values > 1.01)
        if bad:
            warnings.warn(
                f"R-hat > 1.01 for {sum(bad.values())} element(s) ({bad}); the chains have "
                "not mixed. Run longer or reparameterise.",
                stacklevel=4,
            )
    threshold = 100 * posterior.num_chains
    low = counts(az.ess(draws, method="bulk")["u"].values < threshold)
    if low:
        warnings.warn(
            f"bulk ESS < {threshold} (100 per chain) for {sum(low.values())} element(s) ({low}); "
            "posterior summaries are unreliable. Run more draws.",
            stacklevel=4,
        )


def nuts(
    model: Callable,
    *args: Any,
    key: jax.Array,
    chains: int = 4,
    warmup: int = 1000,
    draws: int = 1000,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    dense_mass: bool = False,
    devices: int | None = None,
    vectorized: bool = False,
    progress_bar: bool | None = None,
    **kwargs: Any,
) -> Posterior:
    """Sample ``model(*args, **kwargs)`` with NUTS (BlackJAX) after Stan's window adaptation.

    Chains are spread over ``devices`` local devices (default: all) with
    ``jax.shard_map``, and mapped within a device (``lax.map``, or ``vmap`` with
    ``vectorized=True``); any number of chains runs on any number of devices, and
    (unless vectorized) a chain's draws are bit-identical whatever the device count.
    Warns with counts on divergences, R-hat > 1.01 and low bulk ESS.

    Args:
        model: a model function; ``*args`` and ``**kwargs`` are its data.
        key: a ``jax.random.key``; chain ``i`` uses ``fold_in(key, i)``.
        chains: number of chains.
        warmup: adaptation transitions per chain (discarded).
        draws: kept transitions per chain.
        target_accept: dual-averaging target acceptance rate.
        max_tree_depth: maximum number of trajectory doublings.
        dense_mass: adapt a dense (instead of diagonal) inverse mass matrix.
        devices: number of local devices to use (default: all, at most ``chains``).
        vectorized: ``vmap`` the chains of a device (faster for big array models on
            accelerators; draws then depend slightly on the number of chains per device).
        progress_bar: ``None`` = on in a terminal unless ``CI`` is set.

    Returns:
        A :class:`Posterior`; ``posterior.to_arviz()`` gives ArviZ data.

    Raises:
        ModelError: a malformed model, a latent discrete site, or a log density that is
            non-finite at every initialisation attempt (the message names the site).

    Example:
        >>> import jax, ppl
        >>> from ppl import dist
        >>> def model(y=None):
        ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        ...     ppl.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> post = ppl.nuts(model, y=jax.numpy.array(0.5), key=jax.random.key(0),
        ...                 chains=2, warmup=50, draws=50)  # doctest: +SKIP
        >>> post.samples["mu"].shape  # doctest: +SKIP
        (2, 50)
    """
    settings = SamplerSettings(
        algorithm="nuts",
        target_accept=float(target_accept),
        max_tree_depth=int(max_tree_depth),
        dense_mass=bool(dense_mass),
        vectorized=bool(vectorized),
    )
    return _run(
        model,
        args,
        kwargs,
        key=key,
        chains=chains,
        warmup=warmup,
        draws=draws,
        settings=settings,
        devices=devices,
        progress_bar=progress_bar,
    )


def hmc(
    model: Callable,
    *args: Any,
    key: jax.Array,
    num_integration_steps: int = 16,
    chains: int = 4,
    warmup: int = 1000,
    draws: int = 1000,
    target_accept: float = 0.8,
    dense_mass: bool = False,
    devices: int | None = None,
    vectorized: bool = False,
    progress_bar: bool | None = None,
    **kwargs: Any,
) -> Posterior:
    """Sample with static-trajectory HMC (``num_integration_steps`` leapfrog steps).

    Same driver, adaptation, devices and output as :func:`nuts`; ``tree_depth`` is
    absent from ``sample_stats``.
    """
    settings = SamplerSettings(
        algorithm="hmc",
        target_accept=float(target_accept),
        num_integration_steps=int(num_integration_steps),
        dense_mass=bool(dense_mass),
        vectorized=bool(vectorized),
    )
    return _run(
        model,
        args,
        kwargs,
        key=key,
        chains=chains,
        warmup=warmup,
        draws=draws,
        settings=settings,
        devices=devices,
        progress_bar=progress_bar,
    )
