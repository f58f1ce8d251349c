"""Small models whose objectives and gradients are known exactly."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jax.scipy.stats import norm

import ppl
from ppl import dist

# ----------------------------------------------------------- finite discrete model
# z1 ~ Bernoulli(sigmoid(t)), z2 | z1 ~ Categorical(PRIOR_Z2[z1]), x ~ Normal(z1 + z2, 1).
PRIOR_Z2 = jnp.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
X_OBS = 1.3
DISCRETE_PARAMS = {
    "t": jnp.array(-0.4),
    "a": jnp.array(0.3),
    "B": jnp.array([[0.2, -0.5, 0.1], [-0.3, 0.4, 0.6]]),
}
TRACES = [(z1, z2) for z1 in range(2) for z2 in range(3)]


def discrete_model(params, x):
    z1 = ppl.sample("z1", dist.Bernoulli(logits=params["t"]))
    z2 = ppl.sample("z2", dist.Categorical(probs=PRIOR_Z2[z1.astype(jnp.int32)]))
    ppl.sample("x", dist.Normal(z1 + z2, 1.0), obs=x)


def discrete_guide(grad_z1=None, grad_z2=None):
    def guide(params, x):
        z1 = ppl.sample("z1", dist.Bernoulli(logits=params["a"]), infer={"grad": grad_z1})
        ppl.sample("z2", dist.Categorical(logits=params["B"][z1.astype(jnp.int32)]), infer={"grad": grad_z2})

    return guide


def discrete_log_p(params, z1, z2):
    return (
        jax.nn.log_sigmoid(params["t"] if z1 else -params["t"])
        + jnp.log(PRIOR_Z2[z1, z2])
        + norm.logpdf(X_OBS, z1 + z2, 1.0)
    )


def discrete_log_q(params, z1, z2):
    return jax.nn.log_sigmoid(params["a"] if z1 else -params["a"]) + jax.nn.log_softmax(params["B"][z1])[z2]


def exact_iwae(params, num_particles, transform=None):
    """Sum over all num_particles-tuples of traces of prod q * logmeanexp(log w)."""
    log_q = jnp.stack([discrete_log_q(params, *trace) for trace in TRACES])
    log_w = jnp.stack([discrete_log_p(params, *trace) for trace in TRACES]) - log_q
    tuples = np.array(list(itertools.product(range(len(TRACES)), repeat=num_particles)))
    weights = jnp.exp(log_q[tuples].sum(axis=1))
    transform = transform or (lambda lw: logsumexp(lw) - jnp.log(num_particles))
    return jnp.sum(weights * jax.vmap(transform)(log_w[tuples]))


def exact_elbo(params):
    return exact_iwae(params, 1)


# ----------------------------------------------------------- conjugate Normal-Normal
# z ~ N(0, 1), y_i ~ N(z, 1); guide N(m, exp(log_s)).
Y = jnp.array([0.3, -0.8, 1.7, 0.9, 0.2])


def normal_model(params, y):
    z = ppl.sample("z", dist.Normal(0.0, 1.0))
    with ppl.plate("data", y.shape[0]):
        ppl.sample("y", dist.Normal(z, 1.0), obs=y)


def normal_guide(grad=None):
    def guide(params, *data):
        ppl.sample("z", dist.Normal(params["m"], jnp.exp(params["log_s"])), infer={"grad": grad})

    return guide


def normal_exact_elbo(params, y=Y):
    m, s2 = params["m"], jnp.exp(2 * params["log_s"])
    log2pi = jnp.log(2 * jnp.pi)
    prior = -0.5 * log2pi - 0.5 * (m**2 + s2)
    likelihood = jnp.sum(-0.5 * log2pi - 0.5 * ((y - m) ** 2 + s2))
    entropy = 0.5 * (log2pi + 1.0) + params["log_s"]
    return prior + likelihood + entropy


NORMAL_PARAMS = {"m": jnp.array(0.4), "log_s": jnp.array(-0.7)}
