"""SVGP / SVTP classifiers: the KL against Monte Carlo, unbiased ELBO gradients against
quadrature (with power checks), training end to end, no recompilation, and input errors."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from numpy.polynomial.hermite_e import hermegauss
from numpyro import distributions as dist

from ppl.processes import nngp, svtp
from tests.seeds import key
from tests.vi.harness import Z_MAX, assert_biased, assert_unbiased


def rbf(x1, x2):
    """A smooth kernel with gradients everywhere (the inducing inputs are trained)."""
    squared = jnp.sum((x1[:, None, :] - x2[None, :, :]) ** 2, axis=-1)
    return jnp.exp(-0.5 * squared)


# Three points, three classes, one inducing input per class, 2-D inputs.
X_TINY = jnp.array([[0.2, -0.4], [1.1, 0.3], [-0.6, 0.9]])
Y_TINY = jnp.array([0, 2, 1])


def tiny_params(model: svtp.SparseClassifier, seed: int = 0):
    rng = np.random.default_rng(seed)
    c = m = 3
    if model.covariance == "diagonal":
        scale = np.log(rng.uniform(0.3, 0.8, (c, m)))
    else:
        scale = np.tril(0.3 * rng.normal(size=(c, m, m)), -1) + np.einsum(
            "cm,mk->cmk", np.log(rng.uniform(0.3, 0.8, (c, m))), np.eye(m)
        )
    tp = model.process == "tp"
    return svtp.VariationalParams(
        mean=jnp.asarray(rng.normal(size=(c, m)), jnp.float32),
        scale=jnp.asarray(scale, jnp.float32),
        inducing=jnp.array([[0.0, 0.0], [1.0, 0.5], [-0.5, 1.0]]),
        # E[s2] = b / (a - 1) = 2: a variance far from 1, so dropping s2 shows
        log_concentration=jnp.log(jnp.float32(3.0)) if tp else None,
        log_rate=jnp.log(jnp.float32(4.0)) if tp else None,
    )


# ------------------------------------------------------------------ (1) KL vs Monte Carlo


def monte_carlo_kl(model, params, num):
    """Draws of ``log q(u, s2) - log p(u, s2)`` (the KL is their mean)."""
    k_zz = rbf(params.inducing, params.inducing) + model.jitter * jnp.eye(3)
    factor = jnp.exp(params.scale)
    if model.covariance == "diagonal":
        factor = jax.vmap(jnp.diag)(factor)
    else:
        factor = jnp.tril(params.scale, -1) + jax.vmap(jnp.diag)(factor.diagonal(axis1=1, axis2=2))
    scale_key, u_key = jax.random.split(key(10))
    if model.process == "tp":
        a, b = jnp.exp(params.log_concentration), jnp.exp(params.log_rate)
        q_s2 = dist.InverseGamma(a, b)
        s2 = q_s2.sample(scale_key, (num,))
        log_ratio = q_s2.log_prob(s2) - dist.InverseGamma(
            model.prior_concentration, model.prior_rate
        ).log_prob(s2)
    else:
        s2, log_ratio = jnp.ones(num), jnp.zeros(num)
    root = jnp.sqrt(s2)[:, None, None, None]
    q_u = dist.MultivariateNormal(params.mean, scale_tril=root * factor)  # batch (num, C)
    u = q_u.sample(u_key)
    p_u = dist.MultivariateNormal(jnp.zeros(3), scale_tril=root * jnp.linalg.cholesky(k_zz))
    return np.asarray(log_ratio + jnp.sum(q_u.log_prob(u) - p_u.log_prob(u), axis=-1), np.float64)


KL_CASES = [("tp", "diagonal"), ("tp", "full"), ("gp", "diagonal"), ("gp", "full")]


def make(process, covariance, kernel=rbf):
    if process == "tp":
        return svtp.svtp(kernel, 3, prior_concentration=2.0, prior_rate=2.5, covariance=covariance)
    return svtp.svgp(kernel, 3, covariance=covariance)


@pytest.mark.parametrize("process,covariance", KL_CASES)
def test_kl_matches_monte_carlo(process, covariance):
    model = make(process, covariance)
    params = tiny_params(model)
    draws = monte_carlo_kl(model, params, 50_000)
    se = draws.std(ddof=1) / np.sqrt(draws.size)
    kl = float(svtp.kl_divergence(model, params))
    assert abs(draws.mean() - kl) < Z_MAX * se, (kl, draws.mean(), se)
    if process == "tp":
        # Power: E[1/s2] replaced by 1/E[s2] = (a - 1)/b (off by 1/2 m^T K^-1 m / b) fails.
        whitened = jnp.linalg.solve(
            jnp.linalg.cholesky(rbf(params.inducing, params.inducing) + 1e-5 * jnp.eye(3)), params.mean.T
        )
        wrong = kl - 0.5 * float(jnp.sum(whitened**2)) / float(jnp.exp(params.log_rate))
        assert abs(draws.mean() - wrong) > Z_MAX * se


def test_inverse_gamma_kl_is_zero_at_the_prior_and_positive_elsewhere():
    assert abs(float(svtp.inverse_gamma_kl(2.5, 1.5, 2.5, 1.5))) < 1e-6
    assert float(svtp.inverse_gamma_kl(3.0, 1.0, 2.0, 2.0)) > 0


# ------------------------------------------------------------------ (2) unbiased gradients

HERMITE_DEGREE = 12  # 12^3 nodes and 161 log-s2 nodes: gradients within 1e-5 of 24^3 x 401
nodes, weights = hermegauss(HERMITE_DEGREE)
GRID = jnp.asarray(list(itertools.product(nodes, repeat=3)))  # (G^3, 3)
GRID_WEIGHTS = jnp.asarray([np.prod(w) for w in itertools.product(weights / np.sqrt(2 * np.pi), repeat=3)])
LOG_S2 = jnp.linspace(-7.0, 7.0, 161)  # trapezoid over log s2 (the integrand decays at both ends)


def expected_log_likelihood(mean, variance, y):
    """``E[log softmax(f)_y]``, ``f ~ N(mean, diag variance)`` per row, by Gauss-Hermite ``(n,)``."""
    f = mean[:, None, :] + jnp.sqrt(variance)[:, None, :] * GRID[None]
    log_probs = jnp.take_along_axis(jax.nn.log_softmax(f, axis=-1), y[:, None, None], axis=-1)[..., 0]
    return log_probs @ GRID_WEIGHTS


def quadrature_elbo(model, params, x, y):
    mean, variance = svtp.predictive_moments(model, params, x)
    if model.process == "tp":
        a, b = jnp.exp(params.log_concentration), jnp.exp(params.log_rate)
        s2 = jnp.exp(LOG_S2)
        step = LOG_S2[1] - LOG_S2[0]
        weights = jnp.exp(dist.InverseGamma(a, b).log_prob(s2)) * s2 * step
        per_s2 = jax.vmap(lambda v: expected_log_likelihood(mean, v * variance, y))(s2)  # (K, n)
        likelihood = jnp.mean(weights @ per_s2)
    else:
        likelihood = jnp.mean(expected_log_likelihood(mean, variance, y))
    return likelihood - svtp.kl_divergence(model, params) / x.shape[0]


# One compiled reference per model (value and gradient), shared by the tests below.
exact_value_and_gradient = jax.jit(jax.value_and_grad(quadrature_elbo, argnums=1), static_argnums=0)


def test_quadrature_reference_is_accurate():
    model = make("tp", "diagonal")
    params = tiny_params(model)
    a, b = 3.0, 4.0
    s2 = jnp.exp(LOG_S2)
    weights = jnp.exp(dist.InverseGamma(a, b).log_prob(s2)) * s2 * (LOG_S2[1] - LOG_S2[0])
    assert abs(float(jnp.sum(weights)) - 1) < 1e-5 and abs(float(weights @ s2) - b / (a - 1)) < 1e-4
    # against a plain Monte Carlo estimate of the same ELBO (2e4 estimates of 4 particles each)
    objective = svtp.objective(model, 3, num_particles=4)
    values = jax.jit(jax.vmap(objective.estimate, (0, None, None, None)))(
        jax.random.split(key(4), 20_000), params, X_TINY, Y_TINY
    )
    se = float(values.std()) / np.sqrt(values.size)
    exact, _ = exact_value_and_gradient(model, params, X_TINY, Y_TINY)
    assert abs(float(values.mean()) - float(exact)) < Z_MAX * se


@pytest.mark.parametrize("process,covariance", [("tp", "diagonal"), ("gp", "full")])
def test_elbo_gradient_is_unbiased(process, covariance):
    model = make(process, covariance)
    params = tiny_params(model)
    _, exact = exact_value_and_gradient(model, params, X_TINY, Y_TINY)
    assert_unbiased(svtp.objective(model, 3), params, X_TINY, Y_TINY, exact=exact, num=2000)


def test_power_dropping_the_scale_in_q_u_given_s2(monkeypatch):
    model = make("tp", "diagonal")
    params = tiny_params(model)
    _, exact = exact_value_and_gradient(model, params, X_TINY, Y_TINY)
    proper = svtp.latent_guide

    def unscaled(params, mean, variance):  # q(u | s2) = N(m, S): s2 drawn but not used
        return proper(params._replace(log_concentration=None, log_rate=None), mean, variance)

    monkeypatch.setattr(svtp, "latent_guide", unscaled)
    assert_biased(svtp.objective(model, 3), params, X_TINY, Y_TINY, exact=exact, num=2000)


# ------------------------------------------------------------------ (3) training end to end


def blobs(num_per_class, seed):
    rng = np.random.default_rng(seed)
    centers = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    y = np.repeat(np.arange(3), num_per_class)
    return (centers[y] + 0.5 * rng.normal(size=(len(y), 2))).astype(np.float32), y


@pytest.mark.parametrize("process", ["gp", "tp"])
def test_training_separates_three_blobs_and_refits_without_recompiling(process):
    net = nngp.mlp(1, "relu", b_std=1.0)
    traces = []

    def counted(x1, x2):  # counts traces of the compiled programs
        if isinstance(x1, jax.core.Tracer):
            traces.append(1)
        return rbf(x1, x2)

    kernel = counted if process == "tp" else net  # a function and an NNGP Network
    model = svtp.svtp(kernel, 3) if process == "tp" else svtp.svgp(kernel, 3)
    x_test, y_test = blobs(30, 1)
    count = None
    for seed in (0, 2):  # new data of the same shape: the same compiled program
        x, y = blobs(20, seed)
        result = svtp.fit(
            model,
            x,
            y,
            num_inducing=6,
            steps=100,
            key=key(5 + seed),
            batch_size=30,
            optimizer=optax.adam(0.03),
            progress_bar=False,
        )
        assert result.num_nonfinite == 0
        assert result.objective[-20:].mean() > result.objective[:20].mean() + 0.5
        log_probs = svtp.log_predictive(model, result.params, x_test, key=key(6), num_samples=200)
        np.testing.assert_allclose(jnp.exp(log_probs).sum(axis=1), 1.0, rtol=1e-4)
        assert svtp.accuracy(log_probs, y_test) >= 0.95
        assert svtp.negative_log_likelihood(log_probs, y_test) < 0.5
        count = len(traces) if count is None else count  # after the first fit and prediction
    assert len(traces) == count and (count > 0) == (process == "tp")
    assert svtp.objective(model, 60) == svtp.objective(model, 60)


def test_predictive_moments_interpolate_with_inducing_inputs_at_the_data():
    # M = n, Z = X, S -> 0: q(f(Z)) = N(m, ~0).
    model = svtp.svgp(rbf, 3)
    params = tiny_params(model)._replace(inducing=X_TINY, scale=jnp.full((3, 3), -8.0))
    mean, variance = svtp.predictive_moments(model, params, X_TINY)
    np.testing.assert_allclose(mean, params.mean.T, atol=2e-3)
    assert float(variance.max()) < 1e-3


# ------------------------------------------------------------------ errors


def test_errors():
    model = svtp.svtp(rbf, 3)
    x, y = blobs(3, 0)
    with pytest.raises(ValueError, match="outside 0..2"):
        svtp.init_params(model, x, np.where(y == 2, 3, y), 3)
    with pytest.raises(ValueError, match="integer class labels"):
        svtp.init_params(model, x, y + 0.5, 3)
    with pytest.raises(ValueError, match=r"y must have shape \(9,\)"):
        svtp.init_params(model, x, y[:5], 3)
    with pytest.raises(ValueError, match="num_inducing = 2 < num_classes = 3"):
        svtp.init_params(model, x, y, 2)
    with pytest.raises(ValueError, match="class 0 has 3 training points"):
        svtp.init_params(model, x, y, 12)
    with pytest.raises(ValueError, match="num_classes must be"):
        svtp.svgp(rbf, 1)
    with pytest.raises(ValueError, match="covariance must be"):
        svtp.svtp(rbf, 3, covariance="dense")
    with pytest.raises(ValueError, match="prior_rate"):
        svtp.svtp(rbf, 3, prior_rate=0.0)
    with pytest.raises(TypeError, match="kernel must be hashable"):
        svtp.svgp(nngp.mlp(1, W_std=jnp.array(1.5)), 3)
    with pytest.raises(ValueError, match="num_data"):
        svtp.objective(model, 0)
    params = svtp.init_params(model, x, y, 3)
    with pytest.raises(ValueError, match="log_concentration"):
        svtp.log_predictive(svtp.svgp(rbf, 3), params, x, key=key(0))
    with pytest.raises(ValueError, match="feature shape"):
        svtp.log_predictive(model, params, np.zeros((2, 3)), key=key(0))
    with pytest.raises(ValueError, match="params.mean"):
        svtp.log_predictive(svtp.svtp(rbf, 4), params, x, key=key(0))
    with pytest.raises(ValueError, match="x must have a leading batch axis"):
        svtp.fit(model, x[0], y[:1], num_inducing=3, steps=1, key=key(0))
