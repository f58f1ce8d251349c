"""Bad objectives and guides fail at the boundary, naming the site."""

import jax
import jax.numpy as jnp
import pytest

import ppl
from ppl import dist
from tests.seeds import key
from tests.vi.models import NORMAL_PARAMS, Y, normal_guide, normal_model

KEY = key(0)


def objective_with(guide, particles=None):
    @ppl.vi.expectation
    def objective(p):
        values, log_q = ppl.vi.sim(guide, p, particles=particles)
        return jnp.sum(log_q)

    return objective


@pytest.mark.parametrize(
    "site_dist,grad,message",
    [
        (dist.Bernoulli(0.3), ppl.vi.reparam(), "site 'b': BernoulliProbs has no reparameterised sampler"),
        (dist.Normal(0.0, 1.0), ppl.vi.enum(), "site 'b': grad='enum' needs a finite support"),
        (dist.Normal(0.0, 1.0), ppl.vi.implicit(), "site 'b': implicit reparameterisation is for"),
        (dist.Bernoulli(0.3).expand([2]).to_event(1), ppl.vi.mvd(), "site 'b': measure-valued derivatives"),
        (dist.Bernoulli(0.3), "magic", "site 'b': unknown estimator 'magic'"),
    ],
)
def test_impossible_estimator_names_the_site(site_dist, grad, message):
    def guide(p):
        ppl.sample("b", site_dist, infer={"grad": grad})

    with pytest.raises(ValueError, match=message):
        objective_with(guide).estimate(KEY, 0.0)


def test_enumeration_inside_particles_is_refused():
    def guide(p):
        ppl.sample("b", dist.Bernoulli(0.3), infer={"grad": ppl.vi.enum()})

    with pytest.raises(ValueError, match="site 'b': grad='enum' cannot be used .* inside particles"):
        objective_with(guide, particles=3).estimate(KEY, 0.0)


def test_density_needs_every_latent_and_only_sites():
    with pytest.raises(ppl.ModelError, match="latent site 'z' of normal_model has no value"):
        ppl.vi.density(normal_model, {}, NORMAL_PARAMS, Y)
    with pytest.raises(ppl.ModelError, match=r"values \['w'\] are not sample sites of normal_model"):
        ppl.vi.density(normal_model, {"z": 0.0, "w": 1.0}, NORMAL_PARAMS, Y)
    with pytest.raises(ppl.ModelError, match="site 'y' of normal_model is observed but also given a value"):
        ppl.vi.density(normal_model, {"z": 0.0, "y": Y}, NORMAL_PARAMS, Y)


def test_density_rejects_particle_axes():
    with pytest.raises(ppl.ModelError, match=r"site 'z': value has shape \(5,\) .* shape \(\)"):
        ppl.vi.density(normal_model, {"z": jnp.zeros(5)}, NORMAL_PARAMS, Y)


def test_language_outside_an_objective():
    with pytest.raises(RuntimeError, match="must run inside an objective built with ppl.vi.expectation"):
        ppl.vi.sim(normal_guide(), NORMAL_PARAMS, Y)


def test_objective_must_return_a_scalar():
    @ppl.vi.expectation
    def vector(p):
        values, _ = ppl.vi.sim(normal_guide(), p, Y, particles=3)
        return values["z"]

    with pytest.raises(ValueError, match=r"must return a scalar, got shape \(3,\)"):
        vector.estimate(KEY, NORMAL_PARAMS)


def test_duplicate_guide_sites():
    def guide(p):
        ppl.sample("b", dist.Normal(0.0, 1.0))
        ppl.sample("b", dist.Normal(0.0, 1.0))

    with pytest.raises(ppl.ModelError, match="guide site 'b' is sampled twice"):
        objective_with(guide).estimate(KEY, 0.0)


def test_same_key_same_estimate():
    objective = ppl.vi.objectives.iwae(normal_model, normal_guide(), 4)
    first = objective.value_and_grad_estimate(KEY, NORMAL_PARAMS, Y)
    second = objective.value_and_grad_estimate(KEY, NORMAL_PARAMS, Y)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), first, second))
