"""Per-element multi-sample bounds (``plate=`` of iwae / vimco / renyi) against exact
values and gradients.

- A guide equal to the exact posterior makes every log weight the log evidence of its
  element, so each bound equals ``sum_b log p(x_b)`` on every draw (deterministic).
- With a Bernoulli latent per element the expected bound is a finite sum over the
  ``2^K`` particle configurations of each element: its exact gradient checks the
  REINFORCE (and VIMCO leave-one-out) estimators with the harness's 5-SE rule; the
  whole-batch bound (``plate=None``), a different objective, fails the same check.
- Reparameterised: value and gradients of the Gaussian per-element IWAE against a
  hand-written per-element loss on a (K, B) tensor, two independent Monte Carlo means
  compared within 5 combined standard errors; DReG against the same gradient.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp
from numpyro import handlers

import ppl
from ppl import dist
from ppl.errors import ModelError
from ppl.vi.objectives import iwae, renyi, vimco
from tests.seeds import key
from tests.vi.harness import Z_MAX, assert_biased, assert_unbiased, gradient_draws

X = jnp.array([-0.7, 0.4, 1.9])
K = 3


def gaussian_model(params, x, scale=1.0):
    with ppl.plate("data", x.shape[0]), handlers.scale(scale=scale):
        z = ppl.sample("z", dist.Normal(0.0, 1.0))
        ppl.sample("x", dist.Normal(z, 1.0), obs=x)


def gaussian_guide(params, x, scale=1.0):
    with ppl.plate("data", x.shape[0]), handlers.scale(scale=scale):
        ppl.sample("z", dist.Normal(params["m"] * x, jnp.exp(params["s"])))


POSTERIOR = {"m": jnp.array(0.5), "s": jnp.array(0.5 * np.log(0.5))}  # z | x ~ N(x/2, 1/2)
EVIDENCE = float(jnp.sum(dist.Normal(0.0, np.sqrt(2.0)).log_prob(X)))


@pytest.mark.parametrize(
    "objective",
    [
        iwae(gaussian_model, gaussian_guide, K, plate="data"),
        iwae(gaussian_model, gaussian_guide, K, gradient="dreg", plate="data"),
        iwae(gaussian_model, gaussian_guide, K, gradient="stl", plate="data"),
        vimco(gaussian_model, gaussian_guide, K, plate="data"),
        renyi(gaussian_model, gaussian_guide, 0.5, K, plate="data"),
    ],
    ids=["iwae", "dreg", "stl", "vimco", "renyi"],
)
def test_posterior_guide_gives_the_evidence_on_every_draw(objective):
    for i in range(3):
        assert float(objective.estimate(key(i), POSTERIOR, X)) == pytest.approx(EVIDENCE, abs=1e-5)
    # A plate scale of 1/B multiplies each element's bound: the batch mean.
    mean = objective.estimate(key(0), POSTERIOR, X, 1.0 / 3)
    assert float(mean) == pytest.approx(EVIDENCE / 3, abs=1e-5)


@pytest.mark.parametrize("gradient", ["dreg", "stl"])
def test_path_gradients_vanish_at_the_posterior_guide(gradient):
    """At the exact posterior ``log w`` is constant in ``z``: the DReG and STL gradients
    of the guide's parameters are zero on every draw (the standard one is not: its score
    term only has mean zero)."""
    objective = iwae(gaussian_model, gaussian_guide, K, gradient=gradient, plate="data")
    for i in range(3):
        grads = objective.grad_estimate(key(i), POSTERIOR, X)
        for name in POSTERIOR:
            assert abs(float(grads[name])) < 1e-4, (name, grads[name])


# ----------------------------------------------------------- Bernoulli latent: exact gradient


def bernoulli_model(params, x):
    with ppl.plate("data", x.shape[0]):
        z = ppl.sample("z", dist.Bernoulli(0.3))
        ppl.sample("x", dist.Normal(2.0 * z - 1.0 + params["shift"], 1.0), obs=x)


def bernoulli_guide(params, x):
    with ppl.plate("data", x.shape[0]):
        ppl.sample(
            "z",
            dist.Bernoulli(logits=params["a"] + params["b"] * x),
            infer={"grad": ppl.vi.reinforce()},
        )


BERNOULLI_PARAMS = {"a": jnp.array(0.2), "b": jnp.array(-0.4), "shift": jnp.array(0.1)}


def exact_bernoulli_bound(params, alpha=0.0):
    """``sum_b E[1/(1-alpha) log (1/K) sum_k w_kb^(1-alpha)]`` (IWAE at ``alpha = 0``) over
    all ``2^K`` configurations per element."""
    configs = jnp.array(list(itertools.product([0.0, 1.0], repeat=K)))  # (2^K, K)
    q = dist.Bernoulli(logits=params["a"] + params["b"] * X)  # batch (B,)
    z = configs[:, :, None]  # (2^K, K, 1)
    log_q = q.log_prob(z)  # (2^K, K, B)
    log_p = dist.Bernoulli(0.3).log_prob(z) + dist.Normal(2.0 * z - 1.0 + params["shift"], 1.0).log_prob(X)
    bound = (logsumexp((1 - alpha) * (log_p - log_q), axis=1) - jnp.log(K)) / (1 - alpha)  # (2^K, B)
    probability = jnp.exp(jnp.sum(log_q, axis=1))  # (2^K, B)
    return jnp.sum(probability * bound)


EXACT_GRADIENT = jax.grad(exact_bernoulli_bound)(BERNOULLI_PARAMS)


@pytest.mark.parametrize("build", [iwae, vimco], ids=["iwae-reinforce", "vimco"])
def test_per_element_score_gradients_are_unbiased(build):
    objective = build(bernoulli_model, bernoulli_guide, K, plate="data")
    assert_unbiased(objective, BERNOULLI_PARAMS, X, exact=EXACT_GRADIENT, seed=11)


def test_per_element_renyi_gradient_is_unbiased():
    exact = jax.grad(exact_bernoulli_bound)(BERNOULLI_PARAMS, 0.5)
    objective = renyi(bernoulli_model, bernoulli_guide, 0.5, K, plate="data")
    assert_unbiased(objective, BERNOULLI_PARAMS, X, exact=exact, seed=15)
    # the IWAE gradient (alpha = 0) is another quantity: the same check catches it
    # (40,000 draws: the expected |z| of the largest coordinate is about 13)
    assert_biased(objective, BERNOULLI_PARAMS, X, exact=EXACT_GRADIENT, seed=16, num=40_000)


def test_whole_batch_bound_fails_the_per_element_check():
    objective = iwae(bernoulli_model, bernoulli_guide, K)
    # 40,000 draws: the expected |z| of the largest coordinate is about 11
    assert_biased(objective, BERNOULLI_PARAMS, X, exact=EXACT_GRADIENT, seed=12, num=40_000)


def test_vimco_has_lower_variance_than_plain_reinforce():
    plain = gradient_draws(
        iwae(bernoulli_model, bernoulli_guide, K, plate="data"), BERNOULLI_PARAMS, X, seed=13
    )
    loo = gradient_draws(
        vimco(bernoulli_model, bernoulli_guide, K, plate="data"), BERNOULLI_PARAMS, X, seed=14
    )
    # Guide coordinates a, b: VIMCO's baselines remove most of the score's variance.
    assert np.all(loo[:, :2].var(0) < 0.8 * plain[:, :2].var(0))


def whole_credit_guide(params, x):
    """``bernoulli_guide`` with a zero learned baseline: the same estimator, but a site
    with a baseline is credited with the whole bound (the broken variant below)."""
    with ppl.plate("data", x.shape[0]):
        ppl.sample(
            "z",
            dist.Bernoulli(logits=params["a"] + params["b"] * x),
            infer={"grad": ppl.vi.reinforce(baseline=0.0)},
        )


def test_score_variance_grows_linearly_with_the_plate():
    """Each element's score credits only its own bound: with the 8 data points repeated
    8 times (independent copies) the guide gradient's variance grows 8x (measured 8.1-8.4;
    bound 12, above 8 by several MC standard errors of a variance ratio at 4000 draws);
    crediting the whole bound grows it about 500x."""
    base = jnp.asarray(np.random.default_rng(0).normal(size=8))

    def variance(guide, build, size, seed):
        objective = build(bernoulli_model, guide, K, plate="data")
        draws = gradient_draws(objective, BERNOULLI_PARAMS, jnp.tile(base, size // 8), num=4000, seed=seed)
        return draws[:, :2].var(0)  # the guide's coordinates a, b

    for build, seed in ((iwae, 31), (vimco, 33)):
        ratio = variance(bernoulli_guide, build, 64, seed) / variance(bernoulli_guide, build, 8, seed + 1)
        assert np.all(ratio < 12.0), (build.__name__, ratio)
    whole = variance(whole_credit_guide, iwae, 64, 35) / variance(whole_credit_guide, iwae, 8, 36)
    assert np.all(whole > 30.0), whole


# ----------------------------------------------------------- reparameterised vs hand-written


PARAMS = {"m": jnp.array(-0.3), "s": jnp.array(0.3)}  # far from the posterior: whole-batch and
# per-element bounds differ by about 13 standard errors at NUM draws
NUM = 4000


def hand_written(params, rng_key):
    """The per-element IWAE on one (K, B) noise tensor."""
    eps = jax.random.normal(rng_key, (K, X.shape[0]))
    loc, scale = params["m"] * X, jnp.exp(params["s"])
    z = loc + scale * eps
    log_w = (
        dist.Normal(0.0, 1.0).log_prob(z)
        + dist.Normal(z, 1.0).log_prob(X)
        - dist.Normal(loc, scale).log_prob(z)
    )
    return jnp.sum(logsumexp(log_w, axis=0) - jnp.log(K))


def _draws(fn, seed):
    keys = jax.random.split(key(seed), NUM)
    return jax.jit(jax.vmap(fn))(keys)


def _close(a, b):
    """Two independent Monte Carlo means within Z_MAX combined standard errors."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return abs(a.mean() - b.mean()) <= Z_MAX * se


