"""Shrink many binomial rates: raw vs shrunken rates against n_i, and the risk gain.

Simulates m units with small n_i (rates around 0.2 that depend on a covariate), shrinks
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
    mean = special.expit(-1.4 + 0.8 * covariate)
    rates = rng.beta(20 * mean, 20 * (1 - mean))
    trials = rng.integers(2, 40, num_units)
    return rng.binomial(trials, rates), trials, covariate, rates


def main(quick: bool, out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    successes, trials, covariate, rates = simulate(500 if quick else 5000)
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

    figure, axis = plt.subplots(figsize=(7, 4))
    axis.scatter(trials, plain.raw, s=6, alpha=0.4, label="raw rate X/n")
    axis.scatter(trials, with_covariate.estimate, s=6, alpha=0.6, label="shrunken (URE + covariate)")
    axis.set_xlabel("trials n_i")
    axis.set_ylabel("rate")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "binomial_shrinkage.png", dpi=90)
    print(f"wrote {out / 'binomial_shrinkage.png'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="500 units")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("examples/output"))
    options = parser.parse_args()
    main(options.quick, options.out)
