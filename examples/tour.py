"""A tour of ppl: one quick example per family, on one self-contained HTML page.

1. NUTS on eight schools with ArviZ: summary, trace plot, PSIS-LOO, a netCDF round trip.
2. Variational inference: ELBO and IWAE on a Bayesian linear regression whose posterior
   and evidence are known in closed form.
3. Diffusion-prior inpainting: TDS on a Gaussian-mixture prior, whose exact score gives
   the exact posterior and evidence to compare with.
4. Empirical Bayes: shrinking many binomial rates, and the risk relative to the raw rates.
5. Infinitely wide networks: an NNGP regression against its Student-t (scale-mixture)
   version on data with outliers; the closed form checked against quadrature.

Every section computes its key numbers (against exact answers where they exist) and a
figure; the page embeds the figures (base64 PNG) and tables, and needs no network.

Run:  python examples/tour.py [--quick] [--out PATH]
PATH is the HTML file (default build/tour/index.html) or a directory for index.html;
the eight-schools netCDF file is written next to it.

A new family adds one function ``(key, quick, out_dir) -> Section`` to ``SECTIONS``.
"""

import argparse
import base64
import dataclasses
import functools
import html
import io
import pathlib
import sys
import time
import warnings
import zlib
from collections.abc import Callable

import arviz as az
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

import ppl
from ppl import dist
from ppl.eb import binomial as eb
from ppl.processes import gp, nngp, scale_mixture
from ppl.smc import diffusion as D

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The sibling examples hold the eight-schools data and the binomial simulation.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from binomial_shrinkage import simulate as simulate_rates  # noqa: E402
from eight_schools import SCHOOLS, SIGMA, Y, eight_schools  # noqa: E402


@dataclasses.dataclass
class Section:
    """What a section hands the page: its key numbers, a figure, a caption and extra tables."""

    title: str
    text: str
    numbers: dict[str, str]
    figure: matplotlib.figure.Figure
    tables: dict[str, str] = dataclasses.field(default_factory=dict)  # caption -> HTML table
    seconds: float = 0.0


def fmt(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float | np.floating) else str(value)


def vector(values, digits: int = 3) -> str:
    return "[" + ", ".join(f"{v:.{digits}f}" for v in np.asarray(values, float)) + "]"


# ------------------------------------------------------------------ 1. NUTS + ArviZ


def nuts_eight_schools(key, quick: bool, out_dir: pathlib.Path) -> Section:
    warmup, draws = (100, 100) if quick else (1000, 1000)
    sample_key, predictive_key = jax.random.split(key)
    posterior = ppl.nuts(
        eight_schools,
        SIGMA,
        y=Y,
        key=sample_key,
        chains=4,
        warmup=warmup,
        draws=draws,
        target_accept=0.9,
        progress_bar=False,
    )
    ppc = ppl.predictive(eight_schools, posterior, SIGMA, key=predictive_key)
    idata = posterior.to_arviz(posterior_predictive=ppc, coords={"school": SCHOOLS})
    summary = az.summary(idata, var_names=["mu", "tau", "theta"])
    loo = az.loo(idata)
    path = out_dir / "eight_schools.nc"
    ppl.save(idata, str(path))
    loaded = ppl.load(str(path))
    round_trip = all(loaded[group].equals(idata[group]) for group in idata.groups())

    az.plot_trace(idata, var_names=["mu", "tau"], figsize=(9, 4))
    figure = plt.gcf()
    figure.tight_layout()
    divergences = int(idata.sample_stats["diverging"].sum())
    numbers = {
        "posterior mean of mu": fmt(float(summary.loc["mu", "mean"]), 2),
        "posterior mean of tau": fmt(float(summary.loc["tau", "mean"]), 2),
        "max R-hat": fmt(float(summary["r_hat"].max()), 3),
        "min bulk ESS": fmt(float(summary["ess_bulk"].min()), 0),
        "divergences": f"{divergences} of {4 * draws}",
        "elpd_loo (se)": f"{loo.elpd_loo:.2f} ({loo.se:.2f})",
        "p_loo": fmt(float(loo.p_loo), 2),
        "max Pareto k": fmt(float(np.max(loo.pareto_k)), 2),
        "netCDF round trip identical": f"{round_trip} ({path.name})",
    }
    text = (
        f"The non-centred eight-schools model, 4 chains of {warmup} warmup and {draws} draws "
        "with <code>ppl.nuts</code>; <code>to_arviz</code> gives the posterior, sample "
        "statistics, pointwise log-likelihood and posterior predictive with the dimension "
        "<code>school</code>, so <code>az.summary</code>, <code>az.loo</code> and "
        "<code>az.plot_trace</code> work unchanged. There is no closed form here: the "
        "checks are the diagnostics (R-hat, ESS, divergences, Pareto k) and the netCDF file "
        "read back by <code>ppl.load</code> equal to what was written."
    )
    return Section(
        "NUTS on eight schools, with ArviZ",
        text,
        numbers,
        figure,
        {"az.summary (mu, tau, theta)": summary.to_html(float_format=lambda v: f"{v:.2f}")},
    )


