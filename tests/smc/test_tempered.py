"""Adaptive tempered SMC against conjugate Bayesian linear regression (closed-form evidence
and posterior)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal, norm
from scipy.stats import t as student_t

import ppl
from ppl import dist
from tests.seeds import key, seed

RNG = np.random.default_rng(seed(0))
X = RNG.normal(size=(20, 3))
SIGMA, TAU = 0.5, 2.0
Y = X @ np.array([1.0, -2.0, 0.5]) + SIGMA * RNG.normal(size=20)


def regression(X, y=None):
    beta = ppl.sample("beta", dist.Normal(jnp.zeros(3), TAU).to_event(1))
    with ppl.plate("obs", X.shape[0]):
        ppl.sample("y", dist.Normal(X @ beta, SIGMA), obs=y)


@pytest.fixture(scope="module")
def runs():
    # 12 independent runs (0.3 s each once compiled): the evidence check takes its standard
    # error from their spread
    return [ppl.smc.tempered(regression, X, y=Y, key=key(seed), num_particles=1000) for seed in range(12)]


def test_log_evidence_within_monte_carlo_error(runs):
    exact = multivariate_normal(np.zeros(20), TAU**2 * X @ X.T + SIGMA**2 * np.eye(20)).logpdf(Y)
    estimates = np.array([float(r.log_evidence) for r in runs])
    # MC standard error of the mean of 12 independent runs, from their spread; with the
    # standard error itself estimated, the bound is Student's t (11 dof) at the false-alarm
    # probability of 4 normal standard errors (6.3e-5, two-sided): 6.2 se. Over 24 runs:
    # per-run sd 0.06, bias -0.001 (the log of an unbiased estimate is biased by -var/2).
    se = estimates.std(ddof=1) / np.sqrt(len(estimates))
    bound = student_t.ppf(norm.cdf(4.0), len(estimates) - 1) * se
    assert abs(estimates.mean() - exact) <= bound, (estimates, exact, bound)
    assert se < 0.05  # the estimator is precise, so the check has power (se ~0.018)


def test_posterior_moments_within_monte_carlo_error(runs):
    precision = X.T @ X / SIGMA**2 + np.eye(3) / TAU**2
    covariance = np.linalg.inv(precision)
    mean = covariance @ X.T @ Y / SIGMA**2
    for result in runs[:2]:
        w = np.asarray(result.log_weights)
        w = np.exp(w - w.max())
        w /= w.sum()
        beta = np.asarray(result.samples["beta"])
        estimate = w @ beta
        # posterior sd / sqrt(ESS) understates the standard error: the particles share
        # ancestors after resampling. Over 24 runs the estimates' spread was 1.0-1.2 times
        # it, so 6 of these are at least 5 true standard errors.
        tolerance = 6 * np.sqrt(np.diag(covariance) / result.ess)
        assert np.all(np.abs(estimate - mean) <= tolerance)
        # the variances: relative error sd 0.04 per run over 24 runs, so 0.3 is 7 sd
        assert np.allclose(w @ (beta - mean) ** 2, np.diag(covariance), rtol=0.3)


def test_same_key_same_result_and_arviz_round_trip(runs, tmp_path):
    again = ppl.smc.tempered(regression, X, y=Y, key=key(0), num_particles=1000)
    assert float(again.log_evidence) == float(runs[0].log_evidence)
    idata = runs[0].to_arviz(key(1))
    assert idata.posterior["beta"].shape == (1, 1000, 3)
    ppl.save(idata, str(tmp_path / "smc.nc"))
    assert ppl.load(str(tmp_path / "smc.nc")).posterior.identical(idata.posterior)


def test_bad_arguments():
    with pytest.raises(ValueError, match="target_ess"):
        ppl.smc.tempered(regression, X, y=Y, key=key(0), target_ess=1.5)
    with pytest.raises(ValueError, match="observed site"):
        ppl.smc.tempered(regression, X, key=key(0))


def test_new_data_of_the_same_shape_does_not_retrace():
    calls = []

    def counted(X, y=None):
        calls.append(1)
        regression(X, y)

    def run(y):
        before = len(calls)
        ppl.smc.tempered(counted, X, y=y, key=key(0), num_particles=100)
        return len(calls) - before

    first = run(Y)
    again = run(Y + 0.5)  # new data: only the host-side compile runs the model
    assert again < first
    assert run(Y - 0.5) == again


def test_one_step_is_blackjax_adaptive_tempered_kernel():
    """The kernel alone: one step from prior particles equals BlackJAX's kernel called
    directly with the same key, and the evidence increment is the log mean weight."""
    import importlib

    import blackjax
    from blackjax.smc import adaptive_tempered

    tempered = importlib.import_module("ppl.smc.tempered")
    compiled = ppl.compile(regression, X, y=Y)
    settings = tempered.Settings(num_particles=64)
    particles = tempered.initial_particles(key(0), compiled, 64)
    state = tempered.init(particles)
    prior = lambda u: compiled.logdensity(u) - compiled.log_likelihood(u)  # noqa: E731
    step = jax.jit(tempered.step, static_argnums=(2, 3, 4))
    new, info = step(key(1), state, prior, compiled.log_likelihood, settings)
    blackjax_kernel = adaptive_tempered.build_kernel(
        prior,
        compiled.log_likelihood,
        blackjax.hmc.build_kernel(),
        blackjax.hmc.init,
        ppl.smc.resampling.SCHEMES["systematic"],
        0.5,
    )
    parameters = {
        "step_size": jnp.array([0.5 * 3**-0.25]),
        "inverse_mass_matrix": (jnp.var(particles, axis=0) + 1e-8)[None],
        "num_integration_steps": jnp.array([10]),
    }
    expected, expected_info = jax.jit(blackjax_kernel, static_argnums=2)(key(1), state.smc, 5, parameters)
    np.testing.assert_array_equal(new.smc.particles, expected.particles)
    assert float(info.temperature) == float(expected.tempering_param) > 0
    assert float(new.log_evidence) == float(expected_info.log_likelihood_increment)
    assert abs(float(info.ess) - 1 / float(jnp.sum(expected.weights**2))) < 1e-3 * 64
    # the chosen temperature keeps the ESS of the incremental weights at target_ess * N
    increments = info.temperature * jax.vmap(compiled.log_likelihood)(particles)
    assert abs(float(ppl.smc.resampling.ess(increments)) - 32) < 1.0


def test_islands_merge_by_evidence():
    """Independent islands combine exactly: the merged evidence is the mean of the island
    evidences (an average of unbiased estimates of p(y)) and island j's weight share is
    its evidence share."""
    from scipy.special import logsumexp

    result = ppl.smc.tempered(regression, X, y=Y, key=key(0), num_particles=1000, num_islands=4)
    per_island = np.asarray(result.log_evidence_per_island)
    assert per_island.shape == (4,) and result.temperatures.shape[0] == 4
    np.testing.assert_allclose(result.log_evidence, logsumexp(per_island) - np.log(4), rtol=1e-5)
    # island j holds particles [250 j, 250 (j + 1)); its weight share is Z_j / sum Z
    shares = np.exp(logsumexp(np.asarray(result.log_weights).reshape(4, 250), axis=1))
    np.testing.assert_allclose(shares, np.exp(per_island - logsumexp(per_island)), rtol=1e-4)


def test_arviz_export_carries_the_histories_and_the_log_likelihood(runs):
    idata = runs[0].to_arviz(key(1), num_samples=300)
    stats = idata.sample_stats
    assert stats["temperature"].dims == ("chain", "island", "tempering_step")
    assert float(stats["temperature"].values[0, 0, -1]) == 1.0
    assert stats["log_evidence"].values[0] == runs[0].log_evidence
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "obs")
    beta = idata.posterior["beta"].values[0]  # (300, 3)
    expected = -0.5 * ((Y - beta @ X.T) / SIGMA) ** 2 - np.log(SIGMA) - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0], expected, rtol=1e-4, atol=1e-4)
    assert set(idata.groups()) >= {
        "posterior",
        "sample_stats",
        "log_likelihood",
        "observed_data",
        "constant_data",
    }
