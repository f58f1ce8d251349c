"""Diffusion posterior samplers on the MCGdiff Gaussian-mixture grid (exact posterior known).

Per cell (d, d_y), instance and step budget, every method uses the same exact noised
score, time grid (``vp().timesteps``) and 2000 output samples; SMC outputs are resampled
from their final weights. Reported: sliced Wasserstein (100 slices) to 2000 exact draws
(mean +- 1.96 se over instances), the exact-vs-exact floor, component-weight TV, final
and minimum ESS, and wall time after compile. Also the throughput of TDS at d = 800,
N = 1000 on 1 and 4 host devices.

    python benchmarks/diffusion_gmm.py [--quick] [--cells 800:2,800:4] [--skip fps,afdps-sde] [--instances 5]
"""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import json
import time
import warnings
from functools import partial
from pathlib import Path

import jax
import numpy as np

from ppl.smc import diffusion as D

QUICK = "--quick" in sys.argv
CELLS = [(8, 2), (80, 1), (800, 4)] if QUICK else [(d, k) for d in (8, 80, 800) for k in (1, 2, 4)]
# --cells 800:2,800:4 and --skip fps run part of the grid (written to diffusion_gmm_part.json)
PART = any(flag in sys.argv for flag in ("--cells", "--skip", "--instances"))
if "--cells" in sys.argv:
    CELLS = [tuple(map(int, c.split(":"))) for c in sys.argv[sys.argv.index("--cells") + 1].split(",")]
SKIP = sys.argv[sys.argv.index("--skip") + 1].split(",") if "--skip" in sys.argv else []
INSTANCES = 3 if QUICK else 20
if "--instances" in sys.argv:
    INSTANCES = int(sys.argv[sys.argv.index("--instances") + 1])
STEPS = (20, 100)
N = 2000
METHODS = {
    "afdps-ode": partial(D.afdps, variant="ode"),
    "afdps-sde": D.afdps,
    "tds": D.tds,
    "mcgdiff": D.mcgdiff,
    "fps": D.fps,
    "dps": D.dps,
}
METHODS = {name: method for name, method in METHODS.items() if name not in SKIP}


def timed(fn):
    start = time.perf_counter()
    out = fn()
    jax.block_until_ready(out.particles)
    return out, time.perf_counter() - start


def main():
    warnings.simplefilter("ignore", RuntimeWarning)
    rows = []
    for d, d_y in CELLS:
        for steps in STEPS:
            fields = ("sw", "tv", "final_ess", "min_ess", "seconds")
            per_method = {m: {field: [] for field in fields} for m in METHODS}
            floors = []
            for i in range(INSTANCES):
                mixture, observation, _ = D.grid_mixture_problem(1000 * d + 10 * d_y + i, d, d_y)
                posterior = mixture.posterior(observation)
                exact = posterior.sample(jax.random.key(i), N)
                second = posterior.sample(jax.random.key(i + 10**6), N)
                floors.append(float(D.sliced_wasserstein(jax.random.key(7), exact, second)))
                prior = mixture.diffusion_prior(D.vp())
                for name, method in METHODS.items():
                    key = jax.random.key(i)
                    try:
                        run = partial(method, prior, observation, key=key, num_particles=N, num_steps=steps)
                        if i == 0:
                            run()  # compile
                        result, seconds = timed(run)
                    except FloatingPointError:  # the sampler diverged: count it as a failure
                        for field in fields:
                            per_method[name][field].append(np.nan)
                        continue
                    draws = result.sample(jax.random.key(i + 1), N)
                    stats = per_method[name]
                    stats["sw"].append(float(D.sliced_wasserstein(jax.random.key(7), draws, exact)))
                    stats["tv"].append(float(posterior.component_error(result.particles, result.weights)))
                    stats["final_ess"].append(result.ess)
                    stats["min_ess"].append(float(np.min(result.ess_history)))
                    stats["seconds"].append(seconds)
            for name, stats in per_method.items():
                sw = np.array(stats["sw"])
                finite = np.isfinite(sw)
                row = {
                    "d": d,
                    "d_y": d_y,
                    "steps": steps,
                    "method": name,
                    "diverged": int(np.sum(~finite)),  # runs with non-finite particles, left out below
                    "sw": float(np.mean(sw[finite])) if finite.any() else np.nan,
                    "sw_ci": float(1.96 * sw[finite].std(ddof=1) / np.sqrt(finite.sum()))
                    if finite.sum() > 1
                    else np.nan,
                    "floor": float(np.mean(floors)),
                    **{
                        field: float(np.nanmean(stats[field])) if finite.any() else np.nan
                        for field in ("tv", "final_ess", "min_ess")
                    },
                    "seconds": float(np.nanmedian(stats["seconds"])) if finite.any() else np.nan,
                    "per_instance_sw": stats["sw"],
                }
                rows.append(row)
                print(
                    f"d={d:4d} d_y={d_y} steps={steps:3d} {name:10s} "
                    f"SW {row['sw']:.3f} +- {row['sw_ci']:.3f} "
                    f"(floor {row['floor']:.3f}) TV {row['tv']:.3f} ESS final {row['final_ess']:.0f} "
                    f"min {row['min_ess']:.0f} {row['seconds']:.2f}s diverged {row['diverged']}/{len(sw)}",
                    flush=True,
                )
    throughput = {}
    mixture, observation, _ = D.grid_mixture_problem(5, 800, 4)
    prior = mixture.diffusion_prior(D.vp())
    for devices in (1, 4):

        def run(devices=devices):
            return D.tds(
                prior,
                observation,
                key=jax.random.key(0),
                num_particles=1000,
                num_steps=100,
                num_islands=4,
                devices=devices,
            )

        run()
        _, seconds = timed(run)
        throughput[devices] = 1000 * 100 / seconds
        rate = throughput[devices]
        print(f"TDS d=800 N=1000 100 steps on {devices} host device(s): {rate:.0f} particle-steps/s")
    name = "diffusion_gmm_part" if PART else "diffusion_gmm_quick" if QUICK else "diffusion_gmm"
    out = Path(__file__).parent / "results" / f"{name}.json"
    out.write_text(json.dumps({"rows": rows, "throughput_particle_steps_per_s": throughput}, indent=1))


if __name__ == "__main__":
    main()
