"""NUTS/HMC: exact conjugate posteriors, the posteriordb eight-schools reference,
determinism, no recompilation on new data, and warnings with counts.

Tolerances are Monte Carlo standard errors from ArviZ's ESS: a mean is within
5 * sd / sqrt(ess_mean); a variance within 5 * sd((x - m)^2) / sqrt(ess of (x - m)^2).
"""

import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
from ppl import dist
from tests.models import NUTS_SAMPLE_STATS, SIGMA, Y, eight_schools
from tests.seeds import key, seed

RUN = {"chains": 4, "warmup": 500, "draws": 1000}


def assert_moments(draws: np.ndarray, mean: float, variance: float, k: float = 5.0):
    """draws: (chains, draws). Mean and variance within k Monte Carlo standard errors."""
    ess_mean = float(az.ess(draws))
    mcse_mean = draws.std() / np.sqrt(ess_mean)
    assert abs(draws.mean() - mean) < k * mcse_mean, (draws.mean(), mean, mcse_mean)
    squared = (draws - draws.mean()) ** 2
    mcse_var = squared.std() / np.sqrt(float(az.ess(squared)))
    assert abs(draws.var() - variance) < k * mcse_var, (draws.var(), variance, mcse_var)


def normal_normal(y, prior_sd=2.0, noise_sd=1.0):
    mu = ppl.sample("mu", dist.Normal(1.0, prior_sd))
    with ppl.plate("n", y.shape[0]):
        ppl.sample("y", dist.Normal(mu, noise_sd), obs=y)


def test_normal_normal_conjugate_posterior():
    y = np.random.default_rng(seed(1)).normal(0.5, 1.0, size=20)
    posterior = ppl.nuts(normal_normal, y, key=key(0), **RUN)
    precision = 1 / 2.0**2 + len(y) / 1.0**2
    mean = (1.0 / 2.0**2 + y.sum() / 1.0**2) / precision
    assert_moments(posterior.samples["mu"], mean, 1 / precision)


def beta_binomial(k, n):
    p = ppl.sample("p", dist.Beta(2.0, 3.0))
    ppl.sample("k", dist.Binomial(n, p), obs=k)


def test_beta_binomial_conjugate_posterior():
    posterior = ppl.nuts(beta_binomial, jnp.array(11), 30, key=key(1), **RUN)
    a, b = 2.0 + 11, 3.0 + 30 - 11
    assert_moments(posterior.samples["p"], a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1)))


@pytest.fixture(scope="module")
def schools():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ppl.nuts(
            eight_schools,
            SIGMA,
            y=Y,
            key=key(0),
            chains=4,
            warmup=1000,
            draws=1000,
            target_accept=0.95,
        )


def test_eight_schools_matches_posteriordb_reference(schools):
    """posteriordb eight_schools_noncentered reference (10 chains x 1000 thinned draws):
    mu 4.41 (sd 3.31), tau 3.60 (sd 3.20). The tolerance adds the reference's own MC error."""
    for name, mean, sd in (("mu", 4.41, 3.31), ("tau", 3.60, 3.20)):
        draws = schools.samples[name]
        mcse = float(az.mcse(draws))
        reference_se = sd / np.sqrt(10_000)
        assert abs(draws.mean() - mean) < 5 * np.hypot(mcse, reference_se), (name, draws.mean())
        # the sd: MC error of the variance (sd of (x - m)^2 / sqrt(its ESS)) over 2 sd, ours
        # and the reference's (its 10,000 draws taken as independent, with our kurtosis)
        squared = (draws - draws.mean()) ** 2
        mcse_sd = squared.std() / np.sqrt(float(az.ess(squared))) / (2 * draws.std())
        reference_se_sd = squared.std() / np.sqrt(10_000) / (2 * draws.std())
        assert abs(draws.std() - sd) < 5 * np.hypot(mcse_sd, reference_se_sd), (name, draws.std())


def test_sample_stats_are_complete(schools):
    stats = schools.sample_stats
    assert set(stats) == NUTS_SAMPLE_STATS
    for value in stats.values():
        assert value.shape == (4, 1000)
    assert stats["diverging"].dtype == bool
    assert np.all(stats["n_steps"] >= 1) and np.all(stats["tree_depth"] <= 10)
    assert 0.8 < stats["acceptance_rate"].mean() < 1.0  # target 0.95
    np.testing.assert_allclose(stats["step_size"][:, 0], schools.step_size)
    # lp is the log density of the flat draw (Jacobian included).
    cm = schools.compiled
    np.testing.assert_allclose(
        stats["lp"][0, :5], jax.vmap(cm.logdensity)(schools.unconstrained[0, :5]), rtol=1e-4
    )
    theta = schools.samples["mu"][..., None] + schools.samples["tau"][..., None] * schools.samples["eta"]
    np.testing.assert_allclose(schools.samples["theta"], theta, rtol=1e-5, atol=1e-5)