def test_value_and_gradient_match_the_hand_written_loss():
    hand = _draws(lambda k: jax.value_and_grad(hand_written)(PARAMS, k), 21)
    for gradient, seed in (("standard", 22), ("dreg", 23)):
        objective = iwae(gaussian_model, gaussian_guide, K, gradient=gradient, plate="data")
        ours = _draws(lambda k, o=objective: o.value_and_grad_estimate(k, PARAMS, X), seed)
        assert _close(ours[0], hand[0]), gradient
        for name in PARAMS:
            assert _close(ours[1][name], hand[1][name]), (gradient, name)
    # The whole-batch bound is another (looser) objective: the same check catches it.
    whole = iwae(gaussian_model, gaussian_guide, K)
    assert not _close(_draws(lambda k: whole.estimate(k, PARAMS, X), 24), hand[0])


# ----------------------------------------------------------- errors


def test_site_outside_the_plate_is_named():
    def model(params, x):
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        with ppl.plate("data", x.shape[0]):
            ppl.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(params, x):
        ppl.sample("mu", dist.Normal(params["m"], 1.0))

    with pytest.raises(ModelError, match="site 'mu' .* not inside plate 'data'"):
        iwae(model, guide, K, plate="data").estimate(key(0), {"m": 0.0}, X)


