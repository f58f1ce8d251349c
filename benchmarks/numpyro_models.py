"""ppl.nuts against NumPyro's MCMC(NUTS) on NumPyro's own example models.

The models are the ones ``tests/numpyro/models.py`` writes out as NumPyro users write
them (``numpyro.*`` primitives, NumPy on data), with its generated data: ``ar2`` (an
AR(2) process with ``scan``), ``ucbadmit`` (the number of departments read with
``np.unique``), ``impute`` (missing responses as NaN with ``obs_mask``), ``gmm`` (the
component of each point summed out with ``config_enumerate``) and ``mvn`` (an observed
site with event shape (3,): ``MultivariateNormal`` with an ``LKJCholesky`` factor). The
same model function goes to both engines, in the same process.

Both engines: 4 chains, 500 warmup and 500 draws (``--quick``: 100 and 100), the chains
``vmap``-ped (ppl's default ``chain_method="vectorized"``, NumPyro's
``chain_method="vectorized"``), NumPyro's defaults otherwise (diagonal mass matrix,
target acceptance 0.8, tree depth 10). Each engine runs twice with different keys: the
first call is compile + first run; the second is the warm run, whose time is its wall
time minus the JAX compile events in it (NumPyro builds a new ``MCMC`` and traces again
on every call, which is excluded, as in ``benchmarks/nuts.py``). Compile = JAX's own
compile events (tracing, lowering, XLA); the persistent compilation cache is off.

ESS is ``ppl.mcmc.diagnostics.bulk_ess`` (ArviZ's rank-normalised bulk ESS) of the
second run's constrained draws, computed the same way for both engines on the same
coordinates: every scalar of the latent sample sites NumPyro reports, except elements a
mask excludes from the density (``obs_mask``'s observed positions in ``y_unobserved``
have no density at all, so both engines random-walk there) and coordinates that never
move (the fixed entries of a Cholesky factor); the minimum over them.

    python benchmarks/numpyro_models.py [--quick]
"""

import argparse
import os
import sys

os.environ.setdefault("PPL_COMPILATION_CACHE", "0")  # before ppl is imported
import platform
import traceback
import warnings
from importlib.metadata import version

import jax
import numpy as np
from numpyro import handlers
from numpyro.infer import MCMC, NUTS

import ppl
from ppl.mcmc.diagnostics import bulk_ess

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tests.numpyro.models import MODELS  # noqa: E402

BENCHMARKED = ("ar2", "ucbadmit", "impute", "gmm", "mvn")

from timing import timed, write_results  # noqa: E402  (benchmarks/timing.py, beside this script)

# ----------------------------------------------------------------------- engines


def run_ppl(model, args, kwargs, seed, *, chains, warmup, draws):
    posterior = ppl.nuts(
        model,
        *args,
        key=jax.random.key(seed),
        chains=chains,
        warmup=warmup,
        draws=draws,
        progress_bar=False,
        chain_method="vectorized",
        **kwargs,
    )
    samples = {name: np.asarray(value) for name, value in posterior.samples.items()}
    stats = posterior.sample_stats
    return samples, int(np.sum(stats["diverging"])), float(np.mean(stats["n_steps"]))


def run_numpyro(model, args, kwargs, seed, *, chains, warmup, draws):
    mcmc = MCMC(
        NUTS(model),
        num_warmup=warmup,
        num_samples=draws,
        num_chains=chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(seed), *args, extra_fields=("diverging", "num_steps"), **kwargs)
    samples = {name: np.asarray(value) for name, value in mcmc.get_samples(group_by_chain=True).items()}
    stats = mcmc.get_extra_fields()
    return samples, int(np.sum(stats["diverging"])), float(np.mean(stats["num_steps"]))


ENGINES = {"ppl": run_ppl, "numpyro": run_numpyro}


# ----------------------------------------------------------------------- ESS


