"""Exact GP regression and scale mixtures against independent references.

* GP regression against dense NumPy / SciPy formulas (exact to rounding).
* Student-t closed forms and the quadrature method against 1-D adaptive integration over
  the variance (``scipy.integrate.quad``, independent of ``ppl``'s grid) to 1e-8.
* Importance sampling and NUTS against quadrature within 5 Monte-Carlo standard errors
  (IS: the delta-method standard error of a self-normalised estimate; NUTS: ArviZ's ESS);
  importance weights with the likelihood's exponent doubled must fail the same check.
* A KS test that f(x0) of random finite networks whose last-layer variance is drawn from
  an inverse gamma follows the predicted Student-t.
* The DSL entry: NUTS over the scale with ``gp.prior`` reproduces the inverse-gamma
  posterior; ``student_t_process`` has the closed-form log marginal likelihood.
"""

import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

import ppl
from ppl import dist
from ppl.processes import gp, nngp, scale_mixture
from tests.seeds import key

NOISE = 0.05


@pytest.fixture(scope="module")
def data():
    x = jnp.linspace(-2.0, 2.0, 12)[:, None]
    y = jnp.sin(2 * x[:, 0]) + 0.1 * jax.random.normal(key(0), (12,))
    y = y.at[3].set(3.0)  # an outlier
    net = nngp.mlp(2, "relu", W_std=1.4, b_std=0.1)
    x_test = jnp.array([[-1.7], [0.3], [2.5]])
    return net, x, y, x_test


def _dense_reference(net, x, y, x_test, noise):
    k = np.asarray(net.kernel(x)) + (noise + gp.DEFAULT_JITTER) * np.eye(len(x))
    k_star = np.asarray(net.kernel(x_test, x))
    k_ss = np.asarray(net.kernel(x_test, diagonal=True))
    mean = k_star @ np.linalg.solve(k, np.asarray(y))
    latent = k_ss - np.sum(k_star * np.linalg.solve(k, k_star.T).T, axis=1)
    return k, mean, latent


