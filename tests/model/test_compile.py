"""compile: the flat log density equals NumPyro's log density plus the log-Jacobians."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from numpyro.distributions import constraints
from numpyro.distributions.transforms import OrderedTransform, biject_to
from numpyro.infer.util import log_density
from scipy import stats

import ppl
from ppl import dist
from ppl.model.compile import flatten, merge_data, split_data, unflatten
from tests.models import SIGMA, Y, eight_schools
from tests.seeds import key, seed


def normal_plate(y):
    mu = ppl.sample("mu", dist.Normal(0.0, 10.0))
    with ppl.plate("n", y.shape[0]):
        ppl.sample("y", dist.Normal(mu, 1.0), obs=y)


def positive(y):
    a = ppl.sample("a", dist.HalfNormal(2.0))
    b = ppl.sample("b", dist.Exponential(1.5))
    c = ppl.sample("c", dist.LogNormal(0.0, 0.5))
    with ppl.plate("n", y.shape[0]):
        ppl.sample("y", dist.Gamma(a + b, c), obs=y)


def simplex(counts):
    p = ppl.sample("p", dist.Dirichlet(jnp.array([1.0, 2.0, 3.0, 4.0])))
    ppl.sample("counts", dist.Multinomial(counts.sum(), p), obs=counts)


def corr_cholesky(x):
    L = ppl.sample("L", dist.LKJCholesky(3, 2.0))
    scale = ppl.sample("scale", dist.HalfNormal(jnp.ones(3)).to_event(1))
    with ppl.plate("n", x.shape[0]):
        ppl.sample("x", dist.MultivariateNormal(0.0, scale_tril=scale[:, None] * L), obs=x)


def corr_matrix():
    ppl.sample("C", dist.LKJ(3, 1.5))


def ordered(y):
    cut = ppl.sample(
        "cut", dist.TransformedDistribution(dist.Normal(0.0, 3.0).expand([3]), OrderedTransform())
    )
    with ppl.plate("n", y.shape[0]):
        ppl.sample("y", dist.OrderedLogistic(jnp.zeros(y.shape[0]), cut), obs=y)


def bounded(y):
    lo = ppl.sample("lo", dist.Uniform(-1.0, 2.0))
    p = ppl.sample("p", dist.Beta(2.0, 3.0))
    with ppl.plate("n", y.shape[0]):
        ppl.sample("y", dist.Normal(lo, p + 0.5), obs=y)


def nested_plates(y):
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    with ppl.plate("group", y.shape[1], dim=-1):
        offset = ppl.sample("offset", dist.Normal(0.0, 1.0))
        ppl.deterministic("level", mu + offset)
        with ppl.plate("item", y.shape[0], dim=-2):
            ppl.sample("y", dist.Normal(mu + offset, 1.0), obs=y)


def with_factor():
    x = ppl.sample("x", dist.Normal(0.0, 1.0))
    ppl.factor("soft_constraint", -0.5 * (x - 1.0) ** 2)


def circular():
    ppl.sample("angle", dist.VonMises(0.5, 2.0))


def numpyro_native(y):
    """Written against numpyro.* directly: runs in ppl unchanged."""
    s = numpyro.sample("s", numpyro.distributions.InverseGamma(3.0, 2.0))
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("y", numpyro.distributions.StudentT(4.0, 0.0, s), obs=y)


rng = np.random.default_rng(seed(0))
MODELS = {
    "normal_plate": (normal_plate, (rng.normal(size=5),)),
    "positive": (positive, (rng.gamma(2.0, size=6),)),
    "simplex": (simplex, (np.array([3.0, 1.0, 4.0, 1.0]),)),
    "corr_cholesky": (corr_cholesky, (rng.normal(size=(4, 3)),)),
    "corr_matrix": (corr_matrix, ()),
    "ordered": (ordered, (np.array([0, 1, 3, 2, 1]),)),
    "bounded": (bounded, (rng.normal(size=4),)),
    "nested_plates": (nested_plates, (rng.normal(size=(3, 2)),)),
    "with_factor": (with_factor, ()),
    "circular": (circular, ()),
    "numpyro_native": (numpyro_native, (rng.normal(size=5),)),
    "eight_schools": (eight_schools, (SIGMA, Y)),
}


def oracle_logdensity(model, args, cm, u):
    """NumPyro's log joint at the constrained point plus every site's log|Jacobian|."""
    params = unflatten(u, cm.layout)
    constrained, log_jacobian = {}, 0.0
    for site in cm.latent_sites:
        transform = biject_to(site["fn"].support)
        value = transform(params[site["name"]])
        constrained[site["name"]] = value
        log_jacobian += jnp.sum(transform.log_abs_det_jacobian(params[site["name"]], value))
    return log_density(model, args, {}, constrained)[0] + log_jacobian


@pytest.mark.parametrize("name", sorted(MODELS))
def test_logdensity_matches_numpyro_plus_jacobian(name):
    model, args = MODELS[name]
    cm = ppl.compile(model, *args)
    points = jax.random.normal(key(0), (3, cm.dim))
    ours = jax.jit(jax.vmap(cm.logdensity))(points)
    reference = jax.jit(jax.vmap(lambda u: oracle_logdensity(model, args, cm, u)))(points)
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-4)


def test_logdensity_closed_form_with_scipy():
    """log p(u) for sigma = exp(u): HalfNormal(2) prior, Normal(0, sigma) likelihood, + u."""
    y = np.array([0.3, -1.2, 2.0])

    def model(y):
        sigma = ppl.sample("sigma", dist.HalfNormal(2.0))
        with ppl.plate("n", 3):
            ppl.sample("y", dist.Normal(0.0, sigma), obs=y)

    cm = ppl.compile(model, y)
    for u in (-1.0, 0.0, 0.7):
        sigma = np.exp(u)
        expected = stats.halfnorm.logpdf(sigma, scale=2.0) + stats.norm.logpdf(y, 0, sigma).sum() + u
        np.testing.assert_allclose(cm.logdensity(jnp.array([u])), expected, rtol=1e-5)


def test_layout_dims_and_coords():
    cm = ppl.compile(eight_schools, SIGMA, y=Y)
    assert cm.layout == (("mu", ()), ("tau", ()), ("eta", (8,)))
    assert cm.dim == 10
    assert cm.dims["eta"] == ("school",) and cm.dims["theta"] == ("school",) and cm.dims["y"] == ("school",)
    np.testing.assert_array_equal(cm.coords["school"], np.arange(8))
    nested = ppl.compile(nested_plates, rng.normal(size=(3, 2)))
    assert nested.dims["y"] == ("item", "group") and nested.dims["level"] == ("group",)
    chol = ppl.compile(corr_cholesky, rng.normal(size=(4, 3)))
    assert chol.dims["L"] == ("L_dim_0", "L_dim_1")
    assert chol.layout[0] == ("L", (3,))  # 3x3 correlation Cholesky has 3 free coordinates


@pytest.mark.parametrize("name", ["simplex", "corr_cholesky", "ordered", "bounded", "eight_schools"])
def test_constrain_unconstrain_round_trip(name):
    model, args = MODELS[name]
    cm = ppl.compile(model, *args)
    u = cm.init(key(3))
    values = cm.constrain(u)
    np.testing.assert_allclose(cm.unconstrain(values), u, rtol=1e-4, atol=1e-4)
    for site in cm.latent_sites:
        assert bool(jnp.all(site["fn"].support(values[site["name"]])))


def test_init_is_valid_and_deterministic():
    cm = ppl.compile(positive, rng.gamma(2.0, size=6))
    u = cm.init(key(0))
    assert np.all(np.abs(u) < 2.0) and np.isfinite(cm.logdensity(u))
    np.testing.assert_array_equal(u, cm.init(key(0)))
    assert not np.array_equal(u, cm.init(key(1)))


def test_sample_prior_shapes_and_moments():
    cm = ppl.compile(eight_schools, SIGMA, y=Y)
    draws = cm.sample_prior(key(0), 4000)
    assert draws["mu"].shape == (4000,) and draws["eta"].shape == (4000, 8)
    assert draws["y"].shape == (4000, 8) and draws["theta"].shape == (4000, 8)
    # mu ~ N(0, 5): mean within 5 standard errors (5 * 5 / sqrt(4000) = 0.40).
    assert abs(float(draws["mu"].mean())) < 5 * 5.0 / np.sqrt(4000)
    assert not np.allclose(draws["y"][0], Y)  # observed sites are re-sampled


def test_split_and_merge_data():
    args, kwargs = (SIGMA, 3, "name"), {"y": Y, "flag": True, "nothing": None}
    arrays, static = split_data(args, kwargs)
    assert len(arrays) == 2 and hash(static)
    back_args, back_kwargs = merge_data(arrays, static)
    assert back_args[1:] == (3, "name") and back_kwargs["flag"] is True and back_kwargs["nothing"] is None
    np.testing.assert_array_equal(back_kwargs["y"], Y)


def test_flatten_inverts_unflatten():
    layout = (("a", ()), ("b", (2, 3)))
    u = jnp.arange(7.0)
    np.testing.assert_array_equal(flatten(unflatten(u, layout), layout), u)


def test_improper_support_sites_compile():
    def model():
        ppl.sample("x", dist.ImproperUniform(constraints.positive, (), (2,)))

    cm = ppl.compile(model)
    assert cm.dim == 2 and np.isfinite(cm.logdensity(jnp.zeros(2)))
