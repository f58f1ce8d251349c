"""Bad models and bad arguments raise ModelError / TypeError / ValueError naming the site."""

import jax.numpy as jnp
import numpy as np
import pytest

import ppl
from ppl import dist
from tests.models import SIGMA, Y, eight_schools
from tests.seeds import key

KEY = key(0)


def test_duplicate_site_name():
    def model():
        ppl.sample("x", dist.Normal(0.0, 1.0))
        ppl.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ppl.ModelError, match="'x' is used twice"):
        ppl.compile(model)


def test_observed_shape_inconsistent_with_plate():
    with pytest.raises(ppl.ModelError, match=r"'y'.*\(7,\).*plate 'school' \(size 8"):
        ppl.compile(eight_schools, SIGMA, y=Y[:7])


def test_observed_column_vector_would_broadcast():
    def model(y):
        mu = ppl.sample("mu", dist.Normal(jnp.zeros(4), 1.0).to_event(1))
        ppl.sample("y", dist.Normal(mu, 1.0).to_event(0), obs=y)

    with pytest.raises(ppl.ModelError, match=r"'y'.*\(4, 1\).*\(4, 4\)"):
        ppl.compile(model, np.zeros((4, 1)))


def test_observed_value_outside_support():
    def model(k):
        p = ppl.sample("p", dist.Beta(1.0, 1.0))
        with ppl.plate("trial", 3):
            ppl.sample("k", dist.Binomial(10, p), obs=k)

    with pytest.raises(ppl.ModelError, match=r"'k'.*1 value\(s\) outside the support.*index \(1,\)"):
        ppl.compile(model, np.array([3, 11, 2]))


def test_event_shape_mismatch():
    def model(x):
        ppl.sample("x", dist.MultivariateNormal(jnp.zeros(3), jnp.eye(3)), obs=x)

    with pytest.raises(ppl.ModelError, match=r"'x'.*\(2,\).*event shape \(3,\)"):
        ppl.compile(model, np.zeros(2))


def test_latent_discrete_site_given_to_nuts():
    def model():
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        z = ppl.sample("z", dist.Poisson(3.0))  # no enumerate support: cannot be summed out
        ppl.sample("x", dist.Normal(mu + z, 1.0), obs=0.5)

    with pytest.raises(ppl.ModelError, match="latent site 'z' is discrete.*no enumerate support"):
        ppl.nuts(model, key=KEY, chains=1, warmup=10, draws=10)


def test_invalid_distribution_parameter_names_the_site_before():
    def model(y):
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        ppl.sample("y", dist.Normal(mu, -1.0), obs=y)

    with pytest.raises(ppl.ModelError, match=r"after site 'mu'.*invalid scale"):
        ppl.compile(model, 0.5)


def test_observation_impossible_under_every_start_is_named():
    def model(y):
        width = ppl.sample("width", dist.HalfNormal(1.0))
        ppl.sample("y", dist.Uniform(0.0, 1e-3 * width), obs=y)

    with pytest.raises(ppl.ModelError, match=r"'y'"):
        ppl.nuts(model, 0.5, key=KEY, chains=1, warmup=10, draws=10)


def test_support_that_moves_with_latents_is_not_an_error():
    """y ~ Uniform(0, theta): y = 1.5 is outside the support for small theta only."""

    def model(y):
        theta = ppl.sample("theta", dist.Exponential(0.5))
        ppl.sample("y", dist.Uniform(0.0, theta), obs=y)

    cm = ppl.compile(model, 1.5)
    u = cm.init(KEY)
    assert float(cm.constrain(u)["theta"]) > 1.5


def test_nonfinite_factor_is_named():
    def model():
        x = ppl.sample("x", dist.Normal(0.0, 1.0))
        ppl.factor("wall", jnp.where(x > 10.0, 0.0, -jnp.inf))

    with pytest.raises(ppl.ModelError, match=r"'wall' \(factor"):
        ppl.compile(model).init(KEY)


@pytest.mark.parametrize("bad_key", [None, 0])
def test_key_must_be_a_prng_key(bad_key):
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        ppl.nuts(eight_schools, SIGMA, y=Y, key=bad_key)


@pytest.mark.parametrize("field, value", [("chains", 0), ("draws", 0), ("warmup", -1)])
def test_bad_run_lengths(field, value):
    settings = {"chains": 1, "warmup": 1, "draws": 1} | {field: value}
    with pytest.raises(ValueError, match=field):
        ppl.nuts(eight_schools, SIGMA, y=Y, key=KEY, **settings)


def test_no_latent_site():
    def model(y):
        ppl.sample("y", dist.Normal(0.0, 1.0), obs=y)

    with pytest.raises(ppl.ModelError, match="no latent continuous site"):
        ppl.nuts(model, 0.1, key=KEY)
