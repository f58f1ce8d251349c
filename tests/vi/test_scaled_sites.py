"""Guide sites under ``numpyro.handlers.scale`` (what a subsampled plate does): every
estimator against the exact gradient of the *scaled* objective.

The objective sees each scaled site's log-density times its scale; the score term
differentiates the distribution the value was drawn from, so it must use the unscaled
log q. The broken variant (the old behaviour: score times the scale) must fail.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers

import ppl
from ppl import dist
from ppl.vi.objectives import logmeanexp
from tests.vi.harness import assert_biased, assert_unbiased

SCALE = 2.5  # a minibatch of 2 standing for 5 data points
X = jnp.array([1.3, -0.4])
PRIOR_LOGITS = jnp.array([0.3, -0.2])
DISCRETE_PARAMS = {"a": jnp.array([-0.4, 0.7])}
CONFIGS = np.array(list(itertools.product((0.0, 1.0), repeat=2)))  # (4, 2) joint values of c


def scaled_model(params, x):
    with ppl.plate("data", 2), handlers.scale(scale=SCALE):
        c = ppl.sample("c", dist.Bernoulli(logits=PRIOR_LOGITS))
        ppl.sample("x", dist.Normal(2.0 * c, 1.0), obs=x)


def scaled_guide(grad):
    def guide(params, x):
        with ppl.plate("data", 2), handlers.scale(scale=SCALE):
            ppl.sample("c", dist.Bernoulli(logits=params["a"]), infer={"grad": grad})

    return guide


def _log_q(a, c):
    """Unscaled ``log q(c)`` of the guide, ``c`` of shape ``(2,)``."""
    return jnp.sum(c * jax.nn.log_sigmoid(a) + (1 - c) * jax.nn.log_sigmoid(-a))


def _log_w(a, c):
    """The scaled ``log p(x, c) - log q(c)`` the objectives see."""
    log_prior = _log_q(PRIOR_LOGITS, c)
    log_lik = jnp.sum(-0.5 * (X - 2.0 * c) ** 2 - 0.5 * jnp.log(2 * jnp.pi))
    return SCALE * (log_prior + log_lik - _log_q(a, c))


def exact_iwae(params, num_particles, transform=logmeanexp):
    """``E[transform(log w_1..K)]`` summed over every ``K``-tuple of joint values."""
    tuples = np.array(list(itertools.product(range(len(CONFIGS)), repeat=num_particles)))
    configs = jnp.asarray(CONFIGS)
    log_q = jax.vmap(lambda c: _log_q(params["a"], c))(configs)
    log_w = jax.vmap(lambda c: _log_w(params["a"], c))(configs)
    return jnp.sum(jnp.exp(log_q[tuples].sum(axis=1)) * jax.vmap(transform)(log_w[tuples]))


def exact_gradient(objective, params, *args):
    """``grad objective`` in float64, as float64 numpy leaves."""
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda leaf: jnp.asarray(leaf, jnp.float64), params)
        return jax.tree.map(np.asarray, jax.grad(objective)(params64, *args))


EXACT_ELBO = exact_gradient(exact_iwae, DISCRETE_PARAMS, 1)
EXACT_IWAE = exact_gradient(exact_iwae, DISCRETE_PARAMS, 3)


@pytest.mark.parametrize(
    "grad",
    [ppl.vi.enum(), ppl.vi.mvd(), ppl.vi.reinforce(), ppl.vi.reinforce(baseline=-6.0)],
    ids=["enum", "mvd", "reinforce", "reinforce+baseline"],
)
def test_elbo_of_a_scaled_discrete_site(grad):
    objective = ppl.vi.objectives.elbo(scaled_model, scaled_guide(grad))
    assert_unbiased(objective, DISCRETE_PARAMS, X, exact=EXACT_ELBO)


@pytest.mark.parametrize(
    "build",
    [
        lambda: ppl.vi.objectives.iwae(scaled_model, scaled_guide(ppl.vi.reinforce()), 3),
        lambda: ppl.vi.objectives.iwae(scaled_model, scaled_guide(ppl.vi.enum()), 3, vectorize=False),
        lambda: ppl.vi.objectives.vimco(scaled_model, scaled_guide(ppl.vi.reinforce()), 3),
    ],
    ids=["iwae-reinforce", "iwae-enum", "vimco"],
)
def test_iwae_of_a_scaled_discrete_site(build):
    assert_unbiased(build(), DISCRETE_PARAMS, X, exact=EXACT_IWAE)


def old_score(model, guide):
    """The broken estimator this file guards against: the ELBO whose score term is
    multiplied by the scale (every guide site here carries ``SCALE``)."""

    @ppl.vi.expectation
    def objective(params, *args):
        values, log_q = ppl.vi.sim(guide, params, *args)
        value = ppl.vi.density(model, values, params, *args) - log_q
        unscaled = log_q / SCALE
        extra = (SCALE - 1.0) * jax.lax.stop_gradient(value) * (unscaled - jax.lax.stop_gradient(unscaled))
        return value + extra

    return objective


def test_power_scaled_score_fails():
    broken = old_score(scaled_model, scaled_guide(ppl.vi.reinforce()))
    assert_biased(broken, DISCRETE_PARAMS, X, exact=EXACT_ELBO)


# --------------------------------------------------- a scaled continuous site, closed form
# z ~ N(0, 1) and q(z) = N(m, exp(log_s)), both scaled; y ~ N(z, 1) unscaled.
Y_OBS = 0.7
NORMAL_PARAMS = {"m": jnp.array(0.4), "log_s": jnp.array(-0.7)}


def scaled_normal_model(params, y):
    with handlers.scale(scale=SCALE):
        z = ppl.sample("z", dist.Normal(0.0, 1.0))
    ppl.sample("y", dist.Normal(z, 1.0), obs=y)


def scaled_normal_guide(grad):
    def guide(params, y):
        with handlers.scale(scale=SCALE):
            ppl.sample("z", dist.Normal(params["m"], jnp.exp(params["log_s"])), infer={"grad": grad})

    return guide


def exact_normal_elbo(params, y):
    """``SCALE * (E log N(z; 0, 1) + entropy) + E log N(y; z, 1)`` under ``q``."""
    m, log_s = params["m"], params["log_s"]
    s2 = jnp.exp(2 * log_s)
    log2pi = jnp.log(2 * jnp.pi)
    prior = -0.5 * log2pi - 0.5 * (m**2 + s2)
    entropy = 0.5 * (log2pi + 1.0) + log_s
    likelihood = -0.5 * log2pi - 0.5 * ((y - m) ** 2 + s2)
    return SCALE * (prior + entropy) + likelihood


EXACT_NORMAL = exact_gradient(exact_normal_elbo, NORMAL_PARAMS, Y_OBS)


@pytest.mark.parametrize(
    "grad",
    [ppl.vi.reparam(), ppl.vi.reinforce(), ppl.vi.reinforce(baseline=-3.0)],
    ids=["reparam", "reinforce", "reinforce+baseline"],
)
def test_elbo_of_a_scaled_continuous_site(grad):
    objective = ppl.vi.objectives.elbo(scaled_normal_model, scaled_normal_guide(grad))
    assert_unbiased(objective, NORMAL_PARAMS, Y_OBS, exact=EXACT_NORMAL)


def exact_normal_iwae2(params, y, num_nodes=80):
    """IWAE(2) of the scaled continuous model by 2-D Gauss-Hermite quadrature over
    ``z_k = m + s x_k``, ``x_k ~ N(0, 1)`` (differentiable in the parameters)."""
    nodes, weights = np.polynomial.hermite.hermgauss(num_nodes)
    x, w = jnp.asarray(np.sqrt(2.0) * nodes), jnp.asarray(weights / np.sqrt(np.pi))
    m, s = params["m"], jnp.exp(params["log_s"])
    z = m + s * x
    log_w = SCALE * (
        jax.scipy.stats.norm.logpdf(z) - jax.scipy.stats.norm.logpdf(z, m, s)
    ) + jax.scipy.stats.norm.logpdf(y, z, 1.0)
    pairs = jnp.logaddexp(log_w[:, None], log_w[None, :]) - jnp.log(2.0)
    return jnp.sum(w[:, None] * w[None, :] * pairs)


EXACT_NORMAL_IWAE2 = exact_gradient(exact_normal_iwae2, NORMAL_PARAMS, Y_OBS)


@pytest.mark.parametrize("gradient", ["standard", "dreg"])
def test_iwae_of_a_scaled_continuous_site(gradient):
    """DReG turns the score term into a path term: only the unscaled part may be turned."""
    guide = scaled_normal_guide(ppl.vi.reparam())
    objective = ppl.vi.objectives.iwae(scaled_normal_model, guide, 2, gradient=gradient)
    assert_unbiased(objective, NORMAL_PARAMS, Y_OBS, exact=EXACT_NORMAL_IWAE2)


def test_power_scaled_continuous_score_fails():
    broken = old_score(scaled_normal_model, scaled_normal_guide(ppl.vi.reinforce()))
    assert_biased(broken, NORMAL_PARAMS, Y_OBS, exact=EXACT_NORMAL)


def test_quadrature_reference():
    """80 nodes agree with 200 far below the Monte Carlo error (gradient to 1e-6), and
    IWAE(2) lies above the ELBO."""
    with jax.enable_x64(True):
        params = jax.tree.map(lambda leaf: jnp.asarray(leaf, jnp.float64), NORMAL_PARAMS)
        fine = exact_gradient(lambda p, y: exact_normal_iwae2(p, y, 200), params, Y_OBS)
        for name, value in EXACT_NORMAL_IWAE2.items():
            assert abs(value - fine[name]) < 1e-6
        assert exact_normal_elbo(params, Y_OBS) < exact_normal_iwae2(params, Y_OBS)


def test_enumerated_value_is_the_scaled_elbo():
    """The objective's value weighs each scaled site by its scale (enumeration is exact)."""
    objective = ppl.vi.objectives.elbo(scaled_model, scaled_guide(ppl.vi.enum()))
    value = objective.estimate(jax.random.key(0), DISCRETE_PARAMS, X)
    assert np.isclose(value, exact_iwae(DISCRETE_PARAMS, 1), rtol=1e-5)
