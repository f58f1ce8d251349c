"""The full-covariance Gaussian-mixture oracle against autodiff, quadrature, the isotropic
oracle, a float64 Kalman update and a sampler.

Tolerances: quadrature on a 2-D grid of spacing 0.05 (a fifth of the smallest posterior
standard deviation; the Riemann sum of a Gaussian is then exact to ``exp(-2 pi^2 / 0.2^2)``)
is exact to float32 round-off; Monte Carlo checks allow 5 standard errors estimated from the
draws themselves (any key); the sampler check is the component-weight TV <= 0.1 of
``tests/smc/test_diffusion.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.smc import diffusion as D
from tests.seeds import key

SCHEDULE = D.vp()
TIMES = (0.05, 0.3, 0.9)


@pytest.fixture(scope="module")
def correlated():
    return D.correlated_mixture_problem(0, 4, 2)


def two_dimensional_mixture():
    """Three correlated components in 2-D, one of them strongly so (correlation 0.9)."""
    covariances = jnp.array([[[1.0, 0.9], [0.9, 1.0]], [[0.6, -0.3], [-0.3, 0.4]], [[0.3, 0.1], [0.1, 1.5]]])
    means = jnp.array([[-2.5, 0.5], [2.0, -1.0], [0.5, 2.5]])
    return D.FullCovarianceMixture(jnp.array([0.2, 0.5, 0.3]), means, covariances)


def two_dimensional_observations():
    """A row ``(1, 2)`` and a mask observing the second coordinate."""
    return {
        "matrix": D.measurement(jnp.array([[0.8, -0.6]]), jnp.array([1.2]), 0.5),
        "mask": D.measurement(D.MaskOperator(np.array([False, True])), jnp.array([0.7]), 0.4),
    }


def grid_points(half_width=10.0, spacing=0.05):
    axis = np.arange(-half_width, half_width + spacing / 2, spacing)
    return np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2), spacing**2


def log_integral(log_values, cell) -> float:
    """``log sum exp(log_values) * cell`` in float64."""
    log_values = np.asarray(log_values, np.float64)
    top = log_values.max()
    return float(top + np.log(np.sum(np.exp(log_values - top)) * cell))


def kalman_reference(mixture, matrix, y, noise_std):
    """The textbook Kalman update of every component in float64: weights, means, covariances."""
    matrix, y = np.asarray(matrix, np.float64), np.asarray(y, np.float64)
    log_weights, means, covariances = [], [], []
    for w, m, sigma in zip(
        np.asarray(mixture.weights, np.float64),
        np.asarray(mixture.means, np.float64),
        np.asarray(mixture.covariances, np.float64),
        strict=True,
    ):
        s = matrix @ sigma @ matrix.T + noise_std**2 * np.eye(len(y))
        gain = sigma @ matrix.T @ np.linalg.inv(s)
        residual = y - matrix @ m
        log_weights.append(
            np.log(w) - 0.5 * (residual @ np.linalg.solve(s, residual) + np.linalg.slogdet(2 * np.pi * s)[1])
        )
        means.append(m + gain @ residual)
        covariances.append(sigma - gain @ matrix @ sigma)
    log_weights = np.array(log_weights)
    return np.exp(log_weights - np.logaddexp.reduce(log_weights)), np.array(means), np.array(covariances)


def dense(observation, dim):
    return np.asarray(jax.vmap(observation.forward.apply, in_axes=1, out_axes=1)(jnp.eye(dim)))


@jax.jit
def prior_checks(prior, x):
    """Per time in ``TIMES``: the prior's score and autodiff's, the exact denoiser variance and
    ``(sigma^2 / alpha) tr(dD/dx) / d`` (Tweedie's second-order formula)."""
    rows = []
    for t in TIMES:
        alpha, sigma = SCHEDULE.alpha(t), SCHEDULE.sigma(t)
        noised = prior.params.noised(alpha, sigma)
        trace = jnp.trace(jax.jacfwd(prior.denoise)(x, t))
        rows.append(
            (
                prior.score(x, t),
                jax.grad(noised.log_density)(x),
                prior.denoiser_variance(x, t),
                sigma**2 / alpha * trace,
            )
        )
    return rows


@pytest.mark.parametrize("diagonal", [False, True])
def test_score_and_denoiser_variance_equal_autodiff(correlated, diagonal):
    mixture = correlated[0]
    if diagonal:
        mixture = D.FullCovarianceMixture(
            mixture.weights, mixture.means, jnp.array([[0.2, 1.0, 0.5, 3.0]] * 4)
        )
    for i in range(3):
        x = 4 * jax.random.normal(key(i), (4,))
        for score, gradient, variance, trace in prior_checks(mixture.diffusion_prior(SCHEDULE), x):
            np.testing.assert_allclose(score, gradient, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(variance, trace / 4, rtol=1e-3, atol=1e-5)


@jax.jit
def oracle_values(mixture, observation, x):
    """What the two oracles must agree on, at ``x`` and the times in ``TIMES``."""
    values = {"score": [], "denoiser_variance": [], "twist": []}
    for t in TIMES:
        alpha, sigma = SCHEDULE.alpha(t), SCHEDULE.sigma(t)
        values["score"].append(mixture.noised(alpha, sigma).score(x))
        values["denoiser_variance"].append(mixture.denoiser_variance(x, alpha, sigma))
        values["twist"].append(mixture.noised_log_likelihood(observation, SCHEDULE)(x, t))
    posterior = mixture.posterior(observation)
    values.update(
        weights=posterior.weights,
        means=posterior.means,
        log_evidence=posterior.log_evidence,
        log_component_densities=posterior.log_component_densities(x),
    )
    return values


@pytest.mark.parametrize("form", ["diagonal", "full"])
@pytest.mark.parametrize("kind", ["matrix", "mask"])
def test_isotropic_covariances_reduce_to_the_isotropic_oracle(form, kind):
    rng = np.random.default_rng(0)
    variances = rng.uniform(0.5, 2.0, 5)
    isotropic = D.GaussianMixture(rng.uniform(0.2, 1.0, 5), 3 * rng.normal(size=(5, 6)), variances)
    covariances = (
        variances[:, None] * np.ones(6) if form == "diagonal" else variances[:, None, None] * np.eye(6)
    )
    full = D.FullCovarianceMixture(isotropic.weights, isotropic.means, covariances)
    forward = rng.normal(size=(3, 6)) if kind == "matrix" else D.MaskOperator(np.arange(6) % 2 == 0)
    observation = D.measurement(forward, isotropic.means[1, :3] + 0.3, 0.4, dim=6)
    x = jax.random.normal(key(0), (6,))
    ours, theirs = oracle_values(full, observation, x), oracle_values(isotropic, observation, x)
    tolerances = {"score": 1e-4, "means": 1e-4, "weights": 1e-5}
    for name, value in ours.items():
        np.testing.assert_allclose(
            value, theirs[name], rtol=1e-5, atol=tolerances.get(name, 0.0), err_msg=name
        )


@pytest.mark.parametrize("kind", ["matrix", "mask"])
def test_posterior_density_and_evidence_equal_quadrature(kind):
    mixture, observation = two_dimensional_mixture(), two_dimensional_observations()[kind]
    posterior = mixture.posterior(observation)
    points, cell = grid_points()
    log_joint = jax.jit(jax.vmap(lambda x: mixture.log_density(x) + observation.log_likelihood(x)))(points)
    log_evidence = log_integral(log_joint, cell)
    np.testing.assert_allclose(float(posterior.log_evidence), log_evidence, atol=1e-5)
    brute = np.exp(np.asarray(log_joint, np.float64) - log_evidence)
    exact = np.exp(np.asarray(jax.jit(jax.vmap(posterior.log_density))(points)))
    np.testing.assert_allclose(exact, brute, atol=1e-5 * brute.max())


@pytest.mark.parametrize("kind", ["matrix", "mask"])
def test_noised_likelihood_equals_quadrature(kind):
    """``p(y | x_t) = int p(y | x_0) p(x_0) N(x_t; alpha x_0, sigma^2 I) dx_0 / p(x_t)``."""
    mixture, observation = two_dimensional_mixture(), two_dimensional_observations()[kind]
    twist = jax.jit(mixture.noised_log_likelihood(observation, SCHEDULE))
    points, cell = grid_points()
    log_prior = jax.jit(jax.vmap(mixture.log_density))(points)
    log_likelihood = jax.jit(jax.vmap(observation.log_likelihood))(points)
    for i, t in enumerate((0.1, 0.3, 0.6)):
        alpha, sigma = SCHEDULE.alpha(t), SCHEDULE.sigma(t)
        x = alpha * mixture.sample(key(i), 1)[0] + sigma * jax.random.normal(key(10 + i), (2,))
        log_transition = -0.5 * jnp.sum((x - alpha * points) ** 2, -1) / sigma**2
        expected = log_integral(log_prior + log_transition + log_likelihood, cell) - log_integral(
            log_prior + log_transition, cell
        )
        np.testing.assert_allclose(float(twist(x, t)), expected, atol=1e-4)


@pytest.mark.parametrize("inpainting", [False, True])
def test_posterior_equals_the_float64_kalman_update(inpainting):
    mixture, observation, _ = D.correlated_mixture_problem(5, 6, 3, inpainting=inpainting)
    weights, means, covariances = kalman_reference(
        mixture, dense(observation, 6), observation.y, observation.noise_std
    )
    posterior = jax.jit(type(mixture).posterior)(mixture, observation)
    np.testing.assert_allclose(posterior.weights, weights, atol=1e-5)
    np.testing.assert_allclose(posterior.means, means, atol=1e-4)
    np.testing.assert_allclose(posterior.covariances, covariances, atol=1e-5)


def test_posterior_draws_have_the_exact_mean_and_covariance(correlated):
    """Against the float64 Kalman reference; 5 standard errors, estimated from the draws."""
    mixture, observation, _ = correlated
    weights, means, covariances = kalman_reference(
        mixture, dense(observation, 4), observation.y, observation.noise_std
    )
    mean = weights @ means
    covariance = np.einsum("k,kij->ij", weights, covariances + means[:, :, None] * means[:, None, :])
    covariance -= np.outer(mean, mean)
    n = 40_000
    posterior = jax.jit(type(mixture).posterior)(mixture, observation)
    draws = np.asarray(jax.jit(type(posterior).sample, static_argnums=2)(posterior, key(0), n), np.float64)
    centred = draws - draws.mean(0)
    products = centred[:, :, None] * centred[:, None, :]
    assert np.all(np.abs(draws.mean(0) - mean) <= 5 * draws.std(0) / np.sqrt(n))
    assert np.all(np.abs(products.mean(0) - covariance) <= 5 * products.std(0) / np.sqrt(n))


def test_tds_with_the_exact_twist_finds_the_component_weights(correlated):
    """Three posterior components (weights 0.20, 0.47, 0.33; the prior's TV to them is 0.32).
    Over keys 0-7: TV 0.003-0.034, log-evidence error -0.05 to 0.01."""
    mixture, observation, _ = correlated
    posterior = mixture.posterior(observation)
    result = D.tds(
        mixture.diffusion_prior(SCHEDULE),
        observation,
        key=key(0),
        num_particles=2000,
        num_steps=50,
        twist_fn=mixture.noised_log_likelihood(observation, SCHEDULE),
    )
    assert float(posterior.component_error(result.particles, result.weights)) <= 0.1
    assert abs(float(result.log_evidence) - float(posterior.log_evidence)) < 0.25


def test_bad_covariances_give_clear_errors():
    weights, means = jnp.ones(2), jnp.zeros((2, 2))
    with pytest.raises(ValueError, match=r"covariances must have shape \(K, d, d\) = \(2, 2, 2\)"):
        D.FullCovarianceMixture(weights, means, jnp.ones((2, 3, 3)))
    with pytest.raises(ValueError, match=r"covariances\[1\] .* not symmetric"):
        D.FullCovarianceMixture(weights, means, jnp.array([jnp.eye(2), [[1.0, 0.5], [0.0, 1.0]]]))
    with pytest.raises(ValueError, match=r"covariances\[0\] .* not positive definite"):
        D.FullCovarianceMixture(weights, means, jnp.array([[[1.0, 2.0], [2.0, 1.0]], jnp.eye(2)]))
    with pytest.raises(ValueError, match=r"covariances\[1\] \(a diagonal, shape \(2, 2\)\) has nonpositive"):
        D.FullCovarianceMixture(weights, means, jnp.array([[1.0, 1.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"weights have shape \(3,\)"):
        D.FullCovarianceMixture(jnp.ones(3), means, jnp.ones((2, 2)))
    with pytest.raises(ValueError, match=r"weights \(shape \(2,\)\) must be nonnegative"):
        D.FullCovarianceMixture(jnp.array([1.0, -0.5]), means, jnp.ones((2, 2)))
