"""A martingale posterior for a density: the Gaussian-mixture toy of Fong, Holmes & Walker.

n = 50 draws from 0.2 N(2, 1) + 0.8 N(-2, 1) made exactly as the authors' script
``run_expts/1_univariate_copula.py`` makes them (``np.random.seed(102)``, SciPy's
``bernoulli.rvs`` then ``np.random.randn``), standardised with the mean and the
``ddof = 0`` standard deviation. ``martingale.density`` fits the copula predictive (the
bandwidth by prequential log-likelihood over 10 orderings) and predictive resampling
imputes B paths of T points each on the authors' grid ``np.arange(-4, 4, 0.05)``
(B = 1000, T = 5000 as they do; ``--quick``: 100 x 500). Prints the posterior mean and
95% interval of the density at y = -0.5, 0 and 1 next to the authors' saved result
(``copula_gmm_logpdf_pr_n50.npy``), the mean density's integral, the convergence report
``change``, and the martingale posterior of the mean beside the Bayesian bootstrap's; a
short copula regression shows the draws of a regression function (full run only). Exports the density
draws to ArviZ and reads them back from netCDF.

Run:  python examples/martingale_density.py [--quick] [--out DIR]
Writes DIR/martingale_density.png and DIR/martingale_density.nc (default DIR:
examples/output).
"""

import argparse
import pathlib
import time
import warnings

import arviz as az
import jax
import matplotlib
import numpy as np
from scipy.stats import bernoulli, norm

import ppl
from ppl.processes import martingale

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: The authors' result (mean and 95% band over their 1000 paths, standardised scale).
AUTHORS = {-0.5: (0.639, 0.465, 0.851), 0.0: (0.372, 0.272, 0.489), 1.0: (0.118, 0.068, 0.175)}
GRID = np.arange(-4, 4, 0.05)  # the authors' standardised grid, 160 points


def gen_data(seed: int, n: int) -> np.ndarray:
    """The authors' ``gen_data``: component labels first, then the standard normals, from
    one legacy ``RandomState`` (their ``np.random.seed(seed)`` seeds the same stream)."""
    state = np.random.RandomState(seed)  # noqa: NPY002 (the authors' legacy stream)
    labels = bernoulli.rvs(0.2, size=n, random_state=state)
    y = state.randn(n)
    y[labels == 0] += -2
    y[labels == 1] += 2
    return y


def true_density(grid, location: float, scale: float) -> np.ndarray:
    """The mixture's density on the standardised scale (the Jacobian is ``scale``)."""
    y = scale * grid + location
    return (0.8 * norm.pdf(y, loc=-2) + 0.2 * norm.pdf(y, loc=2)) * scale


def interval(values, axis=0):
    return np.percentile(values, [2.5, 97.5], axis=axis)


def resample_density(fit, key, num_paths: int, num_steps: int):
    # The authors' grid reaches 1.3 standard deviations past the smallest point: ppl warns
    # about rows of a grid far outside the data, which here is the point of the picture.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*outside the data's range")
        return fit.resample(GRID, key=key, num_paths=num_paths, num_steps=num_steps, progress_bar=False)


def regression_demo() -> None:
    """Copula regression on ``y = sin(2x) + N(0, 0.3^2)``: draws of the regression function."""
    rng = np.random.default_rng(0)
    n = 60
    x = np.sort(rng.uniform(-3, 3, n))[:, None]
    y = np.sin(2 * x[:, 0]) + 0.3 * rng.normal(size=n)
    fit = martingale.regression(x, y, key=jax.random.key(0), num_permutations=10)
    x_test = np.array([[-2.0], [-0.75], [0.0], [0.75], [2.0]])
    draws = fit.resample(
        x_test,
        np.linspace(-2.5, 2.5, 101),
        key=jax.random.key(1),
        num_paths=200,
        num_steps=1000,
        progress_bar=False,
    )
    low, high = interval(draws["mean"])
    print(
        f"\ncopula regression of sin(2x) + noise (n = {n}): rho {float(fit.rho):.3f}, rho_x "
        f"{[round(float(r), 3) for r in fit.rho_x]}; draws of E[y | x] (mean [95%])"
    )
    for i, x0 in enumerate(x_test[:, 0]):
        print(
            f"  x = {x0:5.2f}: {draws['mean'][:, i].mean():6.3f} [{low[i]:6.3f}, {high[i]:6.3f}]"
            f"   sin(2x) = {np.sin(2 * x0):6.3f}"
        )


