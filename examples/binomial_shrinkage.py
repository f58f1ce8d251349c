"""Shrink many binomial rates: how far each unit moves, toward what, and the risk gain.

Simulates m units with small n_i (rates around 0.2 that depend nonlinearly on a covariate), shrinks
them with and without the covariate, compares with the baselines, and saves a plot. Then a
paired audit study (firms x jobs, both arms sent to every job, a shared job effect): the
firms' gaps shrunk with the paired URE (``ppl.eb.paired``), drawn in the fourth panel.

Run:  python examples/binomial_shrinkage.py [--quick] [--out DIR]
"""

import argparse
import pathlib

import jax
import matplotlib
import numpy as np
from scipy import special

from ppl.eb import binomial as eb
from ppl.eb import paired

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def simulate(num_units: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    covariate = rng.normal(size=num_units)
    mean = special.expit(-1.4 + 0.8 * covariate + 0.7 * np.sin(2 * covariate))
    rates = rng.beta(20 * mean, 20 * (1 - mean))
    trials = rng.integers(2, 40, num_units)
    return rng.binomial(trials, rates), trials, covariate, rates, mean


def simulate_audit(num_firms: int, seed: int = 2):
    """Firms x jobs, 2 applications per arm per job; a job's callback rate moves both arms."""
    rng = np.random.default_rng(seed)
    jobs = rng.integers(3, 30, num_firms)
    firm = np.repeat(np.arange(num_firms), jobs)
    gap = np.clip(rng.normal(0.03, 0.05, num_firms), -0.2, 0.2)
    job_rate = np.clip(rng.uniform(0.2, 0.4, num_firms)[firm] + rng.normal(0, 0.2, len(firm)), 0.1, 0.8)
    trials = np.full(len(firm), 2)
    arm1 = rng.binomial(trials, np.clip(job_rate + gap[firm] / 2, 0, 1))
    arm2 = rng.binomial(trials, np.clip(job_rate - gap[firm] / 2, 0, 1))
    return firm, arm1, arm2, trials, gap, jobs


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
    firm, arm1, arm2, audit_trials, gap, jobs = simulate_audit(100 if quick else 400)
    gaps = paired.shrink_paired_difference(firm, arm1, audit_trials, arm2, audit_trials, key=key)
    print(
        f"paired audit: {len(gaps.raw)} firms, lambda {gaps.lam:.1f}; compound MSE of the gaps "
        f"{np.mean((gaps.estimate - gap) ** 2):.5f} vs raw {np.mean((gaps.raw - gap) ** 2):.5f}; "
        f"90% robust interval coverage {np.mean((gap >= gaps.lower) & (gap <= gaps.upper)):.3f}"
    )
    plot(trials, covariate, rates, mean, with_covariate, (jobs, gap, gaps), out / "binomial_shrinkage.png")


def plot(trials, covariate, rates, mean, result, audit, path, num_shown: int = 150, seed: int = 1) -> None:
    """Four panels for a random sample of units: each unit a segment from its raw rate
    (open circle) to its shrunken rate (dot), against n_i (jittered) and against the
    covariate with the target curve; 90% intervals for a few units; the same segments for
    the audit's firm gaps against their number of jobs, with a few robust intervals."""
    rng = np.random.default_rng(seed)
    shown = rng.choice(len(trials), size=min(num_shown, len(trials)), replace=False)
    figure, axes = plt.subplots(1, 4, figsize=(18.5, 4.2))

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

    axis = axes[3]
    jobs, gap, gaps = audit
    firms = rng.choice(len(jobs), size=min(num_shown, len(jobs)), replace=False)
    position = jobs[firms] + rng.uniform(-0.35, 0.35, len(firms))
    axis.vlines(position, gaps.raw[firms], gaps.estimate[firms], color="0.6", lw=0.8)
    axis.scatter(position, gaps.raw[firms], s=14, facecolors="none", edgecolors="C0", label="raw gap")
    axis.scatter(position, gaps.estimate[firms], s=10, color="C3", label="shrunken gap")
    axis.axhline(np.mean(gaps.target), color="C2", ls="--", lw=1.2, label="target (mean gap)")
    for i in firms[np.argsort(jobs[firms])][:: max(len(firms) // 6, 1)][:6]:
        axis.vlines(jobs[i] + 0.45, gaps.lower[i], gaps.upper[i], color="C3", lw=2, alpha=0.5)
        axis.scatter(jobs[i] + 0.45, gap[i], marker="x", color="k", s=20, zorder=3)
    axis.set_xlabel("jobs per firm (jittered); bars: 90% robust intervals, x: true gap")
    axis.set_ylabel("callback gap, arm 1 - arm 2")
    axis.set_title("paired audit: firm gaps shrunk (paired URE)")
    axis.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="500 units")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("examples/output"))
    options = parser.parse_args()
    main(options.quick, options.out)
