"""Regression with an infinitely wide network: NNGP vs Student-t process vs Burr XII.

1-D data (a sine plus noise) with one outlier. The same NNGP kernel (a 3-hidden-layer
ReLU network, infinite width) is used three ways: as a GP with the last-layer variance
fixed at 1, as a scale mixture with an inverse-gamma prior on the last-layer variance
(a Student-t process, in closed form) and with a Burr XII prior (by quadrature over the
variance; importance sampling shown for contrast). Prints test NLLs on clean held-out
points, exports the Student-t posterior to ArviZ, and samples a hierarchical ``ppl``
model with priors on ``W_std``, ``b_std``, the last-layer and the noise variances by NUTS.

Run:  python examples/nngp_regression.py [--quick] [--out DIR]
Writes DIR/nngp_prior_draws.png and DIR/nngp_posterior.png (default DIR: examples/output).
"""

import argparse
import pathlib
import warnings

import jax

jax.config.update("jax_enable_x64", True)  # float64 kernels: see docs/processes.md

import arviz as az  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

import ppl  # noqa: E402
from ppl import dist  # noqa: E402
from ppl.processes import gp, nngp, scale_mixture  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NOISE_VARIANCE = 0.01  # per unit last-layer variance in the scale mixtures
ALPHA, BETA = 2.0, 2.0  # inverse-gamma prior on the last-layer variance
BURR_C, BURR_D = 2.0, 2.0


