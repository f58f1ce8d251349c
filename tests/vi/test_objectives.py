"""The objectives library against exact objectives and gradients.

Discrete references sum over every trace (or tuple of traces for K particles);
continuous ones use Gauss-Hermite quadrature.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp
from jax.scipy.stats import norm

import ppl
from ppl import dist
from tests.seeds import key
from tests.vi.harness import assert_unbiased, gradient_draws
from tests.vi.models import (
    DISCRETE_PARAMS,
    TRACES,
    X_OBS,
    discrete_guide,
    discrete_log_p,
    discrete_log_q,
    discrete_model,
    exact_iwae,
)

objectives = ppl.vi.objectives
REINFORCE_GUIDE = discrete_guide()  # discrete sites default to REINFORCE


def assert_value_unbiased(objective, exact_value, *args, num=10_000):
    keys = jax.random.split(key(11), num)
    values = jax.jit(jax.vmap(objective.estimate, (0,) + (None,) * len(args)))(keys, *args)
    se = values.std() / np.sqrt(num)
    assert abs(values.mean() - exact_value) <= 5 * se + 1e-5 * abs(exact_value), (
        values.mean(),
        exact_value,
        se,
    )


@pytest.mark.parametrize("num_particles", [2, 3])
def test_iwae_discrete(num_particles):
    objective = objectives.iwae(discrete_model, REINFORCE_GUIDE, num_particles)
    exact = jax.grad(exact_iwae)(DISCRETE_PARAMS, num_particles)
    assert_unbiased(objective, DISCRETE_PARAMS, X_OBS, exact=exact)
    assert_value_unbiased(objective, exact_iwae(DISCRETE_PARAMS, num_particles), DISCRETE_PARAMS, X_OBS)


def test_iwae_enumerated_jointly_is_exact():
    guide = discrete_guide(ppl.vi.enum(), ppl.vi.enum())
    objective = objectives.iwae(discrete_model, guide, 2, vectorize=False)
    draws = assert_unbiased(
        objective, DISCRETE_PARAMS, X_OBS, exact=jax.grad(exact_iwae)(DISCRETE_PARAMS, 2), num=500
    )
    assert draws.std(axis=0).max() < 1e-5


def test_vimco_is_unbiased_for_iwae():
    objective = objectives.vimco(discrete_model, REINFORCE_GUIDE, 3)
    assert_unbiased(objective, DISCRETE_PARAMS, X_OBS, exact=jax.grad(exact_iwae)(DISCRETE_PARAMS, 3))


def test_vimco_reduces_variance():
    plain = gradient_draws(objectives.iwae(discrete_model, REINFORCE_GUIDE, 3), DISCRETE_PARAMS, X_OBS)
    loo = gradient_draws(objectives.vimco(discrete_model, REINFORCE_GUIDE, 3), DISCRETE_PARAMS, X_OBS)
    assert loo.var(axis=0).sum() < 0.5 * plain.var(axis=0).sum()


def test_renyi_discrete():
    alpha = 0.5

    def renyi_transform(log_w):
        return (logsumexp((1 - alpha) * log_w) - jnp.log(2)) / (1 - alpha)

    exact = jax.grad(lambda p: exact_iwae(p, 2, renyi_transform))(DISCRETE_PARAMS)
    assert_unbiased(
        objectives.renyi(discrete_model, REINFORCE_GUIDE, alpha, 2), DISCRETE_PARAMS, X_OBS, exact=exact
    )


def _self_normalised_expectation(params, num_particles, quantity):
    """E over K-tuples of traces drawn from q of sum_k wbar_k quantity(params, trace_k)."""
    log_q = jnp.stack([discrete_log_q(params, *t) for t in TRACES])
    log_w = jnp.stack([discrete_log_p(params, *t) for t in TRACES]) - log_q
    tuples = np.array(list(itertools.product(range(len(TRACES)), repeat=num_particles)))
    weights = jax.lax.stop_gradient(jnp.exp(log_q[tuples].sum(axis=1)))
    normalised = jax.lax.stop_gradient(jax.nn.softmax(log_w[tuples], axis=1))
    values = jnp.stack([quantity(params, *t) for t in TRACES])[tuples]
    return jnp.sum(weights * jnp.sum(normalised * values, axis=1))


def test_wake_p_gradient_is_the_iwae_model_gradient():
    exact = jax.grad(exact_iwae)(DISCRETE_PARAMS, 2)
    exact = {"t": exact["t"], "a": 0.0, "B": jnp.zeros((2, 3))}
    assert_unbiased(
        objectives.wake_p(discrete_model, REINFORCE_GUIDE, 2), DISCRETE_PARAMS, X_OBS, exact=exact
    )


def test_wake_q_gradient():
    exact = jax.grad(_self_normalised_expectation)(DISCRETE_PARAMS, 2, discrete_log_q)
    assert float(jnp.abs(exact["t"])) == 0.0
    assert_unbiased(
        objectives.wake_q(discrete_model, REINFORCE_GUIDE, 2), DISCRETE_PARAMS, X_OBS, exact=exact
    )


# ------------------------------------------------ hierarchical families (auxiliary u)
# Guide: u ~ Categorical(softmax(c)), x | u ~ Bernoulli(sigmoid(d[u])); model: x ~ Bernoulli(0.3),
# y ~ Normal(x, 1) observed. The marginal over x integrates u out.

HIER_PARAMS = {"c": jnp.array([0.2, -0.4, 0.5]), "d": jnp.array([-1.0, 0.3, 1.2])}
Y_OBS = 0.8


def hier_model(params, y):
    x = ppl.sample("x", dist.Bernoulli(0.3))
    ppl.sample("y", dist.Normal(x, 1.0), obs=y)


def hier_guide(params, y):
    u = ppl.sample("u", dist.Categorical(logits=params["c"]))
    ppl.sample("x", dist.Bernoulli(logits=params["d"][u]))


def _hier_tables(params):
    log_qu = jax.nn.log_softmax(params["c"])  # (3,)
    log_qx_u = jnp.stack(
        [jax.nn.log_sigmoid(-params["d"]), jax.nn.log_sigmoid(params["d"])], axis=1
    )  # (u, x)
    log_p = jnp.array([jnp.log(0.7), jnp.log(0.3)]) + norm.logpdf(Y_OBS, jnp.array([0.0, 1.0]), 1.0)
    return log_qu, log_qx_u, log_p


def exact_diwhvi(params, num_particles, num_aux):
    """E[logmeanexp_k(log p(x_k) - log mean_i q(x_k | u_ki))] summed over every outcome."""
    log_qu, log_qx_u, log_p = _hier_tables(params)
    # one outer particle: (u_1, x, u_2..u_m)
    outcomes = list(itertools.product(range(3), range(2), *[range(3)] * (num_aux - 1)))
    log_prob = jnp.stack(
        [log_qu[o[0]] + log_qx_u[o[0], o[1]] + sum(log_qu[u] for u in o[2:]) for o in outcomes]
    )
    log_w = jnp.stack(
        [
            log_p[o[1]]
            - (logsumexp(jnp.stack([log_qx_u[u, o[1]] for u in (o[0], *o[2:])])) - jnp.log(num_aux))
            for o in outcomes
        ]
    )
    tuples = np.array(list(itertools.product(range(len(outcomes)), repeat=num_particles)))
    weights = jnp.exp(log_prob[tuples].sum(axis=1))
    return jnp.sum(weights * (logsumexp(log_w[tuples], axis=1) - jnp.log(num_particles)))


@pytest.mark.parametrize(
    "objective,num_particles,num_aux",
    [
        (objectives.hvi(hier_model, hier_guide, ["x"]), 1, 1),
        (objectives.iwhvi(hier_model, hier_guide, ["x"], 3), 1, 3),
        (objectives.diwhvi(hier_model, hier_guide, ["x"], 2, 2), 2, 2),
    ],
    ids=["hvi", "iwhvi3", "diwhvi2x2"],
)
def test_hierarchical_objectives(objective, num_particles, num_aux):
    exact = jax.grad(exact_diwhvi)(HIER_PARAMS, num_particles, num_aux)
    assert_unbiased(objective, HIER_PARAMS, Y_OBS, exact=exact)
    assert_value_unbiased(objective, exact_diwhvi(HIER_PARAMS, num_particles, num_aux), HIER_PARAMS, Y_OBS)


def test_marginal_density_is_unbiased():
    family = ppl.vi.marginal(hier_guide, ["x"], particles=2)
    log_qu, log_qx_u, _ = _hier_tables(HIER_PARAMS)
    exact_q1 = jnp.exp(logsumexp(log_qu + log_qx_u[:, 1]))

    @ppl.vi.expectation
    def q_hat(params):
        return jnp.exp(ppl.vi.density(family, {"x": jnp.array(1.0)}, params, Y_OBS))

    assert_value_unbiased(q_hat, exact_q1, HIER_PARAMS)


# ------------------------------------------------ the SIR family (normalize)


def test_sir_family_elbo_is_iwae():
    family = ppl.vi.normalize(discrete_model, REINFORCE_GUIDE, 2)
    objective = objectives.elbo(discrete_model, family)
    assert_unbiased(objective, DISCRETE_PARAMS, X_OBS, exact=jax.grad(exact_iwae)(DISCRETE_PARAMS, 2))


def test_sir_density_is_unbiased():
    num = 2
    log_q = jnp.stack([discrete_log_q(DISCRETE_PARAMS, *t) for t in TRACES])
    log_w = jnp.stack([discrete_log_p(DISCRETE_PARAMS, *t) for t in TRACES]) - log_q
    tuples = np.array(list(itertools.product(range(len(TRACES)), repeat=num)))
    target = TRACES.index((1, 2))
    chosen = jnp.sum(jnp.where(tuples == target, jax.nn.softmax(log_w[tuples], axis=1), 0.0), axis=1)
    exact = jnp.sum(jnp.exp(log_q[tuples].sum(axis=1)) * chosen)
    family = ppl.vi.normalize(discrete_model, REINFORCE_GUIDE, num)

    @ppl.vi.expectation
    def q_hat(params):
        return jnp.exp(ppl.vi.density(family, {"z1": jnp.array(1.0), "z2": jnp.array(2)}, params, X_OBS))

    assert_value_unbiased(q_hat, exact, DISCRETE_PARAMS)


# ------------------------------------------------ continuous: IWAE gradients by quadrature
# z ~ N(theta, 1), y ~ N(z, 1); guide N(m, exp(log_s)).

GAUSS_PARAMS = {"theta": jnp.array(0.3), "m": jnp.array(0.1), "log_s": jnp.array(-0.2)}
Y_ONE = 0.7
NODES, WEIGHTS = np.polynomial.hermite.hermgauss(24)


def gauss_model(params, y):
    z = ppl.sample("z", dist.Normal(params["theta"], 1.0))
    ppl.sample("y", dist.Normal(z, 1.0), obs=y)


def gauss_guide(params, y):
    ppl.sample("z", dist.Normal(params["m"], jnp.exp(params["log_s"])))


def quadrature_iwae(params, num_particles):
    scale = jnp.exp(params["log_s"])
    nodes = jnp.asarray(NODES) * jnp.sqrt(2.0)
    grid = jnp.stack(jnp.meshgrid(*[nodes] * num_particles, indexing="ij"), -1).reshape(-1, num_particles)
    weights = jnp.prod(
        jnp.stack(jnp.meshgrid(*[jnp.asarray(WEIGHTS)] * num_particles, indexing="ij"), -1), -1
    )
    weights = weights.reshape(-1) / np.pi ** (num_particles / 2)
    z = params["m"] + scale * grid
    log_w = (
        norm.logpdf(z, params["theta"], 1.0) + norm.logpdf(Y_ONE, z, 1.0) - norm.logpdf(z, params["m"], scale)
    )
    return jnp.sum(weights * (logsumexp(log_w, axis=1) - jnp.log(num_particles)))


@pytest.mark.parametrize("gradient", ["standard", "dreg"])
def test_iwae_gradients_by_quadrature(gradient):
    objective = objectives.iwae(gauss_model, gauss_guide, 3, gradient=gradient)
    assert_unbiased(objective, GAUSS_PARAMS, Y_ONE, exact=jax.grad(quadrature_iwae)(GAUSS_PARAMS, 3))


def test_dreg_has_lower_guide_variance():
    standard = gradient_draws(objectives.iwae(gauss_model, gauss_guide, 3), GAUSS_PARAMS, Y_ONE)
    dreg = gradient_draws(objectives.iwae(gauss_model, gauss_guide, 3, gradient="dreg"), GAUSS_PARAMS, Y_ONE)
    # coordinates (flattened dict order): log_s, m, theta
    assert (dreg.var(axis=0)[:2] < standard.var(axis=0)[:2]).all()


def test_stl_single_particle_is_unbiased():
    objective = objectives.iwae(gauss_model, gauss_guide, 1, gradient="stl")
    assert_unbiased(objective, GAUSS_PARAMS, Y_ONE, exact=jax.grad(quadrature_iwae)(GAUSS_PARAMS, 1))


# ------------------------------------------------ 2-D quadrature: the noisy cone


def cone_model(params, z_obs):
    x = ppl.sample("x", dist.Normal(0.0, 10.0))
    y = ppl.sample("y", dist.Normal(0.0, 10.0))
    radius2 = x**2 + y**2
    ppl.sample("z", dist.Normal(radius2, 0.1 + radius2 / 100.0), obs=z_obs)


def cone_guide(grad):
    def guide(params, z_obs):
        ppl.sample("x", dist.Normal(params[0], jnp.exp(params[2])), infer={"grad": grad})
        ppl.sample("y", dist.Normal(params[1], jnp.exp(params[3])), infer={"grad": grad})

    return guide


def cone_quadrature_elbo(params, z_obs=5.0):
    nodes, weights = np.polynomial.hermite.hermgauss(64)
    x = params[0] + jnp.exp(params[2]) * jnp.sqrt(2.0) * nodes
    y = params[1] + jnp.exp(params[3]) * jnp.sqrt(2.0) * nodes
    xx, yy = jnp.meshgrid(x, y, indexing="ij")
    radius2 = xx**2 + yy**2
    log_p = norm.logpdf(xx, 0, 10) + norm.logpdf(yy, 0, 10) + norm.logpdf(z_obs, radius2, 0.1 + radius2 / 100)
    expected_log_p = jnp.sum(jnp.outer(weights, weights) * log_p) / np.pi
    entropy = jnp.log(2 * jnp.pi * jnp.e) + params[2] + params[3]
    return expected_log_p + entropy


@pytest.mark.parametrize("grad", [ppl.vi.reparam(), ppl.vi.reinforce()])
def test_cone_elbo_by_quadrature(grad):
    params = jnp.array([1.0, 1.5, -0.5, -1.0])
    objective = objectives.elbo(cone_model, cone_guide(grad))
    assert_unbiased(objective, params, 5.0, exact=jax.grad(cone_quadrature_elbo)(params))
