"""The shared reverse kernel: bridge variance plus the posterior variance of ``x_0``.

Unconditional sampling (DPS with guidance off runs the bare kernel) from laws whose
moments are known. Tolerances: the sample variance of ``n`` Gaussian draws has relative
standard deviation ``sqrt(2 / n)`` and the sample mean standard deviation ``sqrt(v / n)``;
every check allows 4 of them (plus 1% for the time discretisation where stated), and the
plain DDPM kernel (``denoiser_variance="zero"``), which loses 10-25% of the variance,
is shown to fail the same checks.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.smc import diffusion as D
from tests.seeds import key

NUM = 20_000
SCHEDULE = D.vp()
# The measurement is ignored (guidance 0): DPS then samples the prior's reverse chain.
OBSERVATION_1D = D.measurement(np.ones((1, 1)), np.zeros(1), 1.0)
OBSERVATION_3D = D.measurement(np.eye(3)[:1], np.zeros(1), 1.0)


def gaussian_prior(denoiser_variance):
    """N(m, v I) in d = 3 through its noised score only (no exact variance given)."""
    mean, variance = jnp.array([1.0, -2.0, 0.5]), 0.4

    def score(x, t):
        alpha, sigma = SCHEDULE.alpha(t), SCHEDULE.sigma(t)
        return (alpha * mean - x) / (alpha**2 * variance + sigma**2)

    noise_end = D.GaussianMixture(jnp.ones(1), mean[None], variance).noised(
        SCHEDULE.alpha(SCHEDULE.t_max), SCHEDULE.sigma(SCHEDULE.t_max)
    )
    prior = D.DiffusionPrior(
        SCHEDULE, 3, score_fn=score, noise_end=noise_end, denoiser_variance=denoiser_variance
    )
    return prior, mean, variance


def unconditional(prior, observation, num_steps, seed=0):
    result = D.dps(
        prior, observation, key=key(seed), num_particles=NUM, num_steps=num_steps, guidance_scale=0.0
    )
    return np.asarray(result.particles, np.float64)


@pytest.mark.parametrize("num_steps", [20, 100])
def test_gaussian_data_is_sampled_exactly_at_any_step_count(num_steps):
    prior, mean, variance = gaussian_prior("jacobian")
    x = unconditional(prior, OBSERVATION_3D, num_steps)
    np.testing.assert_allclose(x.mean(0), mean, atol=4 * np.sqrt(variance / NUM))
    np.testing.assert_allclose(x.var(0) / variance, 1.0, atol=4 * np.sqrt(2 / NUM))


def test_the_plain_ddpm_kernel_fails_the_gaussian_check():
    prior, _, variance = gaussian_prior("zero")
    x = unconditional(prior, OBSERVATION_3D, 20)
    assert np.all(np.abs(x.var(0) / variance - 1.0) > 4 * np.sqrt(2 / NUM))


def test_the_jacobian_variance_equals_the_exact_one_for_gaussian_data():
    """dim <= 32 takes the exact trace; a Rademacher probe is exact for a multiple of I."""
    mixture = D.GaussianMixture(jnp.ones(1), jnp.full((1, 40), 0.3), 0.4)
    for dim, gmm in ((3, D.GaussianMixture(jnp.ones(1), jnp.ones((1, 3)), 0.4)), (40, mixture)):
        exact = gmm.diffusion_prior(SCHEDULE)
        estimated = D.DiffusionPrior(SCHEDULE, dim, score_fn=exact.network, params=gmm)
        x = jax.random.normal(key(1), (dim,))
        np.testing.assert_allclose(
            estimated.denoiser_variance(x, 0.3), exact.denoiser_variance(x, 0.3), rtol=1e-4
        )


def test_mixture_denoiser_variance_is_the_trace_of_the_denoiser_jacobian():
    """Cov[x_0 | x_t] = (sigma^2 / alpha) dD/dx (second-order Tweedie), D from the exact score."""
    gmm = D.GaussianMixture(
        jnp.array([0.2, 0.5, 0.3]),
        jnp.array([[-2.0, 0.0, 1.0], [1.0, 1.5, -1.0], [0.0, -2.0, 2.0]]),
        jnp.array([0.3, 0.5, 0.8]),
    )
    prior = gmm.diffusion_prior(SCHEDULE)
    for t in (0.05, 0.3, 0.8):
        alpha, sigma = float(SCHEDULE.alpha(t)), float(SCHEDULE.sigma(t))
        x = jax.random.normal(key(2), (3,)) * 2
        jacobian = jax.jacfwd(prior.denoise)(x, t)
        expected = sigma**2 / alpha * jnp.trace(jacobian) / 3
        np.testing.assert_allclose(gmm.denoiser_variance(x, alpha, sigma), expected, rtol=1e-3)


TWO_MODES = D.GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[-4.0], [4.0]]), 0.3)


def component_variances(x):
    return np.array([x[x < 0].var(), x[x > 0].var()]) / 0.3


def test_mixture_component_variances_at_100_steps():
    """Within 1% plus MC error (each component has about NUM / 2 draws)."""
    x = unconditional(TWO_MODES.diffusion_prior(SCHEDULE), OBSERVATION_1D, 100)[:, 0]
    np.testing.assert_allclose(component_variances(x), 1.0, atol=0.01 + 4 * np.sqrt(4 / NUM))
    assert abs(np.mean(x > 0) - 0.5) < 4 * np.sqrt(0.25 / NUM)


def test_the_plain_ddpm_kernel_fails_the_mixture_check():
    exact = TWO_MODES.diffusion_prior(SCHEDULE)
    plain = D.DiffusionPrior(
        SCHEDULE,
        1,
        score_fn=exact.network,
        params=TWO_MODES,
        noise_end=exact.noise_end,
        denoiser_variance="zero",
    )
    x = unconditional(plain, OBSERVATION_1D, 100)[:, 0]
    assert np.all(np.abs(component_variances(x) - 1.0) > 0.01 + 4 * np.sqrt(4 / NUM))


def test_denoiser_variance_rejects_unknown_names():
    with pytest.raises(ValueError, match="denoiser_variance must be"):
        D.DiffusionPrior(SCHEDULE, 2, score_fn=lambda x, t: -x, denoiser_variance="diagonal")


def test_probe_estimate_of_a_correlated_gaussian_is_unbiased_over_particles():
    """d = 64 > 32 (one Rademacher probe per particle and step): N(0, S) with correlation 0.9
    has Cov[x_0 | x_t] independent of x_t, so the mean of the estimates over 2000 particles is
    within 4 standard errors of the exact value (one fixed probe: 38% low at t = 0.7)."""
    dim = 64
    covariance = 0.1 * jnp.eye(dim) + 0.9 * jnp.ones((dim, dim))
    gaussian = D.FullCovarianceMixture(jnp.ones(1), jnp.zeros((1, dim)), covariance[None])
    exact = gaussian.diffusion_prior(SCHEDULE)
    estimated = D.DiffusionPrior(SCHEDULE, dim, score_fn=exact.network, params=gaussian)
    t = 0.7
    x = gaussian.noised(SCHEDULE.alpha(t), SCHEDULE.sigma(t)).sample(key(3), 2000)
    estimates = np.asarray(jax.jit(jax.vmap(lambda z: estimated.denoiser_variance(z, t)))(x), np.float64)
    truth = float(exact.denoiser_variance(x[0], t))
    assert abs(estimates.mean() - truth) <= 4 * estimates.std() / np.sqrt(len(estimates)), (
        estimates.mean(),
        truth,
    )