def ess_coordinates(model, args, kwargs) -> dict:
    """Latent sample site -> boolean mask of its elements with a density (NumPyro's trace).

    Enumerated sites are summed out (neither engine reports them as draws here);
    deterministic and observed sites are not parameters.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trace = handlers.trace(handlers.seed(model, 0)).get_trace(*args, **kwargs)
    masks = {}
    for name, site in trace.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        if site["infer"].get("enumerate") == "parallel":
            continue
        shape = np.shape(site["value"])
        mask = np.ones(shape, bool)
        fn = site["fn"]
        event_dims = (1,) * fn.event_dim
        for factor in (site.get("mask"), getattr(fn, "_mask", None)):  # handlers.mask, fn.mask
            if factor is not None and not isinstance(factor, bool):
                factor = np.asarray(factor)
                mask = mask & np.broadcast_to(factor.reshape(factor.shape + event_dims), shape)
        masks[name] = mask
    return masks


def min_bulk_ess(samples: dict, masks: dict) -> dict:
    """Minimum bulk ESS over the masked-in, moving scalars of ``masks``' sites, which
    scalar it is, and that scalar's mean in each chain (chains in different modes show
    there)."""
    columns, labels = [], []
    for name, mask in masks.items():
        value = samples[name]
        columns.append(value.reshape(*value.shape[:2], -1)[..., mask.reshape(-1)])
        indices = np.argwhere(mask)
        labels += [f"{name}{index.tolist()}" if index.size else name for index in indices]
    draws = np.concatenate(columns, axis=-1)
    moving = np.ptp(draws.reshape(-1, draws.shape[-1]), axis=0) > 0
    draws, labels = draws[..., moving], [label for label, keep in zip(labels, moving, strict=True) if keep]
    ess = bulk_ess(draws)
    worst = int(np.argmin(ess))
    return {
        "min_bulk_ess": float(ess[worst]),
        "min_ess_coordinate": labels[worst],
        "min_ess_chain_means": [float(m) for m in draws[..., worst].mean(axis=1)],
    }


# ------------------------------------------------------------------------ driver


def measure(model_name, engine_name, lengths, masks) -> dict:
    model, args, kwargs = MODELS[model_name]
    run = ENGINES[engine_name]
    row = {"model": model_name, "engine": engine_name}
    try:
        _, first_wall, first_compile = timed(lambda: run(model, args, kwargs, 0, **lengths))
        (samples, divergences, steps), second_wall, second_compile = timed(
            lambda: run(model, args, kwargs, 1, **lengths)
        )
        run_s = second_wall - second_compile
        ess = min_bulk_ess(samples, masks)
        ess_per_s = ess["min_bulk_ess"] / run_s
    except Exception as error:  # a model one engine cannot run is a result, not a crash
        row.update(status="failed", error=f"{type(error).__name__}: {error}")
        row["traceback"] = traceback.format_exc()
        return row
    row.update(
        status="ok",
        first_call_s=first_wall,
        compile_s=first_compile,
        second_call_s=second_wall,
        recompile_s=second_compile,
        run_s=run_s,
        ess_per_s=ess_per_s,
        divergences=divergences,
        mean_leapfrog_steps_per_draw=steps,
        **ess,
    )
    return row


COLUMNS = (
    ("first_call_s", 2),
    ("compile_s", 2),
    ("run_s", 2),
    ("mean_leapfrog_steps_per_draw", 1),
    ("min_bulk_ess", 0),
    ("ess_per_s", 0),
)


def fmt(row, key, digits=2):
    return f"{row[key]:.{digits}f}" if row.get("status") == "ok" else "failed"


def main(quick: bool, model_names: tuple) -> None:
    chains = 4
    warmup, draws = (100, 100) if quick else (500, 500)
    lengths = {"chains": chains, "warmup": warmup, "draws": draws}
    warnings.simplefilter("ignore")
    results = {
        "settings": {"chains": chains, "warmup": warmup, "draws": draws, "chain_method": "vectorized"},
        "environment": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": list(os.getloadavg()),
            "devices": [str(d) for d in jax.devices()],
            "x64": bool(jax.config.jax_enable_x64),
            **{pkg: version(pkg) for pkg in ("jax", "numpyro", "blackjax", "funsor")},
        },
        "models": {},
    }
    header = ("first call (s)", "compile (s)", "warm run (s)", "leapfrog/draw", "min bulk ESS", "ESS/s")
    print("| model | engine | " + " | ".join(header) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for model_name in model_names:
        model, args, kwargs = MODELS[model_name]
        masks = ess_coordinates(model, args, kwargs)
        rows = {}
        for engine_name in ENGINES:
            row = rows[engine_name] = measure(model_name, engine_name, lengths, masks)
            cells = [fmt(row, key, digits) for key, digits in COLUMNS]
            print(f"| {model_name} | {engine_name} | " + " | ".join(cells) + " |", flush=True)
            if row["status"] != "ok":
                print(row["traceback"], file=sys.stderr, flush=True)
        ok = all(row["status"] == "ok" for row in rows.values())
        ratios = (
            {
                "ppl_vs_numpyro_run_s": rows["ppl"]["run_s"] / rows["numpyro"]["run_s"],
                "ppl_vs_numpyro_ess_per_s": rows["ppl"]["ess_per_s"] / rows["numpyro"]["ess_per_s"],
                "ppl_vs_numpyro_compile_s": rows["ppl"]["compile_s"] / rows["numpyro"]["compile_s"],
                "ppl_vs_numpyro_first_call_s": rows["ppl"]["first_call_s"] / rows["numpyro"]["first_call_s"],
            }
            if ok
            else {}
        )
        results["models"][model_name] = {
            "ess_sites": {name: int(mask.sum()) for name, mask in masks.items()},
            "engines": list(rows.values()),
            "ratios": ratios,
        }
        if ratios:
            print("  " + " ".join(f"{k}={v:.2f}" for k, v in ratios.items()), flush=True)
    write_results("numpyro_models_quick.json" if quick else "numpyro_models.json", results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100 warmup + 100 draws")
    parser.add_argument(
        "--models", default=",".join(BENCHMARKED), help="comma-separated subset of " + str(BENCHMARKED)
    )
    options = parser.parse_args()
    main(options.quick, tuple(options.models.split(",")))
