"""Discrete latent sites summed out by enumeration, checked against exact answers.

Model: ``mu ~ N(0, 1)``, ``z_i ~ Bernoulli(0.3)``, ``y_i | mu, z_i ~ N(mu + 2 z_i, 1)``.
The marginal log density of ``mu`` is a closed form, its posterior a 1-D integral
(quadrature on a fine grid), and ``P(z_i = 1 | mu, y_i)`` is exact for each draw of ``mu``.
Tolerances are 5 Monte Carlo standard errors: from the ESS of the draws for the mean
of ``mu``, and from the exact Bernoulli variances of the ``z`` draws given ``mu``.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy.stats import norm

import ppl
from ppl.mcmc.diagnostics import bulk_ess
from tests.seeds import key

Y = np.array([-0.5, 0.2, 2.5, 3.0, 0.1, 2.2], np.float32)
P = 0.3


def mixture(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", len(y)):
        z = numpyro.sample("z", dist.Bernoulli(P))
        numpyro.sample("y", dist.Normal(mu + 2.0 * z, 1.0), obs=y)


def exact_log_density(mu, p=P):
    mu = np.asarray(mu, np.float64)[..., None]
    return norm.logpdf(mu[..., 0]) + np.log((1 - p) * norm.pdf(Y, mu) + p * norm.pdf(Y, mu + 2)).sum(-1)


def z_posterior(mu):
    """``P(z_i = 1 | mu, y_i)`` for draws ``mu`` ``(...,)`` -> ``(..., n)``."""
    mu = np.asarray(mu, np.float64)[..., None]
    one, zero = P * norm.pdf(Y, mu + 2), (1 - P) * norm.pdf(Y, mu)
    return one / (one + zero)


@pytest.fixture(scope="module")
def posterior():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ppl.nuts(mixture, Y, key=key(0), chains=2, warmup=300, draws=500, progress_bar=False)


def test_enumerated_log_density_is_the_closed_form():
    compiled = ppl.compile(mixture, Y)
    assert compiled.dim == 1 and compiled.enumerated == ("z",)
    mu = jnp.linspace(-3, 3, 13)
    got = jax.jit(jax.vmap(lambda m: compiled.logdensity(m[None])))(mu)
    np.testing.assert_allclose(got, exact_log_density(mu), rtol=1e-5, atol=1e-4)
    # a wrong mixture weight is far outside that tolerance
    assert np.abs(exact_log_density(mu, p=0.5) - got).max() > 0.1
    # the pointwise log-likelihood is the per-point marginal
    pointwise = compiled.pointwise_log_likelihood(jnp.array([0.4]))["y"]
    exact = np.log((1 - P) * norm.pdf(Y, 0.4) + P * norm.pdf(Y, 2.4))
    np.testing.assert_allclose(pointwise, exact, rtol=1e-5)


def test_posterior_of_the_continuous_site_matches_quadrature(posterior):
    grid = np.linspace(-6, 6, 20001)
    weights = np.exp(exact_log_density(grid) - exact_log_density(grid).max())
    exact_mean = np.sum(grid * weights) / np.sum(weights)
    mu = posterior.samples["mu"]
    tolerance = 5 * mu.std() / np.sqrt(bulk_ess(mu[..., None])[0])
    assert abs(mu.mean() - exact_mean) < tolerance


def test_discrete_draws_follow_their_exact_conditional(posterior):
    z = posterior.samples["z"]
    assert z.shape == (2, 500, len(Y)) and posterior.to_arviz().posterior["z"].dims == (
        "chain",
        "draw",
        "data",
    )
    p = z_posterior(posterior.samples["mu"])  # (chains, draws, n), exact given each mu draw
    n = p.shape[0] * p.shape[1]
    # given the mu draws the z draws are independent Bernoulli(p): exact standard errors
    se = np.sqrt((p * (1 - p)).sum(axis=(0, 1))) / n
    np.testing.assert_array_less(np.abs(z.mean(axis=(0, 1)) - p.mean(axis=(0, 1))), 5 * se + 1e-6)
    # z drawn from its prior instead (a broken infer_discrete) fails the same check
    prior = (np.asarray(jax.random.uniform(key(1), z.shape)) < P).astype(z.dtype)
    assert np.any(np.abs(prior.mean(axis=(0, 1)) - p.mean(axis=(0, 1))) > 5 * se + 1e-6)