def test_gp_regression_equals_dense_formulas(data):
    net, x, y, x_test = data
    post = gp.regression(net, x, y, noise_variance=NOISE)
    k, mean, latent = _dense_reference(net, x, y, x_test, NOISE)
    pred = post.predict(x_test)
    np.testing.assert_allclose(pred.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(pred.latent_variance, latent, rtol=1e-8)
    np.testing.assert_allclose(pred.observed_variance, latent + NOISE, rtol=1e-8)
    expected = stats.multivariate_normal(np.zeros(len(x)), k).logpdf(np.asarray(y))
    assert abs(float(post.log_marginal_likelihood) - expected) < 1e-9
    y_test = jnp.array([0.1, -0.2, 0.4])
    np.testing.assert_allclose(
        pred.log_density(y_test),
        stats.norm(mean, np.sqrt(latent + NOISE)).logpdf(np.asarray(y_test)),
        rtol=1e-10,
    )
    # Two outputs: independent columns sharing the kernel.
    both = gp.regression(net, x, jnp.stack([y, -2 * y], axis=1), noise_variance=NOISE)
    assert both.predict(x_test).mean.shape == (3, 2)
    expected_two = expected + stats.multivariate_normal(np.zeros(len(x)), k).logpdf(-2 * np.asarray(y))
    assert abs(float(both.log_marginal_likelihood) - expected_two) < 1e-9


def _integrated(log_prior, quadratic, count, integrand=lambda s2: 1.0):
    """``log int prior(s2) s2^(-count/2) exp(-q/(2 s2)) integrand(s2) ds2`` by adaptive
    quadrature over log s2, scaled by the maximum for stability."""

    def log_target(t):
        s2 = np.exp(t)
        with np.errstate(all="ignore"):
            value = log_prior(s2) + t - 0.5 * count * t - 0.5 * quadratic / s2
        return value if np.isfinite(value) else -np.inf

    centre = np.log(quadratic / count)
    peak = max(log_target(t) for t in np.linspace(centre - 30, centre + 30, 601))
    value, _ = integrate.quad(
        lambda t: np.exp(log_target(t) - peak) * integrand(np.exp(t)),
        centre - 30,
        centre + 30,
        epsabs=0,
        epsrel=1e-13,
        limit=500,
    )
    return np.log(value) + peak


@pytest.mark.parametrize("outputs", [1, 2])
def test_student_t_closed_forms_equal_integration_over_the_scale(data, outputs):
    net, x, y, x_test = data
    targets = y if outputs == 1 else jnp.stack([y, 0.5 * y + 0.2], axis=1)
    prior = dist.InverseGamma(2.0, 3.0)
    closed = scale_mixture.regression(net, x, targets, scale_prior=prior, noise_variance=NOISE)
    quad = scale_mixture.regression(
        net, x, targets, scale_prior=prior, noise_variance=NOISE, method="quadrature"
    )
    cond = closed.conditioned
    count = cond.num_points * cond.num_outputs
    q = float(cond.quadratic)

    def log_prior(s2):
        return stats.invgamma(2.0, scale=3.0).logpdf(s2)

    log_norm = _integrated(log_prior, q, count)
    constant = -0.5 * count * np.log(2 * np.pi) - 0.5 * outputs * float(cond.log_det)
    assert abs(float(closed.log_marginal_likelihood) - (log_norm + constant)) < 1e-8
    assert abs(float(quad.log_marginal_likelihood) - (log_norm + constant)) < 1e-8
    # Predictive density of one new observation: the t against int N(y; mu, s2 s^2) p(s2|y).
    pred, pred_quad = closed.predict(x_test), quad.predict(x_test)
    y_new = 0.7 if outputs == 1 else jnp.array([0.7, -0.1])
    mean = np.asarray(pred.mean[0])
    unit = float(pred.unit_observed_variance[0])
    for i, value in enumerate(np.atleast_1d(y_new)):
        mu = np.atleast_1d(mean)[i]
        log_joint = _integrated(
            log_prior, q, count, lambda s2, v=value, mu=mu: stats.norm(mu, np.sqrt(s2 * unit)).pdf(v)
        )
        expected = log_joint - log_norm
        got = closed.predict(x_test[:1]).log_density(
            jnp.atleast_1d(y_new)[None, i] if outputs == 1 else y_new[None]
        )
        got = float(np.ravel(got)[i if outputs > 1 else 0])
        assert abs(got - expected) < 1e-8
        got_quad = pred_quad.log_density(jnp.full((3,) + ((outputs,) if outputs > 1 else ()), value))
        got_quad = float(np.asarray(got_quad)[0] if outputs == 1 else np.asarray(got_quad)[0, i])
        assert abs(got_quad - expected) < 1e-8
    assert float(pred.mean[0].sum()) == pytest.approx(float(pred_quad.mean[0].sum()), abs=1e-12)


def test_quadrature_for_a_burr_prior_equals_adaptive_integration(data):
    net, x, y, _ = data
    post = scale_mixture.regression(
        net, x, y, scale_prior=scale_mixture.BurrXII(2.0, 3.0), noise_variance=NOISE
    )
    cond = post.conditioned
    log_norm = _integrated(
        lambda s2: stats.burr12(2.0, 3.0).logpdf(s2), float(cond.quadratic), cond.num_points
    )
    assert abs(float(post.posterior.log_normalizer) - log_norm) < 1e-8
    mean = np.exp(
        _integrated(
            lambda s2: stats.burr12(2.0, 3.0).logpdf(s2),
            float(cond.quadratic),
            cond.num_points,
            lambda s2: s2,
        )
        - log_norm
    )
    assert abs(float(post.posterior.mean()) - mean) < 1e-8 * mean


def test_burr_sampler_matches_scipy():
    draws = scale_mixture.BurrXII(2.0, 3.0).sample(key(1), (4000,))
    assert stats.kstest(np.asarray(draws), stats.burr12(2.0, 3.0).cdf).pvalue > 1e-3
    value = jnp.array([0.3, 1.0, 4.0])
    np.testing.assert_allclose(
        scale_mixture.BurrXII(2.0, 3.0).log_prob(value), stats.burr12(2.0, 3.0).logpdf(value), rtol=1e-12
    )


@pytest.fixture(scope="module")
def small_problem():
    """Five points: the prior is a usable importance proposal here (ESS about 900 of 20000)."""
    x = jnp.linspace(-1.0, 1.0, 5)[:, None]
    y = jnp.array([0.3, -0.4, 0.8, 0.1, -0.6])
    net = nngp.mlp(1, "erf", W_std=1.2)
    prior = scale_mixture.BurrXII(2.0, 3.0)
    reference = scale_mixture.regression(net, x, y, scale_prior=prior, noise_variance=NOISE)
    return net, x, y, prior, reference


def _weighted_mean_and_se(values, log_weights):
    w = np.exp(np.asarray(log_weights))
    values = np.asarray(values)
    mean = np.sum(w * values)
    return mean, np.sqrt(np.sum(w**2 * (values - mean) ** 2))


def test_importance_sampling_agrees_with_quadrature(small_problem):
    net, x, y, prior, reference = small_problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ESS ~ 900 of 20000: below the 10 % warning line, ample here
        post = scale_mixture.regression(
            net,
            x,
            y,
            scale_prior=prior,
            noise_variance=NOISE,
            method="importance",
            key=key(2),
            num_samples=20000,
        )
    truth = float(reference.posterior.mean())
    mean, se = _weighted_mean_and_se(post.posterior.variances, post.posterior.log_weights)
    assert float(post.posterior.ess) > 400
    assert abs(mean - truth) < 5 * se
    # Broken: the likelihood's exponent without its 1/2 (exp(-q / s2)).
    s2 = np.asarray(post.posterior.variances)
    wrong = -0.5 * len(y) * np.log(s2) - float(reference.conditioned.quadratic) / s2
    wrong = wrong - np.logaddexp.reduce(wrong)
    broken_mean, _ = _weighted_mean_and_se(s2, wrong)
    assert abs(broken_mean - truth) > 5 * se


def test_nuts_on_the_scale_agrees_with_quadrature(small_problem):
    net, x, y, prior, reference = small_problem
    post = scale_mixture.regression(
        net, x, y, scale_prior=prior, noise_variance=NOISE, method="nuts", key=key(3), num_samples=1000
    )
    draws = np.asarray(post.posterior.variances).reshape(4, -1)
    ess = float(az.ess(draws))
    truth = float(reference.posterior.mean())
    assert abs(draws.mean() - truth) < 5 * draws.std() / np.sqrt(ess)


def test_importance_sampling_warns_when_the_prior_is_a_poor_proposal(data):
    net, x, y, _ = data
    x80 = jnp.linspace(-3, 3, 80)[:, None]
    y80 = jnp.sin(2 * x80[:, 0])
    with pytest.warns(UserWarning, match="effective sample size"):
        scale_mixture.regression(
            net,
            x80,
            y80,
            scale_prior=scale_mixture.BurrXII(2.0, 3.0),
            noise_variance=NOISE,
            method="importance",
            key=key(4),
        )


def test_finite_networks_with_inverse_gamma_last_layer_follow_the_t():
    """The paper's prior check: f(x0) ~ t_{2 alpha}(0, sqrt(beta / alpha K(x0, x0)))."""
    alpha, beta = 2.0, 3.0
    net = nngp.serial(nngp.Dense(1024, W_std=2.0, b_std=0.05), nngp.Erf(), nngp.Dense(1, W_std=1.0))
    x0 = jnp.array([[0.4, -1.1]])

    def one(k):
        k_net, k_scale = jax.random.split(k)
        variance = dist.InverseGamma(alpha, beta).sample(k_scale)
        return jnp.sqrt(variance) * net.apply(net.init(k_net, (2,)), x0)[0, 0]

    outputs = np.asarray(jax.vmap(one)(jax.random.split(key(5), 2000)))
    scale = np.sqrt(beta / alpha * float(net.kernel(x0)[0, 0]))
    assert stats.kstest(outputs, stats.t(2 * alpha, 0, scale).cdf).pvalue > 1e-3


def test_posterior_draws_export_to_arviz_and_round_trip(data, tmp_path):
    net, x, y, x_test = data
    post = scale_mixture.regression(
        net, x, y, scale_prior=scale_mixture.BurrXII(2.0, 3.0), noise_variance=NOISE
    )
    idata = post.to_arviz(key(6), x_test, 200)
    assert idata.posterior["f"].dims == ("chain", "draw", "test_point")
    assert idata.posterior_predictive["y"].shape == (1, 200, 3)
    path = str(tmp_path / "scale.nc")
    ppl.save(idata, path)
    loaded = ppl.load(path)
    np.testing.assert_array_equal(loaded.posterior["variance"].values, idata.posterior["variance"].values)
    # Draws of f have the predicted mean and latent variance (within MC error).
    draws = post.sample(key(7), x_test, 4000)
    pred = post.predict(x_test)
    se = np.sqrt(np.asarray(pred.latent_variance) / 4000)
    assert np.all(np.abs(np.asarray(draws["f"]).mean(0) - np.asarray(pred.mean)) < 5 * se)
    np.testing.assert_allclose(np.asarray(draws["f"]).var(0), pred.latent_variance, rtol=0.15)


def test_dsl_entry_nuts_over_the_scale_reproduces_the_closed_form(data):
    net, x, y, _ = data
    alpha, beta = 2.0, 3.0

    def model(x, y=None):
        variance = ppl.sample("variance", dist.InverseGamma(alpha, beta))
        ppl.sample("y", gp.prior(net, x, noise_variance=NOISE, scale=variance), obs=y)

    post = ppl.nuts(model, x, y=y, key=key(8), chains=2, warmup=300, draws=500, progress_bar=False)
    draws = np.asarray(post.samples["variance"])
    exact = scale_mixture.regression(
        net, x, y, scale_prior=dist.InverseGamma(alpha, beta), noise_variance=NOISE
    )
    a, b = float(exact.posterior.concentration), float(exact.posterior.rate)
    ess = float(az.ess(draws))
    assert abs(draws.mean() - b / (a - 1)) < 5 * draws.std() / np.sqrt(ess)
    # The Student-t process distribution has the closed-form marginal likelihood.
    tp = scale_mixture.student_t_process(net, x, alpha=alpha, beta=beta, noise_variance=NOISE)
    assert abs(float(tp.log_prob(y)) - float(exact.log_marginal_likelihood)) < 1e-8


def test_hyperpriors_on_weight_variances_have_the_exact_density(data):
    _, x, y, _ = data

    def model(x, y=None):
        w_std = ppl.sample("W_std", dist.HalfNormal(2.0))
        b_std = ppl.sample("b_std", dist.HalfNormal(0.5))
        net = nngp.mlp(1, "relu", W_std=w_std, b_std=b_std)
        ppl.sample("y", gp.prior(net, x, noise_variance=NOISE), obs=y)

    compiled = ppl.compile(model, x, y=y)
    u = jnp.array([0.2, -1.0])
    values = compiled.constrain(u)
    net = nngp.mlp(1, "relu", W_std=values["W_std"], b_std=values["b_std"])
    k = np.asarray(net.kernel(x)) + (NOISE + gp.DEFAULT_JITTER) * np.eye(len(x))
    expected = (
        stats.multivariate_normal(np.zeros(len(x)), k).logpdf(np.asarray(y))
        + stats.halfnorm(scale=2.0).logpdf(float(values["W_std"]))
        + stats.halfnorm(scale=0.5).logpdf(float(values["b_std"]))
        + 0.2
        - 1.0  # log-Jacobians of exp
    )
    assert abs(float(compiled.logdensity(u)) - expected) < 1e-8
    # NUTS needs a finite gradient through the kernel recursion (NUTS itself runs above).
    assert np.all(np.isfinite(np.asarray(jax.jit(jax.grad(compiled.logdensity))(u))))


def test_bad_inputs_are_named(data):
    net, x, y, _ = data
    with pytest.raises(ValueError, match=r"y must have shape \(12,\) or \(12, C\).*got \(11,\)"):
        gp.regression(net, x, y[:11], noise_variance=NOISE)
    with pytest.raises(ValueError, match="noise_variance must be a finite scalar >= 0"):
        gp.regression(net, x, y, noise_variance=-1.0)
    with pytest.raises(ValueError, match=r"\(2 x 2\) plus jitter .* smallest eigenvalue is -1"):
        gp.cholesky(jnp.array([[1.0, 2.0], [2.0, 1.0]]), 0.0, name="K")
    with pytest.raises(ValueError, match="support on the positive reals"):
        scale_mixture.regression(net, x, y, scale_prior=dist.Normal(0.0, 1.0), noise_variance=NOISE)
    with pytest.raises(ValueError, match="needs an InverseGamma"):
        scale_mixture.regression(
            net, x, y, scale_prior=dist.Gamma(2.0, 1.0), noise_variance=NOISE, method="closed_form"
        )
    with pytest.raises(ValueError, match="x1 and x2 must have the same feature shape"):
        gp.regression(net, x, y, noise_variance=NOISE).predict(jnp.ones((2, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scale_mixture.regression(net, x, y, scale_prior=dist.HalfCauchy(1.0), noise_variance=NOISE)
