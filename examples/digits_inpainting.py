"""Inpainting 8x8 digits with a diffusion prior: train a score model, then sample posteriors.

1. Fit a noise-prediction MLP to scikit-learn's 8x8 digits (no download) by denoising
   score matching (``ppl.smc.diffusion.train_score``); the weights are cached in
   ``--out`` and reused on the next run with the same settings.
2. Hide the bottom half of held-out images, observe the top half with noise
   ``sigma_y = 0.05`` (pixels scaled to [-1, 1]), and draw weighted posterior samples
   with AFDPS (ODE + Langevin variant) and MCGdiff.
3. Report, per sampler: per-pixel coverage of the hidden truth by the central 90%
   posterior interval, the RMSE of the posterior mean on hidden pixels (beside the
   training mean as a no-information baseline), minimum ESS and log-evidence; save a
   PNG grid (truth, observation, posterior mean and draws of each sampler).

    python examples/digits_inpainting.py [--quick] [--out DIR]
"""

import argparse
import os
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from sklearn.datasets import load_digits

from ppl.smc import diffusion as D

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NOISE_STD = 0.05
LEVEL = 0.9  # central posterior interval for the coverage


def load_data():
    """Digits scaled to [-1, 1]; a fixed split of 1597 training and 200 held-out images."""
    images = load_digits().data.astype(np.float32) / 8.0 - 1.0
    order = np.random.default_rng(0).permutation(len(images))
    return images[order[:1597]], images[order[1597:]]


def fitted_prior(train, settings, out):
    """Train the score model, or load it from the cache file for these settings."""
    schedule = D.vp()
    network = D.NoiseMLP(schedule, train.shape[1], hidden=settings["hidden"], depth=settings["depth"])
    path = os.path.join(
        out, f"digits_score_h{settings['hidden']}_d{settings['depth']}_s{settings['train']}.npz"
    )
    template = network.init(jax.random.key(0))
    if os.path.exists(path):
        stored = np.load(path)
        leaves = [jnp.asarray(stored[f"leaf{i}"]) for i in range(len(stored.files))]
        params = jax.tree.unflatten(jax.tree.structure(template), leaves)
        print(f"loaded the score model from {path}")
        return D.DiffusionPrior(schedule, train.shape[1], noise_fn=network, params=params)
    start = time.perf_counter()
    fit = D.train_score(
        train, schedule, key=jax.random.key(0), network=network, num_steps=settings["train"], batch_size=256
    )
    losses = np.asarray(fit.losses)
    print(
        f"trained {settings['train']} steps in {time.perf_counter() - start:.0f} s: DSM loss "
        f"{losses[:100].mean():.3f} (first 100) -> {losses[-500:].mean():.3f} (last 500)"
    )
    np.savez(path, **{f"leaf{i}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(fit.params))})
    return fit.prior


def interval_coverage(draws, truth, hidden):
    """Fraction of hidden pixels whose true value lies in the central ``LEVEL`` interval."""
    low, high = np.quantile(draws[:, hidden], [(1 - LEVEL) / 2, (1 + LEVEL) / 2], axis=0)
    return np.mean((truth[hidden] >= low) & (truth[hidden] <= high))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="tiny model and budgets (a smoke test)")
    parser.add_argument("--out", default="examples/output")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    settings = (
        {"hidden": 64, "depth": 2, "train": 300, "images": 2, "particles": 200, "steps": 20}
        if args.quick
        else {"hidden": 256, "depth": 3, "train": 8000, "images": 8, "particles": 1000, "steps": 100}
    )
    train, test = load_data()
    prior = fitted_prior(train, settings, args.out)

    mask = np.zeros((8, 8), bool)
    mask[:4] = True  # observe the top half
    observed, hidden = mask.ravel(), ~mask.ravel()
    samplers = {
        "AFDPS (ode)": lambda key, obs: D.afdps(
            prior,
            obs,
            key=key,
            num_particles=settings["particles"],
            num_steps=settings["steps"],
            variant="ode",
        ),
        "MCGdiff": lambda key, obs: D.mcgdiff(
            prior, obs, key=key, num_particles=settings["particles"], num_steps=settings["steps"]
        ),
    }
    draws = {name: [] for name in samplers}
    stats = {
        name: {"coverage": [], "rmse": [], "min_ess": [], "log_evidence": [], "seconds": []}
        for name in samplers
    }
    noise = np.random.default_rng(1).normal(size=(settings["images"], int(observed.sum())))
    for i in range(settings["images"]):
        truth = test[i]
        observation = D.measurement(
            D.MaskOperator(observed), truth[observed] + NOISE_STD * noise[i], NOISE_STD
        )
        for name, sampler in samplers.items():
            start = time.perf_counter()
            result = sampler(jax.random.key(i), observation)
            sample = np.asarray(result.sample(jax.random.key(100 + i), 1000))
            stats[name]["seconds"].append(time.perf_counter() - start)
            draws[name].append(sample)
            stats[name]["coverage"].append(interval_coverage(sample, truth, hidden))
            stats[name]["rmse"].append(np.sqrt(np.mean((sample.mean(0)[hidden] - truth[hidden]) ** 2)))
            stats[name]["min_ess"].append(float(np.min(result.ess_history)))
            stats[name]["log_evidence"].append(float(result.log_evidence))

    baseline = np.sqrt(np.mean((train.mean(0)[hidden] - test[: settings["images"]][:, hidden]) ** 2))
    n = settings["particles"]
    print(
        f"{settings['images']} held-out digits, bottom half hidden, sigma_y = {NOISE_STD}, "
        f"{n} particles, {settings['steps']} steps"
    )
    print(f"hidden-pixel RMSE of the training mean (no information): {baseline:.3f}")
    for name, s in stats.items():
        print(
            f"{name:12s} {LEVEL:.0%}-interval coverage {np.mean(s['coverage']):.3f}  posterior-mean RMSE "
            f"{np.mean(s['rmse']):.3f}  min ESS {np.min(s['min_ess']):.0f}/{n}  "
            f"log p(y) {np.mean(s['log_evidence']):.1f}  {np.median(s['seconds']):.1f} s/image"
        )

    columns = ["truth", "observed"] + [
        f"{name} {label}" for name in samplers for label in ("mean", "1", "2", "3")
    ]
    fig, axes = plt.subplots(
        settings["images"], len(columns), figsize=(len(columns), settings["images"] + 0.4)
    )
    axes = np.atleast_2d(axes)
    for i in range(settings["images"]):
        shown = np.where(mask.ravel(), test[i], np.nan)
        panels = [test[i], shown]
        for name in samplers:
            panels += [draws[name][i].mean(0), *draws[name][i][:3]]
        for j, panel in enumerate(panels):
            axes[i, j].imshow(np.clip(panel, -1, 1).reshape(8, 8), cmap="gray_r", vmin=-1, vmax=1)
            axes[i, j].axis("off")
            if i == 0:
                axes[i, j].set_title(columns[j], fontsize=6)
    path = os.path.join(args.out, "digits_inpainting.png")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