# ------------------------------------------------------------------ 2. VI objectives

PRIOR_SCALE, NOISE_SCALE = 2.0, 1.0


def regression(params, design, y):
    beta = ppl.sample("beta", dist.Normal(0.0, PRIOR_SCALE).expand([2]).to_event(1))
    ppl.sample("y", dist.Normal(design @ beta, NOISE_SCALE).to_event(1), obs=y)


def mean_field(params, design, y):
    ppl.sample("beta", dist.Normal(params["loc"], jnp.exp(params["log_scale"])).to_event(1))


def gaussian_kl(mean_q, cov_q, mean_p, precision_p):
    """KL(N(mean_q, cov_q) || N(mean_p, precision_p^-1))."""
    diff = mean_q - mean_p
    _, logdet = np.linalg.slogdet(cov_q @ precision_p)
    return 0.5 * (np.trace(precision_p @ cov_q) - len(diff) + diff @ precision_p @ diff - logdet)


def vi_regression(key, quick: bool, out_dir: pathlib.Path) -> Section:
    rng = np.random.default_rng(1)
    n = 30
    x1 = rng.normal(size=n)
    design = np.stack([x1, 0.95 * x1 + np.sqrt(1 - 0.95**2) * rng.normal(size=n)], axis=1)
    y = design @ np.array([1.0, -0.5]) + NOISE_SCALE * rng.normal(size=n)

    # The exact posterior N(m, P^-1) and evidence N(y; 0, s0^2 X X^T + s^2 I).
    precision = np.eye(2) / PRIOR_SCALE**2 + design.T @ design / NOISE_SCALE**2
    covariance = np.linalg.inv(precision)
    mean = covariance @ design.T @ y / NOISE_SCALE**2
    marginal = PRIOR_SCALE**2 * design @ design.T + NOISE_SCALE**2 * np.eye(n)
    _, logdet = np.linalg.slogdet(2 * np.pi * marginal)
    log_evidence = -0.5 * (logdet + y @ np.linalg.solve(marginal, y))
    # The best mean-field Gaussian (the ELBO's optimum): exact means, scales 1 / sqrt(P_ii).
    best_scale = 1 / np.sqrt(np.diag(precision))
    best_elbo = log_evidence - gaussian_kl(mean, np.diag(best_scale**2), mean, precision)

    steps, num_particles = (200, 8) if quick else (2000, 16)
    data = (jnp.asarray(design, jnp.float32), jnp.asarray(y, jnp.float32))
    init = {"loc": jnp.zeros(2), "log_scale": jnp.zeros(2)}
    objectives = {
        "ELBO": ppl.vi.objectives.elbo(regression, mean_field),
        f"IWAE({num_particles})": ppl.vi.objectives.iwae(regression, mean_field, num_particles),
    }
    fit_key, estimate_key, draw_key, exact_key = jax.random.split(key, 4)
    results, estimates = {}, {}
    for name, objective in objectives.items():
        results[name] = ppl.vi.fit(
            objective,
            init,
            *data,
            optimizer=optax.adam(0.05),
            steps=steps,
            key=fit_key,
            num_samples=4,
            progress_bar=False,
        )
        keys = jax.random.split(estimate_key, 4000)
        values = jax.jit(jax.vmap(objective.estimate, (0, None, None, None)))(
            keys, results[name].params, *data
        )
        estimates[name] = (float(values.mean()), float(values.std() / np.sqrt(len(keys))))

    fitted = results["ELBO"].params
    loc, scale = np.asarray(fitted["loc"]), np.exp(np.asarray(fitted["log_scale"]))
    exact_elbo = log_evidence - gaussian_kl(loc, np.diag(scale**2), mean, precision)
    iwae_name = f"IWAE({num_particles})"
    iwae_scale = np.exp(np.asarray(results[iwae_name].params["log_scale"]))
    exact_sd = np.sqrt(np.diag(covariance))
    numbers = {
        "exact log p(y)": fmt(log_evidence),
        "ELBO of the fit (exact, closed form)": fmt(exact_elbo),
        "best mean-field ELBO (closed form)": fmt(best_elbo),
        "ELBO estimate (4000 draws, +- se)": "{:.3f} +- {:.3f}".format(*estimates["ELBO"]),
        f"{iwae_name} estimate (4000 draws, +- se)": "{:.3f} +- {:.3f}".format(*estimates[iwae_name]),
        "posterior mean: ELBO fit / exact": f"{vector(loc)} / {vector(mean)}",
        "posterior sd: ELBO fit / best mean-field / exact": (
            f"{vector(scale)} / {vector(best_scale)} / {vector(exact_sd)}"
        ),
        f"posterior sd: {iwae_name} fit": vector(iwae_scale),
        "exact posterior correlation": fmt(float(covariance[0, 1] / np.prod(exact_sd))),
    }

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    window = max(steps // 50, 1)
    for name, result in results.items():
        trace = np.convolve(result.objective, np.ones(window) / window, mode="valid")
        left.plot(np.arange(len(trace)) + window, trace, label=f"{name} (running mean)")
    left.axhline(log_evidence, color="k", linestyle="--", label="exact log p(y)")
    left.axhline(best_elbo, color="grey", linestyle=":", label="best mean-field ELBO")
    left.set_ylim(best_elbo - 4, log_evidence + 1)
    left.set_xlabel("step")
    left.set_ylabel("objective")
    left.legend(fontsize=8)
    exact_draws = np.asarray(
        mean + jax.random.normal(exact_key, (2000, 2)) @ np.linalg.cholesky(covariance).T
    )
    guide_draws = results["ELBO"].sample_guide(mean_field, draw_key, 2000, *data)["beta"]
    right.scatter(*exact_draws.T, s=2, alpha=0.3, color="grey", label="exact posterior")
    right.scatter(*np.asarray(guide_draws).T, s=2, alpha=0.3, label="ELBO mean-field fit")
    right.set_xlabel("beta[0]")
    right.set_ylabel("beta[1]")
    right.legend(fontsize=8, markerscale=4)
    figure.tight_layout()
    text = (
        "Bayesian linear regression with two strongly correlated predictors: the posterior "
        "and the evidence are Gaussian in closed form. A mean-field Gaussian guide is fitted "
        f"with <code>ppl.vi.fit</code> ({steps} Adam steps) under two objectives from "
        "<code>ppl.vi.objectives</code>: the ELBO, whose optimum is known exactly (the exact "
        "means, scales <code>1/sqrt(P_ii)</code>: too narrow for a correlated posterior), and "
        f"{iwae_name}, a tighter bound that widens the guide. Both bounds stay below "
        "<code>log p(y)</code>."
    )
    return Section("Variational inference: ELBO and IWAE against the exact posterior", text, numbers, figure)


# ------------------------------------------------------------------ 3. diffusion prior


def inpainting_mixture():
    """A Gaussian mixture on 2x2 'images' (d = 4, pixels row by row): three components
    share their top row and differ in the bottom one, two others have another top row."""
    means = np.array(
        [
            [0.0, 0.0, -2.5, -1.0],
            [0.0, 0.0, 2.5, -1.0],
            [0.0, 0.0, 0.0, 2.5],
            [3.0, 3.0, 0.0, 0.0],
            [-3.0, 3.0, 1.0, 1.0],
        ]
    )
    return D.GaussianMixture(np.array([0.3, 0.2, 0.2, 0.15, 0.15]), means, 0.3)


@functools.partial(jax.jit, static_argnames="num_samples")
def exact_reference(key, mixture, observation, draws, particles, weights, *, num_samples):
    """One compiled program for every comparison with the exact posterior mixture."""
    exact = mixture.posterior(observation)
    draw_key, floor_key, sw_key = jax.random.split(key, 3)
    exact_draws = exact.sample(draw_key, num_samples)
    return {
        "log_evidence": exact.log_evidence,
        "weights": exact.weights,
        "draws": exact_draws,
        "component_error": exact.component_error(particles, weights),
        "sw": D.sliced_wasserstein(sw_key, draws, exact_draws),
        "sw_floor": D.sliced_wasserstein(sw_key, exact.sample(floor_key, num_samples), exact_draws),
    }


def diffusion_inpainting(key, quick: bool, out_dir: pathlib.Path) -> Section:
    particles, steps, repeats = (200, 20, 2) if quick else (2000, 100, 5)
    mixture = inpainting_mixture()
    prior = mixture.diffusion_prior(D.vp())
    observed = np.array([True, True, False, False])  # the top row is seen, the bottom row hidden
    observation = D.measurement(D.MaskOperator(observed), np.array([0.4, 0.3]), noise_std=0.5)
    run_key, resample_key, exact_key = jax.random.split(key, 3)
    with warnings.catch_warnings(record=True) as caught:  # weight collapses: counted below
        warnings.simplefilter("always", RuntimeWarning)
        runs = [
            D.tds(
                prior,
                observation,
                key=jax.random.fold_in(run_key, r),
                num_particles=particles,
                num_steps=steps,
                progress_bar=False,
            )
            for r in range(repeats)
        ]
    for warning in caught:
        if "weight collapse" not in str(warning.message):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    result = runs[0]
    draws = result.sample(resample_key, particles)
    exact = jax.device_get(
        exact_reference(
            exact_key,
            mixture,
            observation,
            draws,
            result.particles,
            result.weights,
            num_samples=particles,
        )
    )
    evidences = np.array([run.log_evidence for run in runs])
    numbers = {
        "exact log p(y)": fmt(float(exact["log_evidence"])),
        f"TDS log p(y), {repeats} runs (mean, sd)": f"{evidences.mean():.3f}, {evidences.std(ddof=1):.3f}",
        "final ESS / N (run 1)": f"{result.ess:.0f} / {particles}",
        "min ESS over steps / N, each run": vector([run.ess_history.min() for run in runs], 0),
        "runs with a weight collapse (ESS < 10% of N at some step)": (
            f"{sum(run.ess_history.min() < 0.1 * particles for run in runs)} of {repeats}"
        ),
        "component weights: total-variation error (run 1)": fmt(float(exact["component_error"])),
        "exact posterior component weights": vector(exact["weights"]),
        "sliced W1 to exact draws (TDS / exact-vs-exact floor)": (
            f"{float(exact['sw']):.3f} / {float(exact['sw_floor']):.3f}"
        ),
    }

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    exact_np, draws_np = np.asarray(exact["draws"]), np.asarray(draws)
    left.scatter(exact_np[:, 2], exact_np[:, 3], s=4, alpha=0.35, color="grey", label="exact posterior")
    left.scatter(draws_np[:, 2], draws_np[:, 3], s=4, alpha=0.35, label="TDS (resampled)")
    left.set_xlabel("hidden pixel (1, 0)")
    left.set_ylabel("hidden pixel (1, 1)")
    left.legend(fontsize=8, markerscale=3)
    for r, run in enumerate(runs, 1):
        right.plot(run.ess_history / particles, label=f"run {r}", linewidth=1)
    right.legend(fontsize=8)
    right.set_ylim(0, 1.05)
    right.set_xlabel("diffusion step")
    right.set_ylabel("ESS / N after reweighting")
    figure.tight_layout()
    text = (
        "A five-component Gaussian mixture on 2x2 'images' is the diffusion prior "
        "(<code>GaussianMixture.diffusion_prior</code>: the exact noised score at every "
        "time). The top row is observed with noise 0.5 (<code>MaskOperator</code>); three "
        "components share that top row, so the hidden bottom row has a multimodal posterior. "
        f"TDS (<code>ppl.smc.diffusion.tds</code>, default Tweedie twist, {particles} "
        f"particles, {steps} steps, {repeats} runs with their own keys) is compared with the "
        "exact posterior mixture and its evidence; the sliced-Wasserstein floor is the distance "
        "between two exact sample sets of the same size. The default twist is an approximation: "
        "on well-separated modes its weights can collapse at a step (counted below); the exact "
        "twist <code>GaussianMixture.noised_log_likelihood</code> (<code>twist_fn=</code>) would "
        "keep the ESS near N."
    )
    return Section("Diffusion-prior inpainting with TDS", text, numbers, figure)


# ------------------------------------------------------------------ 4. empirical Bayes


def binomial_shrinkage(key, quick: bool, out_dir: pathlib.Path) -> Section:
    successes, trials, covariate, rates, _ = simulate_rates(500 if quick else 5000)
    plain = eb.shrink(successes, trials, key=key)
    with_covariate = eb.shrink(successes, trials, covariate, key=key)
    estimates = {
        "MLE (raw rate X/n)": eb.mle(successes, trials),
        "URE shrinkage": plain.estimate,
        "URE shrinkage + covariate": with_covariate.estimate,
    }
    mle_error = np.mean((estimates["MLE (raw rate X/n)"] - rates) ** 2)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{np.mean((e - rates) ** 2):.5f}</td>"
        f"<td>{np.mean((e - rates) ** 2) / mle_error:.3f}</td></tr>"
        for name, e in estimates.items()
    )
    table = (
        "<table><tr><th>estimator</th><th>compound MSE (true rates)</th>"
        f"<th>ratio to MLE</th></tr>{rows}</table>"
    )
    actual = np.mean((with_covariate.estimate - rates) ** 2) / mle_error
    coverage = np.mean((rates >= with_covariate.lower) & (rates <= with_covariate.upper))
    numbers = {
        "units": str(len(trials)),
        "risk / MLE risk, with covariate (true rates)": fmt(float(actual)),
        "risk / MLE risk, with covariate (URE estimate, no truth)": fmt(
            with_covariate.risk / with_covariate.raw_risk
        ),
        "risk / MLE risk, no covariate (true rates)": fmt(
            float(np.mean((plain.estimate - rates) ** 2) / mle_error)
        ),
        "lambda (prior concentration), with covariate": fmt(with_covariate.lam, 1),
        f"{with_covariate.level:.0%} interval coverage of the true rates": fmt(float(coverage)),
    }

    shown = np.asarray(jax.random.choice(key, len(trials), (min(len(trials), 800),), replace=False))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    figure.suptitle(f"{len(shown)} of {len(trials)} units shown", fontsize=9)
    left.scatter(trials[shown], with_covariate.raw[shown], s=5, alpha=0.5, label="raw rate X/n")
    left.scatter(
        trials[shown], with_covariate.estimate[shown], s=5, alpha=0.6, label="shrunken (URE + covariate)"
    )
    left.set_xlabel("trials n_i")
    left.set_ylabel("rate")
    left.legend(fontsize=8, markerscale=3)
    right.scatter(rates[shown], with_covariate.raw[shown], s=5, alpha=0.5, label="raw rate X/n")
    right.scatter(rates[shown], with_covariate.estimate[shown], s=5, alpha=0.6, label="shrunken")
    right.plot([0, rates.max()], [0, rates.max()], color="k", linewidth=1)
    right.set_xlabel("true rate")
    right.set_ylabel("estimate")
    right.legend(fontsize=8, markerscale=3)
    figure.tight_layout()
    text = (
        f"{len(trials)} simulated units with 2 to 39 trials and rates around 0.2 that depend on "
        "a covariate. <code>ppl.eb.binomial.shrink</code> shrinks each raw rate toward a "
        "cross-fitted target by the weight minimising an exactly unbiased risk estimate (URE); "
        "its risk estimate needs no truth, and is compared here with the actual compound error "
        "against the simulated rates."
    )
    return Section(
        "Empirical Bayes: binomial shrinkage",
        text,
        numbers,
        figure,
        {"compound squared error against the true rates": table},
    )


