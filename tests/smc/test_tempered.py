"""Adaptive tempered SMC against conjugate Bayesian linear regression (closed-form evidence
and posterior)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import ppl
from ppl import dist

RNG = np.random.default_rng(0)
X = RNG.normal(size=(20, 3))
SIGMA, TAU = 0.5, 2.0
Y = X @ np.array([1.0, -2.0, 0.5]) + SIGMA * RNG.normal(size=20)


def regression(X, y=None):
    beta = ppl.sample("beta", dist.Normal(jnp.zeros(3), TAU).to_event(1))
    with ppl.plate("obs", X.shape[0]):
        ppl.sample("y", dist.Normal(X @ beta, SIGMA), obs=y)


@pytest.fixture(scope="module")
def runs():
    return [
        ppl.smc.tempered(regression, X, y=Y, key=jax.random.key(seed), num_particles=1000)
        for seed in range(6)
    ]


def test_log_evidence_within_three_monte_carlo_standard_errors(runs):
    exact = multivariate_normal(np.zeros(20), TAU**2 * X @ X.T + SIGMA**2 * np.eye(20)).logpdf(Y)
    estimates = np.array([float(r.log_evidence) for r in runs])
    # MC standard error of the mean of 6 independent runs, from their spread.
    se = estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert abs(estimates.mean() - exact) <= 3 * se, (estimates, exact)
    assert se < 0.1  # the estimator is precise, so the check has power


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
        # 5 posterior sd / sqrt(ESS); the particles after MCMC moves are close to independent.
        tolerance = 5 * np.sqrt(np.diag(covariance) / result.ess)
        assert np.all(np.abs(estimate - mean) <= tolerance)
        assert np.allclose(w @ (beta - mean) ** 2, np.diag(covariance), rtol=0.3)


def test_same_key_same_result_and_arviz_round_trip(runs, tmp_path):
    again = ppl.smc.tempered(regression, X, y=Y, key=jax.random.key(0), num_particles=1000)
    assert float(again.log_evidence) == float(runs[0].log_evidence)
    idata = runs[0].to_arviz(jax.random.key(1))
    assert idata.posterior["beta"].shape == (1, 1000, 3)
    ppl.save(idata, str(tmp_path / "smc.nc"))
    assert ppl.load(str(tmp_path / "smc.nc")).posterior.identical(idata.posterior)


def test_bad_arguments():
    with pytest.raises(ValueError, match="target_ess"):
        ppl.smc.tempered(regression, X, y=Y, key=jax.random.key(0), target_ess=1.5)
    with pytest.raises(ValueError, match="observed site"):
        ppl.smc.tempered(regression, X, key=jax.random.key(0))


def test_new_data_of_the_same_shape_does_not_retrace():
    calls = []

    def counted(X, y=None):
        calls.append(1)
        regression(X, y)

    def run(y):
        before = len(calls)
        ppl.smc.tempered(counted, X, y=y, key=jax.random.key(0), num_particles=100)
        return len(calls) - before

    first = run(Y)
    again = run(Y + 0.5)  # new data: only the host-side compile runs the model
    assert again < first
    assert run(Y - 0.5) == again