def test_same_key_same_draws_and_no_recompile_on_new_data(schools):
    traces = []

    def counted(sigma, y=None):
        if isinstance(sigma, jax.core.Tracer):
            traces.append(1)
        eight_schools(sigma, y)

    run = {"chains": 4, "warmup": 1000, "draws": 1000, "target_accept": 0.95}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = ppl.nuts(counted, SIGMA, y=Y, key=key(0), **run)
        count = len(traces)
        again = ppl.nuts(counted, SIGMA, y=Y, key=key(0), **run)
        shifted = ppl.nuts(counted, SIGMA, y=Y + 1.0, key=key(0), **run)
        other_key = ppl.nuts(counted, SIGMA, y=Y, key=key(5), **run)
    assert count > 0 and len(traces) == count  # new data, same shapes: no re-trace
    np.testing.assert_array_equal(first.samples["mu"], again.samples["mu"])
    np.testing.assert_array_equal(first.samples["mu"], schools.samples["mu"])  # model wrapper aside
    assert not np.array_equal(first.samples["mu"], shifted.samples["mu"])
    assert not np.array_equal(first.samples["mu"], other_key.samples["mu"])


def test_progress_bar_chunks_do_not_change_draws():
    y = np.random.default_rng(seed(1)).normal(0.5, 1.0, size=20)
    run = {"chains": 2, "warmup": 60, "draws": 50}
    plain = ppl.nuts(normal_normal, y, key=key(3), progress_bar=False, **run)
    with_bar = ppl.nuts(normal_normal, y, key=key(3), progress_bar=True, **run)
    np.testing.assert_allclose(plain.samples["mu"], with_bar.samples["mu"], rtol=1e-6)


def test_hmc_conjugate_posterior():
    y = np.random.default_rng(seed(1)).normal(0.5, 1.0, size=20)
    posterior = ppl.hmc(normal_normal, y, key=key(4), num_integration_steps=8, **RUN)
    precision = 1 / 4.0 + 20.0
    mean = (1.0 / 4.0 + y.sum()) / precision
    assert_moments(posterior.samples["mu"], mean, 1 / precision)
    assert "tree_depth" not in posterior.sample_stats
    assert np.all(posterior.sample_stats["n_steps"] == 8)


def funnel():
    log_scale = ppl.sample("log_scale", dist.Normal(0.0, 3.0))
    ppl.sample("x", dist.Normal(jnp.zeros(9), jnp.exp(log_scale / 2)).to_event(1))


def test_divergences_and_poor_mixing_warn_with_counts():
    """Neal's funnel with a short warmup and a low target: over 60 keys every run diverged
    (14 or more of 200 transitions) and warned about R-hat and ESS. At target 0.6 with 2
    chains, 5 of 30 keys gave no divergence at all."""
    with pytest.warns(UserWarning) as record:
        posterior = ppl.nuts(funnel, key=key(2), chains=4, warmup=100, draws=50, target_accept=0.4)
    counts = posterior.sample_stats["diverging"].sum(axis=1).tolist()
    messages = [str(w.message) for w in record]
    assert sum(counts) > 0
    assert f"{sum(counts)} of 200 post-warmup transitions diverged (per chain: {counts})" in messages[0]
    assert any("R-hat > 1.01" in m for m in messages) and any("bulk ESS < 400" in m for m in messages)


def test_dense_mass_matrix():
    def correlated():
        ppl.sample("x", dist.MultivariateNormal(jnp.zeros(2), jnp.array([[1.0, 0.95], [0.95, 1.0]])))

    posterior = ppl.nuts(correlated, key=key(2), dense_mass=True, **RUN)
    assert posterior.inverse_mass_matrix.shape == (4, 2, 2)
    x = posterior.samples["x"]
    assert_moments(x[..., 0], 0.0, 1.0)
    corr = np.corrcoef(x.reshape(-1, 2).T)[0, 1]
    # 5 standard errors of a sample correlation, (1 - rho^2) / sqrt(ESS), at the smallest
    # ESS of x0, x1 and x0 * x1
    ess = min(float(az.ess(x[..., 0])), float(az.ess(x[..., 1])), float(az.ess(x[..., 0] * x[..., 1])))
    assert abs(corr - 0.95) < 5 * (1 - 0.95**2) / np.sqrt(ess), (corr, ess)