def plot(draws, y, truth, bootstrap_mean, out: pathlib.Path) -> pathlib.Path:
    density = draws["density"]
    low, high = interval(density)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [2, 1]})
    left.plot(GRID, density[:100].T, color="C0", lw=0.4, alpha=0.25)
    left.fill_between(GRID, low, high, color="C0", alpha=0.25, label="95% band")
    left.plot(GRID, density.mean(axis=0), color="C0", lw=2, label="posterior mean")
    left.plot(GRID, truth, "k--", lw=1.2, label="true density")
    left.plot(y, np.full_like(y, -0.015), "|", color="C3", ms=10, label="data")
    left.set_xlabel("y (standardised)")
    left.set_ylabel("density")
    left.set_title(f"predictive resampling: {draws.num_paths} paths x {draws.num_steps} steps", fontsize=10)
    left.legend(fontsize=8, loc="upper right")
    bins = np.linspace(-0.8, 0.8, 49)
    right.hist(draws["mean"], bins=bins, density=True, alpha=0.5, color="C0", label="copula")
    right.hist(bootstrap_mean, bins=bins, density=True, alpha=0.5, color="C1", label="Bayesian bootstrap")
    right.set_xlabel("mean of y (standardised)")
    right.set_title("martingale posterior of the mean", fontsize=10)
    right.legend(fontsize=8)
    figure.tight_layout()
    path = out / "martingale_density.png"
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def main(quick: bool, out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    raw = gen_data(102, 50)
    location, scale = raw.mean(), raw.std()
    y = (raw - location) / scale
    truth = true_density(GRID, location, scale)

    fit = martingale.density(y, key=jax.random.key(200))
    print(
        f"n = {len(y)}: bandwidth rho {float(fit.rho):.4f}, prequential log-likelihood "
        f"{float(fit.log_score):.4f} per point (10 orderings)"
    )
    num_paths, num_steps = (100, 500) if quick else (1000, 5000)
    draws = resample_density(fit, jax.random.key(201), num_paths, num_steps)
    density = draws["density"]

    points = np.array(list(AUTHORS))
    columns = np.searchsorted(GRID, points - 1e-9)
    predictive = np.exp(fit.log_density(points))
    print(f"\ndensity at y (standardised); {num_paths} paths x {num_steps} steps; mean [95% interval]")
    print(f"{'y':>5s} {'p_n(y)':>7s} {'ppl':>24s} {'authors (1000 x 5000)':>26s} {'true':>6s}")
    for point, column, p_n in zip(points, columns, predictive, strict=True):
        low, high = interval(density[:, column])
        a_mean, a_low, a_high = AUTHORS[point]
        print(
            f"{point:5.1f} {p_n:7.3f}   {density[:, column].mean():.3f} [{low:.3f}, {high:.3f}]"
            f"      {a_mean:.3f} [{a_low:.3f}, {a_high:.3f}] {truth[column]:6.3f}"
        )
    print(f"integral of the mean density on the grid: {np.trapezoid(density.mean(axis=0), GRID):.5f}")
    print(
        f"convergence: change (mean |p_T - p_(T - T/10)| on the grid) median {np.median(draws.change):.2e}, "
        f"max {np.max(draws.change):.2e}"
    )

    bootstrap = martingale.bayesian_bootstrap(
        y, key=jax.random.key(202), num_paths=num_paths, num_steps=num_steps, progress_bar=False
    )
    print("\nposterior of the mean of y: standardised | data scale (true mean -1.2)")
    for name, values in (("copula", draws["mean"]), ("Bayesian bootstrap", bootstrap["mean"])):
        low, high = interval(values)
        print(
            f"{name:19s} {values.mean():7.3f} [{low:6.3f}, {high:6.3f}] sd {values.std():.3f} | "
            f"{location + scale * values.mean():6.3f} [{location + scale * low:6.3f}, "
            f"{location + scale * high:6.3f}]"
        )

    idata = draws.to_arviz()
    path = out / "martingale_density.nc"
    ppl.save(idata, str(path))
    loaded = ppl.load(str(path))
    print(
        f"\nArviZ: posterior {dict(idata.posterior.sizes)}; netCDF round trip identical: "
        f"{all(loaded[group].equals(idata[group]) for group in idata.groups())}"
    )
    print(az.summary(idata, var_names=["mean"], kind="stats"))

    if quick:
        print("\n(the copula regression demo runs without --quick: its fit compiles for ~10 s)")
    else:
        regression_demo()
    written = plot(draws, y, truth, bootstrap["mean"], out)
    print(f"wrote {written} and {path} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100 paths x 500 steps (CI)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("examples/output"))
    options = parser.parse_args()
    main(options.quick, options.out)
