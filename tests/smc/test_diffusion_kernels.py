"""Each diffusion sampler's kernel alone: one ``step`` from a known state against a hand
computation with the same random draws.

The prior is ``N(0, I_2)`` under the VP schedule (``alpha^2 + sigma^2 = 1``), so its
noised score is ``-x`` and Tweedie's denoiser ``D(x, t) = alpha_t x`` in closed form; the
measurement is ``y = x_1 + 0.5 eps`` with ``y = 0.7``.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm

from ppl.smc import resampling
from ppl.smc.diffusion import GaussianMixture, measurement, vp
from tests.seeds import key

SCHEDULE = vp()
PRIOR = GaussianMixture(jnp.ones(1), jnp.zeros((1, 2)), 1.0).diffusion_prior(SCHEDULE)
A, Y, NOISE = np.array([[1.0, 0.0]]), 0.7, 0.5
OBSERVATION = measurement(A, jnp.array([Y]), NOISE)
X = jnp.array([[0.3, -1.0], [1.5, 0.2], [-0.8, 0.9], [0.1, 0.4]])
T, T_NEXT = jnp.float32(0.5), jnp.float32(0.4)
KEY = key(7)
ALPHA, SIGMA = float(SCHEDULE.alpha(T)), float(SCHEDULE.sigma(T))
ALPHA_NEXT, SIGMA_NEXT = float(SCHEDULE.alpha(T_NEXT)), float(SCHEDULE.sigma(T_NEXT))


def sampler(name):
    return importlib.import_module(f"ppl.smc.diffusion.{name}")


def ddpm_moments(x):
    """DDPM's bridge (DDIM, eta = 1) averaged over ``x_0 | x_t ~ N(alpha x, sigma^2 I)``, written
    out: mean and sd of p(x' | x), the exact reverse conditional of N(0, I)."""
    x = np.asarray(x, np.float64)
    denoised = ALPHA * x
    c = SIGMA_NEXT * np.sqrt(1 - (ALPHA * SIGMA_NEXT / (ALPHA_NEXT * SIGMA)) ** 2)
    eps = (x - ALPHA * denoised) / SIGMA
    x0_coefficient = ALPHA_NEXT - np.sqrt(SIGMA_NEXT**2 - c**2) * ALPHA / SIGMA
    return ALPHA_NEXT * denoised + np.sqrt(SIGMA_NEXT**2 - c**2) * eps, np.hypot(c, x0_coefficient * SIGMA)


def test_the_reverse_kernel_is_the_exact_reverse_conditional_of_a_gaussian():
    """For x_0 ~ N(0, I) the forward process is stationary with x_t = (alpha / alpha') x_t' +
    noise, so p(x' | x) = N((alpha / alpha') x, 1 - (alpha / alpha')^2)."""
    mean, std = ddpm_moments(X)
    ratio = ALPHA / ALPHA_NEXT
    np.testing.assert_allclose(mean, ratio * np.asarray(X), rtol=1e-6)
    np.testing.assert_allclose(std, np.sqrt(1 - ratio**2), rtol=1e-6)


def test_the_closed_forms_used_here():
    np.testing.assert_allclose(PRIOR.denoise(X[0], T), ALPHA * X[0], rtol=1e-5)
    np.testing.assert_allclose(PRIOR.score(X[0], T), -X[0], rtol=1e-5)


def test_dps_step():
    dps = sampler("dps")
    config = dps.Config(eta=1.0, guidance_scale=0.3)
    state = dps.State(X, jnp.full(4, -np.log(4)), jnp.zeros(()))
    new, info = dps.step(KEY, state, PRIOR, OBSERVATION, config, T, T_NEXT, False)
    mean, c = ddpm_moments(X)
    residual = Y - ALPHA * np.asarray(X)[:, 0]
    grad = np.stack([-ALPHA * np.sign(residual), np.zeros(4)], axis=1)  # grad of |y - alpha x_1|
    noise = np.asarray(jax.random.normal(KEY, X.shape))
    np.testing.assert_allclose(new.particles, mean + c * noise - 0.3 * grad, rtol=1e-4, atol=1e-5)
    assert float(info.ess) == 4.0


def test_afdps_sde_step():
    """The reverse kernel N(m, s^2 I) (m = (alpha / alpha') x, s^2 = 1 - (alpha / alpha')^2 for
    N(0, I)) times p(y | x') drawn exactly, weighted by N(y; m_1, sigma_y^2 + s^2) over the
    backward kernel's N(y; (alpha / alpha') x'_1, sigma_y^2 + b^2),
    b^2 = sigma^2 - (alpha / alpha')^2 sigma'^2."""
    afdps = sampler("afdps")
    config = afdps.Config("sde", 0.0, "systematic", 0.1, 1, 0.9)
    step = jax.jit(afdps.step, static_argnums=(4, 7))
    ratio = ALPHA / ALPHA_NEXT
    kernel_var, back_var = 1 - ratio**2, SIGMA**2 - ratio**2 * SIGMA_NEXT**2
    # the weights, given the particles drawn
    log_weights = np.log([0.1, 0.2, 0.3, 0.4])
    state = afdps.State(X, jnp.asarray(log_weights, jnp.float32), jnp.float32(-1.0))
    new, info = step(KEY, state, PRIOR, OBSERVATION, config, T, T_NEXT, False)
    x, x_next = np.asarray(X, np.float64), np.asarray(new.particles, np.float64)
    increments = norm.logpdf(Y, ratio * x[:, 0], np.sqrt(NOISE**2 + kernel_var)) - norm.logpdf(
        Y, ratio * x_next[:, 0], np.sqrt(NOISE**2 + back_var)
    )
    unnormalised = log_weights + increments
    np.testing.assert_allclose(new.log_weights, unnormalised - logsumexp(unnormalised), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(new.log_evidence), -1.0 + logsumexp(unnormalised), rtol=1e-5)
    assert not bool(info.resampled)
    # the move, from many copies of one particle: x'_1 ~ N(m_1, s^2) p(y | x'_1), x'_2 ~ N(m_2, s^2)
    num = 20_000
    copies = afdps.State(jnp.tile(X[1], (num, 1)), jnp.full(num, -np.log(num)), jnp.float32(0.0))
    draws = np.asarray(step(KEY, copies, PRIOR, OBSERVATION, config, T, T_NEXT, False)[0].particles)
    precision = 1 / kernel_var + 1 / NOISE**2
    means = [(ratio * float(X[1, 0]) / kernel_var + Y / NOISE**2) / precision, ratio * float(X[1, 1])]
    variances = np.array([1 / precision, kernel_var])
    assert np.all(np.abs(draws.mean(0) - means) <= 4 * np.sqrt(variances / num)), (draws.mean(0), means)
    np.testing.assert_allclose(draws.var(0) / variances, 1.0, atol=4 * np.sqrt(2 / num))


def test_tds_step():
    tds = sampler("tds")
    config = tds.Config(eta=1.0, ess_threshold=0.0, scheme="systematic", twist_fn=None)
    state = tds.init(KEY, PRIOR, OBSERVATION, config, jnp.array([T, T_NEXT]), 4)._replace(particles=X)
    # the twist at t: log N(y; alpha x_1, sigma_y^2 + (sigma / alpha)^2), at the denoiser alpha x

    def twist(x, alpha, sigma):
        return norm.logpdf(Y, alpha * x[:, 0], np.sqrt(NOISE**2 + (sigma / alpha) ** 2))

    def twist_grad(x, alpha, sigma):
        variance = NOISE**2 + (sigma / alpha) ** 2
        return np.stack([alpha * (Y - alpha * x[:, 0]) / variance, np.zeros(len(x))], axis=1)

    x = np.asarray(X, np.float64)
    state = state._replace(
        log_twist=jnp.asarray(twist(x, ALPHA, SIGMA), jnp.float32),
        twist_grad=jnp.asarray(twist_grad(x, ALPHA, SIGMA), jnp.float32),
        denoised=ALPHA * X,
        log_weights=jnp.full(4, -np.log(4), jnp.float32),
        log_evidence=jnp.float32(0.0),
    )
    new, _ = tds.step(KEY, state, PRIOR, OBSERVATION, config, T, T_NEXT, False)
    mean, c = ddpm_moments(x)
    shifted = mean + c**2 * twist_grad(x, ALPHA, SIGMA)
    noise = np.asarray(jax.random.normal(jax.random.split(KEY)[0], X.shape))
    proposal = shifted + c * noise
    np.testing.assert_allclose(new.particles, proposal, rtol=1e-4, atol=1e-5)
    # weight: p(x' | x) p~_{t'}(y | x') / (q(x' | x) p~_t(y | x))
    kernel_ratio = (np.sum((proposal - shifted) ** 2, 1) - np.sum((proposal - mean) ** 2, 1)) / (2 * c**2)
    increments = kernel_ratio + twist(proposal, ALPHA_NEXT, SIGMA_NEXT) - twist(x, ALPHA, SIGMA)
    np.testing.assert_allclose(new.log_weights, increments - logsumexp(increments), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(
        float(new.log_evidence), logsumexp(increments) - np.log(4), rtol=1e-4, atol=1e-4
    )


def test_mcgdiff_step():
    """Potentials h(x'; x) = N(y; alpha x_1 + s (x'_1 - m_1), sigma_y^2 + r): x_0 | x_t, x' under
    x_0 | x_t ~ N(alpha x, sigma^2) (the prior's) and the bridge x' = a x_0 + ... + N(0, c^2)."""
    mcgdiff = sampler("mcgdiff")
    config = mcgdiff.Config(eta=1.0, scheme="systematic", ess_threshold=0.0)
    x = np.asarray(X, np.float64)
    log_weights = np.log([0.4, 0.3, 0.2, 0.1])
    previous_potential = np.array([-1.0, -2.0, -0.5, -3.0])
    state = mcgdiff.State(
        X, jnp.asarray(previous_potential, jnp.float32), jnp.asarray(log_weights, jnp.float32), 0.0
    )
    new, info = mcgdiff.step(KEY, state, PRIOR, OBSERVATION, config, T, T_NEXT, False)
    mean, std = ddpm_moments(x)
    c = SIGMA_NEXT * np.sqrt(1 - (ALPHA * SIGMA_NEXT / (ALPHA_NEXT * SIGMA)) ** 2)
    a = np.sqrt(std**2 - c**2) / SIGMA  # std^2 = c^2 + a^2 sigma^2
    slope, residual = a * SIGMA**2 / std**2, c**2 * SIGMA**2 / std**2
    # the predictive of h under the kernel: N(y; alpha x_1, sigma_y^2 + sigma^2)
    predictive = norm.logpdf(Y, ALPHA * x[:, 0], np.sqrt(NOISE**2 + SIGMA**2))
    increments = log_weights + predictive - previous_potential
    np.testing.assert_allclose(float(new.log_evidence), logsumexp(increments), rtol=1e-4, atol=1e-4)
    weights = np.exp(increments - logsumexp(increments))
    np.testing.assert_allclose(float(info.ess), 1 / np.sum(weights**2), rtol=1e-4)
    np.testing.assert_allclose(np.exp(new.log_weights), weights, rtol=1e-4)  # not resampled
    potential_mean = ALPHA * x[:, 0] + slope * (np.asarray(new.particles, np.float64)[:, 0] - mean[:, 0])
    np.testing.assert_allclose(
        new.log_potential, norm.logpdf(Y, potential_mean, np.sqrt(NOISE**2 + residual)), rtol=1e-4
    )


def test_fps_step_and_finalize():
    fps = sampler("fps")
    config = fps.Config(eta=1.0, c_rate=0.9, particles_per_filter=3, scheme="multinomial")
    times = SCHEDULE.timesteps(4)
    init = jax.jit(fps.init, static_argnums=(3, 5))
    step = jax.jit(fps.step, static_argnums=(4, 7))
    state = init(KEY, PRIOR, OBSERVATION, config, times, 2)  # 2 filters of 3 particles
    assert state.particles.shape == (2, 3, 2) and state.path.shape == (2, 5, 1)
    new, info = step(KEY, state, PRIOR, OBSERVATION, config, times[0], times[1], False)
    assert int(new.index) == 1
    # ESS: each filter's predictive weights for its own y_{t'}, averaged, scaled to N / M
    alpha, sigma = float(SCHEDULE.alpha(times[0])), float(SCHEDULE.sigma(times[0]))
    alpha_next, sigma_next = float(SCHEDULE.alpha(times[1])), float(SCHEDULE.sigma(times[1]))
    ess = []
    for j in range(2):
        x = np.asarray(state.particles[j], np.float64)
        denoised = alpha * x
        c = sigma_next * np.sqrt(1 - (alpha * sigma_next / (alpha_next * sigma)) ** 2)
        mean = alpha_next * denoised + np.sqrt(sigma_next**2 - c**2) * (x - alpha * denoised) / sigma
        a = alpha_next - np.sqrt(sigma_next**2 - c**2) * alpha / sigma
        kernel_variance = c**2 + a**2 * sigma**2  # Var[x_0 | x_t] = sigma^2 for N(0, I)
        log_w = norm.logpdf(
            float(state.path[j, 1, 0]), mean[:, 0], np.sqrt(kernel_variance + alpha_next**2 * NOISE**2)
        )
        w = np.exp(log_w - logsumexp(log_w))
        ess.append(1 / np.sum(w**2))
    np.testing.assert_allclose(float(info.ess), np.mean(ess) * 2 / 3, rtol=1e-4)
    particles, log_weights, log_evidence = jax.jit(fps.finalize, static_argnums=2)(KEY, new, config)
    assert particles.shape == (2, 2)
    for j in range(2):  # each draw is one of its filter's particles
        assert np.min(np.abs(np.asarray(new.particles[j]) - np.asarray(particles[j])).sum(-1)) == 0
    np.testing.assert_allclose(log_weights, -np.log(2))
    assert float(log_evidence) == 0.0


def test_resampling_in_a_step_is_the_shared_resampling_module():
    """With threshold 1 every TDS step resamples with ppl.smc.resampling (same key, same ancestors)."""
    tds = sampler("tds")
    config = tds.Config(eta=1.0, ess_threshold=1.0, scheme="systematic", twist_fn=None)
    state = tds.init(KEY, PRIOR, OBSERVATION, config, jnp.array([T, T_NEXT]), 4)
    resampled, info = tds.step(KEY, state, PRIOR, OBSERVATION, config, T, T_NEXT, False)
    kept, _ = tds.step(KEY, state, PRIOR, OBSERVATION, config._replace(ess_threshold=0.0), T, T_NEXT, False)
    ancestors = resampling.resample(jax.random.split(KEY)[1], kept.log_weights, "systematic")
    assert bool(info.resampled)
    np.testing.assert_array_equal(resampled.particles, kept.particles[ancestors])
    np.testing.assert_allclose(resampled.log_weights, -np.log(4))