# ------------------------------------------------------------------ 5. processes


def scale_mixture_nngp(key, quick: bool, out_dir: pathlib.Path) -> Section:
    n = 30 if quick else 60
    k_noise, k_test, k_outlier = jax.random.split(key, 3)
    x = jnp.linspace(-3.0, 3.0, n)[:, None]
    y = jnp.sin(1.5 * x[:, 0]) + 0.1 * jax.random.normal(k_noise, (n,))
    outliers = jnp.array([n // 5, n // 2, 4 * n // 5])
    y = y.at[outliers].add(jnp.array([2.5, -3.0, 2.0]))
    x_test = jax.random.uniform(k_test, (200, 1), minval=-3.0, maxval=3.0)
    y_test = jnp.sin(1.5 * x_test[:, 0]) + 0.1 * jax.random.normal(k_outlier, (200,))
    net = nngp.mlp(3, "relu", W_std=1.5, b_std=0.1, last_W_std=1.0)
    noise = 0.05
    fits = {
        "NNGP (Gaussian process)": gp.regression(net, x, y, noise_variance=noise),
        "Student-t process (IG(2, 2) last-layer variance)": scale_mixture.regression(
            net, x, y, scale_prior=dist.InverseGamma(2.0, 2.0), noise_variance=noise
        ),
        "Burr XII(2, 3) last-layer variance (quadrature)": scale_mixture.regression(
            net, x, y, scale_prior=scale_mixture.BurrXII(2.0, 3.0), noise_variance=noise
        ),
    }
    predictions = {name: fit.predict(x_test) for name, fit in fits.items()}
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{-float(jnp.mean(p.log_density(y_test))):.3f}</td>"
        f"<td>{float(jnp.mean(jnp.sqrt(p.observed_variance))):.3f}</td></tr>"
        for name, p in predictions.items()
    )
    table = f"<table><tr><th>process</th><th>test NLL</th><th>mean predictive sd</th></tr>{rows}</table>"
    student = fits["Student-t process (IG(2, 2) last-layer variance)"]
    by_quadrature = scale_mixture.regression(
        net, x, y, scale_prior=dist.InverseGamma(2.0, 2.0), noise_variance=noise, method="quadrature"
    )
    numbers = {
        "training points (3 outliers)": str(n),
        "Student-t log marginal likelihood, closed form": fmt(float(student.log_marginal_likelihood)),
        "the same by quadrature over log s2": fmt(float(by_quadrature.log_marginal_likelihood)),
        "GP log marginal likelihood": fmt(float(fits["NNGP (Gaussian process)"].log_marginal_likelihood)),
        "posterior mean of the last-layer variance (IG)": fmt(float(student.posterior.mean())),
    }
    grid = jnp.linspace(-3.5, 3.5, 200)[:, None]
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for axis, name in zip(axes, list(fits)[:2], strict=True):
        prediction = fits[name].predict(grid)
        sd = np.sqrt(np.asarray(prediction.observed_variance))
        mean = np.asarray(prediction.mean)
        axis.fill_between(grid[:, 0], mean - 2 * sd, mean + 2 * sd, alpha=0.3, label="+- 2 sd (new y)")
        axis.plot(grid[:, 0], mean, label="predictive mean")
        axis.scatter(x[:, 0], y, s=10, color="k", label="training data")
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("x")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    text = (
        "A 3-hidden-layer ReLU network of infinite width as a prior over functions "
        "(<code>ppl.processes.nngp</code>), conditioned on noisy data with three outliers. "
        "The Gaussian process keeps its last-layer variance fixed; putting an inverse-gamma "
        "prior on it gives a Student-t process whose closed-form posterior widens its bands "
        "for data that disagree with the kernel's scale. The closed form is checked against "
        "quadrature over the log variance."
    )
    return Section(
        "Infinitely wide networks: NNGP and a Student-t process",
        text,
        numbers,
        figure,
        {"held-out clean data": table},
    )


# ------------------------------------------------------------------ the page

SECTIONS: list[Callable[..., Section]] = [
    nuts_eight_schools,
    vi_regression,
    diffusion_inpainting,
    binomial_shrinkage,
    scale_mixture_nngp,
]

STYLE = """
body { font-family: sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; }
section { border-top: 1px solid #ddd; margin-top: 2em; }
.meta { color: #777; font-size: 0.85em; }
"""


def figure_html(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{encoded}">'


def section_html(index: int, section: Section) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(value)}</td></tr>"
        for name, value in section.numbers.items()
    )
    tables = "".join(f"<h3>{html.escape(caption)}</h3>{table}" for caption, table in section.tables.items())
    return (
        f'<section id="section-{index}"><h2>{index}. {html.escape(section.title)}</h2>'
        f"<p>{section.text}</p><table><tr><th>key number</th><th>value</th></tr>{rows}</table>"
        f"{tables}{figure_html(section.figure)}"
        f'<p class="meta">{section.seconds:.1f} s, compilation included</p></section>'
    )


