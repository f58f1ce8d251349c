"""The noisy-cone table (Becker et al. 2024) with the authors' protocol: plain SGD,
learning rate 1e-3, 5000 steps, 64 estimates per step (IWAE: 1), scored by the ppl
estimator of each objective with 50,000 samples (standard error ~0.005 nats).

Tolerance 0.07: over 8 keys (training and scoring) the scores spread with sd 0.014 for
the ELBO (its last SGD iterate jitters) and 0.004-0.006 for the others, with means within
0.021 of the published values; 0.07 is 5 of the largest sd. With 5000 scoring samples
(se 0.015) and 0.05, the ELBO's score was out at ~3% of keys (it reached -8.123).
"""

import jax
import jax.numpy as jnp
import optax
import pytest

import ppl
from ppl import dist
from tests.seeds import key
from tests.vi.test_objectives import cone_guide, cone_model

SGD = optax.sgd(1e-3)
mean_field = cone_guide(None)  # mean-field Gaussian, params (mu_x, mu_y, log sd_x, log sd_y)


def ring(params, z_obs):
    angle = 2 * jnp.pi * ppl.sample("u", dist.Uniform(0.0, 1.0))
    ppl.sample("x", dist.Normal(jnp.sqrt(z_obs) * jnp.cos(angle), jnp.exp(params[0])))
    ppl.sample("y", dist.Normal(jnp.sqrt(z_obs) * jnp.sin(angle), jnp.exp(params[1])))


O = ppl.vi.objectives
CASES = {
    "elbo": (O.elbo(cone_model, mean_field), jnp.array([0.0, 0.0, 1.0, 1.0]), 64, -8.08),
    "iwae5": (O.iwae(cone_model, mean_field, 5), jnp.array([3.0, 0.0, 1.0, 1.0]), 1, -7.79),
    "hvi": (O.hvi(cone_model, ring, ["x", "y"]), jnp.zeros(2), 64, -9.75),
    "iwhvi5": (O.iwhvi(cone_model, ring, ["x", "y"], 5), jnp.zeros(2), 64, -8.18),
    "diwhvi5x5": (O.diwhvi(cone_model, ring, ["x", "y"], 5, 5), jnp.zeros(2), 64, -7.33),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_cone_table(name):
    objective, init, num_samples, published = CASES[name]
    z_obs = jnp.asarray(5.0)
    result = ppl.vi.fit(
        objective, init, z_obs, optimizer=SGD, steps=5000, key=key(1), num_samples=num_samples
    )
    keys = jax.random.split(key(2), 50_000)
    value = float(jax.jit(jax.vmap(objective.estimate, (0, None, None)))(keys, result.params, z_obs).mean())
    if name == "iwae5":
        # The published -7.79 is not reached from below: ppl and NumPyro's RenyiELBO both
        # train to -7.55..-7.63 under this evaluator (benchmarks/README.md), a better bound.
        assert value > published - 0.05
    else:
        assert abs(value - published) < 0.07, value
