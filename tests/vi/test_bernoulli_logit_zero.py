"""``Bernoulli(logits=...)`` at logit exactly 0.

NumPyro 0.22 scores ``BernoulliLogits`` as ``clip(l, 0) + log1p(exp(-|l|)) - l y`` (negated),
whose JAX derivative at ``l = 0`` mixes two conventions (``d|l|/dl = 1``, ``d clip/dl =
1/2``): ``d log p(1)/dl`` is 1 instead of 1/2. ``ppl.vi`` scores such sites without the
kink, so every estimator is exact there.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import distributions as dist

import ppl
from ppl.vi.estimators import without_kinks
from tests.vi.harness import assert_unbiased
from tests.vi.models import DISCRETE_PARAMS, X_OBS, discrete_guide, discrete_model, exact_elbo

AT_ZERO = {**DISCRETE_PARAMS, "t": jnp.array(0.0), "a": jnp.array(0.0)}
EXACT = jax.grad(exact_elbo)(AT_ZERO)  # log_sigmoid: smooth at 0


@pytest.mark.parametrize("value, expected", [(1.0, 0.5), (0.0, -0.5)])
def test_without_kinks_gradient_at_zero(value, expected):
    """Also through the wrappers plates and ``to_event`` put around the site."""

    def log_prob(logits, value):
        fn = dist.Bernoulli(logits=logits).expand((2, 3)).to_event(1)
        return without_kinks(fn).log_prob(jnp.full((2, 3), value)).sum()

    np.testing.assert_allclose(jax.grad(log_prob)(jnp.zeros(3), value), 2 * expected)
    logits = jnp.array([-1.0, 0.0, 2.0])
    plain = dist.Bernoulli(logits=logits).log_prob(value).sum() * 2
    np.testing.assert_allclose(log_prob(logits, value), plain, rtol=1e-6)


def test_model_density_gradient_at_zero():
    values = {"z1": jnp.array(1), "z2": jnp.array(2)}
    grad = jax.grad(lambda p: ppl.vi.density(discrete_model, values, p, X_OBS))(AT_ZERO)
    np.testing.assert_allclose(grad["t"], 0.5)


@pytest.mark.parametrize(
    "grad_z1", [ppl.vi.enum(), ppl.vi.mvd(), ppl.vi.reinforce()], ids=["enum", "mvd", "reinforce"]
)
def test_estimators_at_logit_zero(grad_z1):
    objective = ppl.vi.objectives.elbo(discrete_model, discrete_guide(grad_z1, ppl.vi.enum()))
    assert_unbiased(objective, AT_ZERO, X_OBS, exact=EXACT)


@pytest.mark.parametrize("count", [0.0, 2.0, 3.0])
def test_binomial_logits_gradient_at_zero(count):
    """``d log p(k)/dl = k - n sigmoid(l)``: ``k - 1.5`` at 0 for ``n = 3`` (NumPyro: ``k``)."""

    def log_prob(logits):
        return without_kinks(dist.Binomial(3, logits=logits).expand((2,))).log_prob(count).sum()

    np.testing.assert_allclose(jax.grad(log_prob)(0.0), 2 * (count - 1.5), rtol=1e-6)
    plain = dist.Binomial(3, logits=0.7).log_prob(count) * 2
    np.testing.assert_allclose(log_prob(0.7), plain, rtol=1e-6)


def test_smooth_copies_keep_support_validation():
    with pytest.warns(UserWarning, match="Out-of-support"):
        log_p = without_kinks(dist.Bernoulli(logits=0.0, validate_args=True)).log_prob(0.5)
    assert float(log_p) == -np.inf