def make_data(num_train: int, num_test: int, seed: int = 0):
    """``y = sin(2x) + N(0, 0.1^2)`` on ``[-3, 3]``; training point 12 shifted up by 4."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-3, 3, num_train))[:, None]
    y = np.sin(2 * x[:, 0]) + 0.1 * rng.normal(size=num_train)
    y_outlier = y.copy()
    y_outlier[12] += 4.0
    x_test = np.sort(rng.uniform(-3, 3, num_test))[:, None]
    y_test = np.sin(2 * x_test[:, 0]) + 0.1 * rng.normal(size=num_test)
    return x, y, y_outlier, x_test, y_test


def fit_all(net, x, y):
    """The GP and the two scale mixtures on the same kernel."""
    return {
        "NNGP (GP)": gp.regression(net, x, y, noise_variance=NOISE_VARIANCE),
        "Student-t (inverse gamma)": scale_mixture.regression(
            net, x, y, scale_prior=dist.InverseGamma(ALPHA, BETA), noise_variance=NOISE_VARIANCE
        ),
        "Burr XII (quadrature)": scale_mixture.regression(
            net, x, y, scale_prior=scale_mixture.BurrXII(BURR_C, BURR_D), noise_variance=NOISE_VARIANCE
        ),
    }


def hierarchical(x, y=None):
    """Priors on the kernel's weight scales and on both variances; the observed site is
    the process at ``x`` (NUTS differentiates through the kernel recursion)."""
    w_std = ppl.sample("W_std", dist.LogNormal(jnp.log(1.5), 0.3))
    b_std = ppl.sample("b_std", dist.HalfNormal(1.0))
    last_variance = ppl.sample("last_variance", dist.InverseGamma(ALPHA, BETA))
    noise_variance = ppl.sample("noise_variance", dist.HalfNormal(0.1))
    net = nngp.mlp(3, "relu", W_std=w_std, b_std=b_std)
    ppl.sample("y", gp.prior(net, x, noise_variance=noise_variance, scale=last_variance), obs=y)


def plot_prior_draws(net, out: pathlib.Path, key) -> pathlib.Path:
    grid = np.linspace(-4, 4, 200)[:, None]
    k_gp, k_tp = jax.random.split(key)
    draws = {
        "NNGP: f ~ GP(0, K)": gp.prior(net, grid).sample(k_gp, (8,)),
        f"Student-t process: s2 ~ IG({ALPHA:g}, {BETA:g})": scale_mixture.student_t_process(
            net, grid, alpha=ALPHA, beta=BETA
        ).sample(k_tp, (8,)),
    }
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for axis, (title, f) in zip(axes, draws.items(), strict=True):
        axis.plot(grid[:, 0], np.asarray(f).T, lw=1)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("x")
    axes[0].set_ylabel("f(x)")
    axes[0].set_ylim(-10, 10)
    figure.tight_layout()
    path = out / "nngp_prior_draws.png"
    figure.savefig(path, dpi=90)
    return path


def plot_posteriors(fits, x, y, out: pathlib.Path) -> pathlib.Path:
    grid = np.linspace(-3.5, 3.5, 200)[:, None]
    figure, axes = plt.subplots(1, len(fits), figsize=(12, 3.4), sharey=True)
    for axis, (name, fit) in zip(axes, fits.items(), strict=True):
        prediction = fit.predict(grid)
        mean = np.asarray(prediction.mean)
        for variance, label, alpha in (
            (prediction.observed_variance, "+-2 sd of y*", 0.2),
            (prediction.latent_variance, "+-2 sd of f(x*)", 0.35),
        ):
            sd = np.sqrt(np.asarray(variance))
            axis.fill_between(grid[:, 0], mean - 2 * sd, mean + 2 * sd, alpha=alpha, color="C0", label=label)
        axis.plot(grid[:, 0], mean, color="C0", label="mean")
        axis.plot(grid[:, 0], np.sin(2 * grid[:, 0]), "k--", lw=1, label="sin(2x)")
        axis.scatter(x[:, 0], y, s=12, color="C3", zorder=3, label="data")
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("x")
    axes[0].set_ylim(-4, 5)
    axes[0].legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    path = out / "nngp_posterior.png"
    figure.savefig(path, dpi=90)
    return path


def main(quick: bool, out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    x, y_clean, y, x_test, y_test = make_data(30 if quick else 60, 100 if quick else 500)
    net = nngp.mlp(3, "relu", W_std=1.5, b_std=1.0)

    print("test NLL per point (clean held-out data; lower is better)")
    print(f"{'model':28s} {'clean train':>12s} {'outlier train':>14s}")
    clean_fits, fits = fit_all(net, x, y_clean), fit_all(net, x, y)
    for name, fit in fits.items():
        clean_nll = -float(jnp.mean(clean_fits[name].predict(x_test).log_density(y_test)))
        nll = -float(jnp.mean(fit.predict(x_test).log_density(y_test)))
        print(f"{name:28s} {clean_nll:12.3f} {nll:14.3f}")
    for name, fit in fits.items():
        scale = fit.posterior.mean() if hasattr(fit, "posterior") else 1.0
        print(
            f"{name:28s} log p(y) {float(fit.log_marginal_likelihood):9.2f}   E[s2 | y] {float(scale):7.2f}"
        )

    # Importance sampling with the prior as proposal (the paper's method) vs quadrature.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importance = scale_mixture.regression(
            net,
            x,
            y,
            scale_prior=scale_mixture.BurrXII(BURR_C, BURR_D),
            noise_variance=NOISE_VARIANCE,
            method="importance",
            key=jax.random.key(1),
            num_samples=1000,
        )
    reference = fits["Burr XII (quadrature)"]
    print(
        f"Burr XII by importance sampling: ESS {float(importance.posterior.ess):.1f} of 1000, "
        f"E[s2 | y] {float(importance.posterior.mean()):.2f} "
        f"(quadrature {float(reference.posterior.mean()):.2f}), "
        f"log p(y) {float(importance.log_marginal_likelihood):.2f} "
        f"(quadrature {float(reference.log_marginal_likelihood):.2f}); {len(caught)} warning(s)"
    )

    idata = fits["Student-t (inverse gamma)"].to_arviz(jax.random.key(2), x_test[:5], 500 if quick else 4000)
    print(az.summary(idata, var_names=["variance"], kind="stats"))

    chains, warmup, draws = (2, 50, 50) if quick else (4, 500, 500)
    posterior = ppl.nuts(
        hierarchical,
        x,
        y=y,
        key=jax.random.key(3),
        chains=chains,
        warmup=warmup,
        draws=draws,
        progress_bar=False,
    )
    print(az.summary(posterior.to_arviz(), kind="stats"))

    written = [
        plot_prior_draws(net, out, jax.random.key(4)),
        plot_posteriors(fits, x, y, out),
    ]
    print("wrote " + " and ".join(str(path) for path in written))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="30 points, a short NUTS run (CI)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("examples/output"))
    options = parser.parse_args()
    main(options.quick, options.out)
