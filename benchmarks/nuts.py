"""NUTS side by side: ppl.nuts, NumPyro MCMC(NUTS) and a hand-written BlackJAX loop.

Same process, same model function, same settings (4 chains, 1000 warmup, 1000 draws),
on eight schools (non-centred) and logistic regression on scikit-learn's breast-cancer
data (standardised, 30 features + intercept). BlackJAX runs on ppl's compiled log density.

Compile time is the sum of JAX's own compile events (tracing, lowering, XLA) during the
first call. Run time is the wall time of a later call with a new key, minus any compile
events in it (NumPyro recompiles on every run); the median of 5 interleaved calls.
The persistent compilation cache is off here, so that compile times are comparable
(``benchmarks/compile_cache.py`` measures what it saves).
ESS is ArviZ's bulk ESS (rank-normalised, so the same for constrained and unconstrained
draws), minimum over all coordinates.

    python benchmarks/nuts.py [--quick]
"""

import argparse
import functools
import os

os.environ.setdefault("PPL_COMPILATION_CACHE", "0")  # before ppl is imported
import platform
import warnings
from importlib.metadata import version

import arviz as az
import blackjax
import jax
import numpy as np
from numpyro.infer import MCMC, NUTS
from sklearn.datasets import load_breast_cancer
from timing import timed, write_results  # noqa: E402  (benchmarks/timing.py, beside this script)

import ppl
from ppl import dist

# ------------------------------------------------------------------------ models


def eight_schools(sigma, y=None):
    mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
    tau = ppl.sample("tau", dist.HalfCauchy(5.0))
    with ppl.plate("school", len(sigma)):
        eta = ppl.sample("eta", dist.Normal(0.0, 1.0))
        ppl.sample("y", dist.Normal(mu + tau * eta, sigma), obs=y)


def logistic_regression(x, y=None):
    alpha = ppl.sample("alpha", dist.Normal(0.0, 5.0))
    beta = ppl.sample("beta", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    with ppl.plate("obs", x.shape[0]):
        ppl.sample("y", dist.Bernoulli(logits=alpha + x @ beta), obs=y)


def datasets():
    schools = (
        np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]),
        np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]),
    )
    cancer = load_breast_cancer()
    x = (cancer.data - cancer.data.mean(0)) / cancer.data.std(0)
    return {
        "eight_schools": (eight_schools, (schools[0],), {"y": schools[1]}),
        "logistic_breast_cancer": (
            logistic_regression,
            (x.astype(np.float32),),
            {"y": cancer.target.astype(np.float32)},
        ),
    }


# ----------------------------------------------------------------------- engines


def run_ppl(model, args, kwargs, seed, *, chains, warmup, draws, chain_method="vectorized"):
    posterior = ppl.nuts(
        model,
        *args,
        key=jax.random.key(seed),
        chains=chains,
        warmup=warmup,
        draws=draws,
        progress_bar=False,
        chain_method=chain_method,
        **kwargs,
    )
    return posterior.unconstrained


def run_numpyro(model, args, kwargs, seed, *, chains, warmup, draws):
    mcmc = MCMC(
        NUTS(model),
        num_warmup=warmup,
        num_samples=draws,
        num_chains=chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(seed), *args, **kwargs)
    samples = mcmc.get_samples(group_by_chain=True)
    return np.concatenate([np.asarray(v).reshape(chains, draws, -1) for v in samples.values()], axis=-1)


def blackjax_loop(logdensity, dim, chains, warmup, draws):
    """The loop a BlackJAX user writes: vmap(window_adaptation + scan of nuts.step)."""

    def one_chain(key):
        init_key, warmup_key, sample_key = jax.random.split(key, 3)
        position = jax.random.uniform(init_key, (dim,), minval=-2.0, maxval=2.0)
        adaptation = blackjax.window_adaptation(blackjax.nuts, logdensity)
        (state, parameters), _ = adaptation.run(warmup_key, position, num_steps=warmup)
        kernel = blackjax.nuts(logdensity, **parameters)

        def step(state, key):
            state, _ = kernel.step(key, state)
            return state, state.position

        _, positions = jax.lax.scan(step, state, jax.random.split(sample_key, draws))
        return positions

    return jax.jit(lambda key: jax.vmap(one_chain)(jax.random.split(key, chains)))


def run_blackjax_factory(model, args, kwargs, chains, warmup, draws):
    compiled = ppl.compile(model, *args, **kwargs)
    program = blackjax_loop(compiled.logdensity, compiled.dim, chains, warmup, draws)
    return lambda seed: program(jax.random.key(seed))


