"""Shrink many binomial rates: how far each unit moves, toward what, and the risk gain.

Simulates m units with small n_i (rates around 0.2 that depend nonlinearly on a covariate), shrinks
them with and without the covariate, compares with the baselines, and saves a plot.

Run:  python examples/binomial_shrinkage.py [--quick] [--out DIR]
"""

import argparse
import pathlib

import jax
import matplotlib
import numpy as np
from scipy import special

from ppl.eb import binomial as eb

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def simulate(num_units: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    covariate = rng.normal(size=num_units)
    mean = special.expit(-1.4 + 0.8 * covariate + 0.7 * np.sin(2 * covariate))
    rates = rng.beta(20 * mean, 20 * (1 - mean))
    trials = rng.integers(2, 40, num_units)
    return rng.binomial(trials, rates), trials, covariate, rates, mean


def main(quick: bool, out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    successes, trials, covariate, rates, mean = simulate(500 if quick else 5000)
    key = jax.random.key(0)
    plain = eb.shrink(successes, trials, key=key)
    with_covariate = eb.shrink(successes, trials, covariate, key=key)
    estimates = {
        "MLE": eb.mle(successes, trials),
        "beta-binomial ML": eb.beta_binomial(successes, trials)[0],
        "James-Stein (arcsine)": eb.james_stein_arcsine(successes, trials),
        "NPMLE (EM)": eb.npmle(successes, trials).estimate,
        "URE shrinkage": plain.estimate,
        "URE shrinkage + covariate": with_covariate.estimate,
    }
    mle_error = np.mean((estimates["MLE"] - rates) ** 2)
    print(f"{'method':28s} compound MSE   ratio to MLE")
    for name, estimate in estimates.items():
        error = np.mean((estimate - rates) ** 2)
        print(f"{name:28s} {error:.5f}        {error / mle_error:.3f}")
    for name, result in (("without covariate", plain), ("with covariate", with_covariate)):
        coverage = np.mean((rates >= result.lower) & (rates <= result.upper))
        print(
            f"{name}: lambda {result.lam:.1f}; estimated risk {result.risk:.5f} +- {result.risk_se:.5f}; "
            f"estimated gain over MLE {result.improvement:.5f} +- {result.improvement_se:.5f}; "
            f"90% interval coverage {coverage:.3f}"
        )

    print(
        f"with covariate: the URE chose the {with_covariate.target_choice} target "
        f"(mean URE by candidate: {with_covariate.candidate_risks})"
    )
    plot(trials, covariate, rates, mean, with_covariate, out / "binomial_shrinkage.png")


def plot(trials, covariate, rates, mean, result, path, num_shown: int = 150, seed: int = 1) -> None:
    """Three panels for a random sample of units: each unit a segment from its raw rate
    (open circle) to its shrunken rate (dot), against n_i (jittered) and against the
    covariate with the target curve; then 90% intervals for a few units."""
    rng = np.random.default_rng(seed)
    shown = rng.choice(len(trials), size=min(num_shown, len(trials)), replace=False)
    figure, axes = plt.subplots(1, 3, figsize=(14, 4.2))

    axis = axes[0]
    position = trials[shown] + rng.uniform(-0.35, 0.35, len(shown))
    axis.vlines(position, result.raw[shown], result.estimate[shown], color="0.6", lw=0.8)
    axis.scatter(position, result.raw[shown], s=14, facecolors="none", edgecolors="C0", label="raw X/n")
    axis.scatter(position, result.estimate[shown], s=10, color="C3", label="shrunken")
    axis.set_xlabel("trials n_i (jittered)")
    axis.set_ylabel("rate")
    axis.set_title("few trials: long moves; many: short")
    axis.legend(loc="upper right", fontsize=8)

    axis = axes[1]
    axis.vlines(covariate[shown], result.raw[shown], result.estimate[shown], color="0.6", lw=0.8)
    axis.scatter(covariate[shown], result.raw[shown], s=14, facecolors="none", edgecolors="C0")
    axis.scatter(covariate[shown], result.estimate[shown], s=10, color="C3")
    # every unit's cross-fitted target: the folds' fits, close together where data are dense
    axis.scatter(covariate, result.target, s=1, color="k", alpha=0.3, label="cross-fitted targets")
    order = np.argsort(covariate)
    axis.plot(covariate[order], mean[order], color="C2", lw=1.2, ls="--", label="true prior mean")
    axis.set_xlabel("covariate")
    axis.set_title(f"shrinkage toward the {result.target_choice} target")
    axis.legend(loc="upper left", fontsize=8)

    axis = axes[2]
    few = shown[np.argsort(trials[shown])][:: max(len(shown) // 12, 1)][:12]
    row = np.arange(len(few))
    axis.hlines(row, result.lower[few], result.upper[few], color="C3", lw=2, label="90% interval")
    axis.scatter(result.raw[few], row, s=20, facecolors="none", edgecolors="C0", label="raw", zorder=3)
    axis.scatter(result.estimate[few], row, s=14, color="C3", label="shrunken", zorder=3)
    axis.scatter(rates[few], row, marker="x", color="k", s=20, label="true rate", zorder=3)
    axis.set_yticks(row, [f"n={trials[i]}" for i in few])
    axis.set_xlabel("rate")
    axis.set_title("intervals for 12 units")
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="500 units")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("examples/output"))
    options = parser.parse_args()
    main(options.quick, options.out)