def test_family_guide_and_mixed_scales_are_refused():
    family = ppl.vi.marginal(gaussian_guide, keep=["z"])
    with pytest.raises(ValueError, match="needs a guide function"):
        iwae(gaussian_model, family, K, plate="data")

    def mixed(params, x):
        with ppl.plate("data", x.shape[0]):
            z = ppl.sample("z", dist.Normal(0.0, 1.0))
            with handlers.scale(scale=2.0):
                ppl.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(ValueError, match="different scales"):
        iwae(mixed, gaussian_guide, K, plate="data").estimate(key(0), PARAMS, X)


def test_a_reparameterised_normal_is_scored_from_its_noise():
    """``sim``'s ``log q`` of a reparameterised Normal site (inside a plate and
    ``to_event``) is ``-eps^2/2 - log scale - c``: the value of ``log q(z)`` and, for the
    same key, the same gradient as scoring ``z(eps)`` with NumPyro's ``log_prob``."""

    def guide(params, x):
        with ppl.plate("data", x.shape[0]):
            ppl.sample("z", dist.Normal(params["m"] * x[:, None], jnp.exp(params["s"])).to_event(1))

    def through_sim(params):
        @ppl.vi.expectation
        def log_q(params):
            return ppl.vi.sim(guide, params, X)[1]

        return log_q.surrogate(key(5), params)

    def through_numpyro(params):
        @ppl.vi.expectation
        def log_q(params):
            values = ppl.vi.sim(guide, params, X)[0]
            return ppl.vi.density(guide, values, params, X)

        return log_q.surrogate(key(5), params)

    params = {"m": jnp.array(0.4), "s": jnp.array(-0.3)}
    for ours, theirs in zip(
        jax.value_and_grad(through_sim)(params), jax.value_and_grad(through_numpyro)(params), strict=True
    ):
        np.testing.assert_allclose(
            np.asarray(jax.tree.leaves(ours)), np.asarray(jax.tree.leaves(theirs)), rtol=1e-5, atol=1e-5
        )