def page_html(sections: list[Section], quick: bool, seconds: float) -> str:
    contents = "".join(
        f'<li><a href="#section-{i}">{html.escape(s.title)}</a></li>' for i, s in enumerate(sections, 1)
    )
    body = "".join(section_html(i, s) for i, s in enumerate(sections, 1))
    mode = " (--quick: tiny sizes)" if quick else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>ppl tour</title>'
        f"<style>{STYLE}</style></head><body><h1>A tour of ppl{mode}</h1>"
        f"<p>One quick example per family, run by <code>examples/tour.py</code> with ppl "
        f"{ppl.__version__}, JAX {jax.__version__} on {jax.default_backend()}, in "
        f"{seconds:.0f} s.</p><ol>{contents}</ol>{body}</body></html>"
    )


def main(quick: bool, out: pathlib.Path) -> None:
    path = out if out.suffix == ".html" else out / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    root = jax.random.key(0)
    start = time.perf_counter()
    sections = []
    for function in SECTIONS:
        # Each section's key depends on its name only, so adding a section changes no other.
        key = jax.random.fold_in(root, zlib.crc32(function.__name__.encode()) % 2**31)
        began = time.perf_counter()
        section = function(key, quick, path.parent)
        section.seconds = time.perf_counter() - began
        sections.append(section)
        print(f"\n== {section.title} ({section.seconds:.1f} s)")
        for name, value in section.numbers.items():
            print(f"  {name}: {value}")
    seconds = time.perf_counter() - start
    path.write_text(page_html(sections, quick, seconds), encoding="utf-8")
    print(f"\ntour: {len(sections)} sections in {seconds:.1f} s; wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("build/tour/index.html"),
        help="the HTML file, or a directory for index.html (default build/tour/index.html)",
    )
    options = parser.parse_args()
    main(options.quick, options.out)
