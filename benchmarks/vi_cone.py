"""The noisy-cone table (Becker et al. 2024, Table 4), every system scored by one evaluator.

Model: x, y ~ N(0, 10); z ~ N(x^2 + y^2, 0.1 + (x^2 + y^2) / 100); z = 5 observed.
Families: mean-field Gaussian (ELBO, IWAE) and the ring family u ~ U(0, 1),
x ~ N(sqrt(z) cos 2 pi u, s1), y ~ N(sqrt(z) sin 2 pi u, s2) for HVI-type objectives.
Protocol (the authors' genjax scripts): plain SGD ascent, learning rate 1e-3, 64
gradient estimates per step (IWAE: 1), initial values as in their scripts; NumPyro
runs ``Trace_ELBO(num_particles=64)`` / ``RenyiELBO(num_particles=5)`` with the same
optimiser and steps. Every trained parameter vector is scored by the ``ppl``
estimator of its objective with 5000 fresh samples (mean and standard error).

    python benchmarks/vi_cone.py [--quick] [--steps N]
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from numpyro.infer import SVI, RenyiELBO, Trace_ELBO

import ppl
from ppl import dist

# One definition of the model and both families: the example's.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
from noisy_cone import mean_field, ring  # noqa: E402
from noisy_cone import model as cone_model  # noqa: E402

PUBLISHED = {"elbo": -8.08, "iwae5": -7.79, "hvi": -9.75, "iwhvi5": -8.18, "diwhvi5x5": -7.33}
Z_OBS = jnp.asarray(5.0)
# One optimiser object: fit caches its compiled program per optimiser, so a new
# optax.sgd(...) per call would recompile.
SGD = optax.sgd(1e-3)


def objectives():
    o = ppl.vi.objectives
    keep = ["x", "y"]
    return {
        "elbo": (o.elbo(cone_model, mean_field), jnp.array([0.0, 0.0, 1.0, 1.0]), 64),
        "iwae5": (o.iwae(cone_model, mean_field, 5), jnp.array([3.0, 0.0, 1.0, 1.0]), 1),
        "hvi": (o.hvi(cone_model, ring, keep), jnp.zeros(2), 64),
        "iwhvi5": (o.iwhvi(cone_model, ring, keep, 5), jnp.zeros(2), 64),
        "diwhvi5x5": (o.diwhvi(cone_model, ring, keep, 5, 5), jnp.zeros(2), 64),
    }


def score(objective, params, num=5000, seed=2):
    keys = jax.random.split(jax.random.key(seed), num)
    values = jax.jit(jax.vmap(objective.estimate, (0, None, None)))(keys, params, Z_OBS)
    return float(values.mean()), float(values.std() / np.sqrt(num))


def train_ppl(objective, init, num_samples, steps, seed):
    start = time.perf_counter()
    result = ppl.vi.fit(
        objective,
        init,
        Z_OBS,
        optimizer=SGD,
        steps=steps,
        key=jax.random.key(seed),
        num_samples=num_samples,
    )
    return result.params, time.perf_counter() - start


def numpyro_cone(data):
    x = numpyro.sample("x", dist.Normal(0.0, 10.0))
    y = numpyro.sample("y", dist.Normal(0.0, 10.0))
    radius2 = x**2 + y**2
    numpyro.sample("z", dist.Normal(radius2, 0.1 + radius2 / 100.0), obs=data)


def make_numpyro_guide(init):
    def guide(data):
        loc = numpyro.param("loc", jnp.asarray(init[:2]))
        log_scale = numpyro.param("log_scale", jnp.asarray(init[2:]))
        numpyro.sample("x", dist.Normal(loc[0], jnp.exp(log_scale[0])))
        numpyro.sample("y", dist.Normal(loc[1], jnp.exp(log_scale[1])))

    return guide


def train_numpyro(loss, init, steps, seed):
    svi = SVI(numpyro_cone, make_numpyro_guide(init), SGD, loss=loss)
    start = time.perf_counter()
    result = svi.run(jax.random.key(seed), steps, Z_OBS, progress_bar=False)
    params = jnp.concatenate([result.params["loc"], result.params["log_scale"]])
    train_average = -float(np.mean(np.asarray(result.losses)[steps // 5 :]))
    return params, time.perf_counter() - start, train_average


def per_step_ms(objective, init, num_samples, steps=300):
    """Median wall time of one jitted fit step after compile (a 300-step fit / 300)."""
    train_ppl(objective, init, num_samples, steps, 0)  # compile
    times = [train_ppl(objective, init, num_samples, steps, seed)[1] for seed in range(3)]
    return 1000 * float(np.median(times)) / steps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    steps, seeds = (1000, 1) if args.quick else (args.steps, args.seeds)
    rows = {}
    for name, (objective, init, num_samples) in objectives().items():
        scores, seconds = [], []
        for seed in range(seeds):
            params, elapsed = train_ppl(objective, init, num_samples, steps, seed + 1)
            scores.append(score(objective, params))
            seconds.append(elapsed)
        rows[name] = {
            "published": PUBLISHED[name],
            "ppl": [s[0] for s in scores],
            "ppl_se": [s[1] for s in scores],
            "ppl_mean": float(np.mean([s[0] for s in scores])),
            "ppl_fit_seconds_first": seconds[0],
            "ppl_ms_per_step": per_step_ms(objective, init, num_samples),
        }
        print(name, rows[name], flush=True)
    peers = {
        "elbo": (Trace_ELBO(num_particles=64), jnp.array([0.0, 0.0, 1.0, 1.0])),
        "iwae5": (RenyiELBO(alpha=0.0, num_particles=5), jnp.array([3.0, 0.0, 1.0, 1.0])),
    }
    for name, (loss, init) in peers.items():
        objective = objectives()[name][0]
        results = [train_numpyro(loss, init, steps, seed + 1) for seed in range(seeds)]
        rows[name]["numpyro"] = [score(objective, r[0])[0] for r in results]
        rows[name]["numpyro_mean"] = float(np.mean(rows[name]["numpyro"]))
        rows[name]["numpyro_training_average"] = float(np.mean([r[2] for r in results]))
        rows[name]["numpyro_fit_seconds"] = float(np.median([r[1] for r in results]))
        print(name, "numpyro", rows[name]["numpyro"], flush=True)
    out = {
        "steps": steps,
        "seeds": seeds,
        "evaluator_samples": 5000,
        "rows": rows,
        "jax": jax.__version__,
        "numpyro": numpyro.__version__,
    }
    path = os.path.join(
        os.path.dirname(__file__), "results", "vi_cone_quick.json" if args.quick else "vi_cone.json"
    )
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"{'objective':<10} {'published':>9} {'ppl':>8} {'numpyro':>8}")
    for name, row in rows.items():
        print(
            f"{name:<10} {row['published']:>9.2f} {row['ppl_mean']:>8.3f} "
            f"{row.get('numpyro_mean', float('nan')):>8.3f}"
        )


if __name__ == "__main__":
    main()