# ------------------------------------------------------------------------ driver


def min_bulk_ess(draws) -> float:
    return float(np.min(az.ess({"x": np.asarray(draws)}, method="bulk")["x"].values))


def measure(engines: dict, repeats: int) -> list[dict]:
    """A first call per engine (compile), then ``repeats`` interleaved post-compile calls
    with new keys; run time and ESS/s are medians over those calls (this 2-core VM is
    noisy: single runs vary by up to 2x)."""
    rows = {}
    for name, call in engines.items():
        _, wall, compile_seconds = timed(call, 0)
        rows[name] = {"engine": name, "first_call_s": wall, "compile_s": compile_seconds, "runs": []}
    for repeat in range(repeats):
        for name, call in engines.items():
            draws, wall, compile_seconds = timed(call, 1 + repeat)
            run = wall - compile_seconds
            ess = min_bulk_ess(draws)
            rows[name]["runs"].append(
                {"run_s": run, "recompile_s": compile_seconds, "min_bulk_ess": ess, "ess_per_s": ess / run}
            )
    for row in rows.values():
        for key in ("run_s", "min_bulk_ess", "ess_per_s", "recompile_s"):
            row[key] = float(np.median([run[key] for run in row["runs"]]))
    return list(rows.values())


ENGINES = ("ppl", "ppl_sequential", "numpyro", "blackjax")


def make_engine(name, model, args, kwargs, lengths):
    """``seed -> draws`` for one engine on one model."""
    if name == "ppl":
        return functools.partial(run_ppl, model, args, kwargs, **lengths)
    if name == "ppl_sequential":
        return functools.partial(run_ppl, model, args, kwargs, chain_method="sequential", **lengths)
    if name == "numpyro":
        return functools.partial(run_numpyro, model, args, kwargs, **lengths)
    return run_blackjax_factory(model, args, kwargs, lengths["chains"], lengths["warmup"], lengths["draws"])


def ratio(by_engine, numerator, denominator, field="ess_per_s"):
    if numerator in by_engine and denominator in by_engine:
        return by_engine[numerator][field] / by_engine[denominator][field]
    return None


def main(quick: bool, engine_names: tuple, chains: int, tag: str) -> None:
    warmup, draws = (200, 200) if quick else (1000, 1000)
    repeats = 1 if quick else 5
    warnings.simplefilter("ignore")
    results = {
        "settings": {"chains": chains, "warmup": warmup, "draws": draws, "repeats": repeats},
        "environment": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "devices": [str(d) for d in jax.devices()],
            **{pkg: version(pkg) for pkg in ("jax", "numpyro", "blackjax", "arviz")},
        },
        "models": {},
    }
    for model_name, (model, args, kwargs) in datasets().items():
        lengths = {"chains": chains, "warmup": warmup, "draws": draws}
        engines = {name: make_engine(name, model, args, kwargs, lengths) for name in engine_names}
        rows = measure(engines, repeats)
        by_engine = {row["engine"]: row for row in rows}

        ratios = {
            "ppl_vs_blackjax_ess_per_s": ratio(by_engine, "ppl", "blackjax"),
            "ppl_vs_numpyro_ess_per_s": ratio(by_engine, "ppl", "numpyro"),
            "ppl_vs_numpyro_compile": ratio(by_engine, "ppl", "numpyro", "compile_s"),
            "ppl_sequential_vs_blackjax_ess_per_s": ratio(by_engine, "ppl_sequential", "blackjax"),
        }
        ratios = {name: value for name, value in ratios.items() if value is not None}
        results["models"][model_name] = {"engines": rows, "ratios": ratios}
        print(f"\n{model_name}")
        print("| engine | compile (s) | run after compile (s) | min bulk ESS | ESS/s |")
        print("|---|---|---|---|---|")
        for row in rows:
            print(
                f"| {row['engine']} | {row['compile_s']:.2f} | {row['run_s']:.2f} | "
                f"{row['min_bulk_ess']:.0f} | {row['ess_per_s']:.0f} |"
            )
        print(" ".join(f"{k}={v:.2f}" for k, v in ratios.items()), flush=True)
    suffix = ("_quick" if quick else "") + (f"_{tag}" if tag else "")
    write_results(f"nuts{suffix}.json", results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="200 warmup + 200 draws")
    parser.add_argument(
        "--engines", default=",".join(ENGINES), help="comma-separated subset of " + str(ENGINES)
    )
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--tag", default="", help="suffix of the results file (e.g. gpu)")
    options = parser.parse_args()
    main(options.quick, tuple(options.engines.split(",")), options.chains, options.tag)
