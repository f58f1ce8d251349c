"""Per-site gradient estimators: how a guide's random choice is drawn and differentiated.

A guide picks the estimator of each sample site with ``infer={"grad": ...}``::

    ppl.sample("z", dist.Bernoulli(p), infer={"grad": ppl.vi.mvd()})

Sites without one use :func:`reparam` when the distribution has a reparameterised
sampler and :func:`reinforce` otherwise, so the default is always unbiased.

How each estimator enters the surrogate whose gradient is the estimate (``f`` is the
objective's value, ``sg`` stop-gradient, ``box(t) = exp(t - sg(t))``, DiCE):

==========  ================================================================
reparam     the value is a differentiable function of the parameters
implicit    the same, through the implicit derivative of Gamma-based samplers
reinforce   ``f * box(log q(z))`` (+ ``(1 - box(log q(z))) * b`` with a baseline b)
enum        ``sum_v q(v) f(v)``: the rest of the program re-runs for every value
mvd         ``f(z) + sum_{lane, v} sg(f(z with lane := v)) (q_lane(v) - sg(q_lane(v)))``
==========  ================================================================

``enum`` and ``mvd`` need the continuation of the program at values other than the
sampled one; :mod:`ppl.vi.language` re-executes the program with the value forced
(same keys, so every other choice is unchanged), batched with ``vmap`` over values.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln
from numpyro import distributions as dist
from numpyro.distributions.util import validate_sample

__all__ = ["Estimator", "enum", "implicit", "mvd", "reinforce", "reparam"]

# Largest number of joint values one enumerated site may have (2**12 = 4096 is a
# 12-unit binary layer); beyond that enumeration is the wrong tool.
MAX_ENUMERATION = 2**16

IMPLICIT_FAMILIES = (dist.Gamma, dist.Beta, dist.Dirichlet, dist.Chi2, dist.InverseGamma)


@dataclass(frozen=True)
class Estimator:
    """A gradient strategy for one sample site; build one with the functions below."""

    kind: str
    baseline: Any = None

    @property
    def branches(self) -> bool:
        """Whether the site needs the program's continuation at other values."""
        return self.kind in ("enum", "mvd")

    def check(self, site: str, fn: dist.Distribution) -> None:
        """Raise a ``ValueError`` naming ``site`` when ``fn`` cannot use this estimator."""
        if self.kind in ("reparam", "implicit") and not fn.has_rsample:
            raise ValueError(
                f"site '{site}': {type(fn).__name__} has no reparameterised sampler, so "
                f"grad={self.kind!r} is impossible; use ppl.vi.reinforce(), enum() or mvd()"
            )
        if self.kind == "implicit" and not isinstance(fn, IMPLICIT_FAMILIES):
            names = ", ".join(f.__name__ for f in IMPLICIT_FAMILIES)
            raise ValueError(
                f"site '{site}': implicit reparameterisation is for {names}; "
                f"got {type(fn).__name__} (use reparam() for location-scale families)"
            )
        if self.branches and not fn.has_enumerate_support:
            raise ValueError(
                f"site '{site}': grad={self.kind!r} needs a finite support "
                f"(Bernoulli, Categorical, ...); {type(fn).__name__} has none"
            )
        if self.kind == "mvd" and fn.event_shape != ():
            raise ValueError(
                f"site '{site}': measure-valued derivatives need independent scalar lanes "
                f"(event shape ()); {type(fn).__name__} has event shape {fn.event_shape}"
            )

    def draw(self, rng_key: jax.Array, fn: dist.Distribution, sample_shape: tuple) -> jax.Array:
        """A draw whose dependence on the parameters is the one this estimator uses."""
        if self.kind in ("reparam", "implicit"):
            return fn.rsample(rng_key, sample_shape)
        # Score-function draws carry no gradient: the score term carries it instead.
        return jax.lax.stop_gradient(fn.sample(rng_key, sample_shape))

    def draw_with_intermediates(self, rng_key: jax.Array, fn: dist.Distribution, sample_shape: tuple):
        """:meth:`draw` and the draw's intermediates (NumPyro's ``sample_with_intermediates``:
        a transformed distribution's values before each transform, ``[]`` otherwise), with
        which its log-density needs no inverse transform (some flows have none)."""
        value, intermediates = fn.sample_with_intermediates(rng_key, sample_shape)
        if self.kind in ("reparam", "implicit"):
            return value, intermediates
        return jax.lax.stop_gradient((value, intermediates))


def reparam() -> Estimator:
    """Pathwise gradient through ``z = g(eps, params)``. Unbiased when the rest of the
    program is differentiable in ``z`` (no branching or rounding on ``z``)."""
    return Estimator("reparam")


def implicit() -> Estimator:
    """Implicit reparameterisation for Gamma, Beta, Dirichlet, Chi2 and InverseGamma
    (JAX's gamma sampler differentiates its output through the CDF)."""
    return Estimator("implicit")


def reinforce(baseline: Any = None) -> Estimator:
    """Score-function (REINFORCE) gradient ``(f - b) * grad log q(z)``.

    Args:
        baseline: ``None``, a constant, or any differentiable expression of the
            parameters (a *learned* baseline: the surrogate also pulls it toward ``f``
            by least squares, so give it parameters of its own). It must not depend on
            the draw it corrects; for leave-one-out baselines over particles see
            :func:`ppl.vi.leave_one_out`.
    """
    return Estimator("reinforce", baseline)


def enum() -> Estimator:
    """Exact sum over the site's support: zero variance, cost = support size."""
    return Estimator("enum")


def mvd() -> Estimator:
    """Measure-valued derivative for finite sites with independent scalar lanes
    (Bernoulli, Categorical, ... in a plate): the sampled branch
    carries the downstream gradient; each lane's probability gradient uses the
    continuation at every value of that lane (others held at their draws)."""
    return Estimator("mvd")


def resolve(spec: Any, site: str, fn: dist.Distribution) -> Estimator:
    """The estimator of a site: its ``infer["grad"]`` or the unbiased default."""
    if spec is None:
        spec = reparam() if fn.has_rsample else reinforce()
    elif isinstance(spec, str):
        constructors = {
            "reparam": reparam,
            "implicit": implicit,
            "reinforce": reinforce,
            "enum": enum,
            "mvd": mvd,
        }
        if spec not in constructors:
            raise ValueError(
                f"site '{site}': unknown estimator {spec!r}; choose one of {sorted(constructors)}"
            )
        spec = constructors[spec]()
    elif not isinstance(spec, Estimator):
        raise TypeError(
            f"site '{site}': infer['grad'] must be an Estimator or a name, got {type(spec).__name__}"
        )
    spec.check(site, fn)
    return spec


class _SmoothBernoulliLogits(dist.BernoulliLogits):
    """``BernoulliLogits`` whose log-probability is differentiable at logit 0.

    NumPyro 0.22 scores it as ``-(clip(l, 0) + log1p(exp(-|l|)) - l y)``; at ``l = 0``
    JAX takes ``d|l|/dl = 1`` but ``d clip(l, 0)/dl = 1/2``, so ``d log p(1)/dl`` is 1
    instead of 1/2 (and ``d log p(0)/dl`` 0 instead of -1/2): every score, enumeration
    weight and lane probability of such a site had a wrong gradient there.
    """

    @validate_sample
    def log_prob(self, value):
        # softplus = logaddexp(l, 0), whose custom JVP is sigmoid(l) (1/2 at 0, smooth to
        # every order): one exp/log1p pair per entry, like NumPyro's own formula.
        return value * self.logits - jax.nn.softplus(self.logits)


class _SmoothBinomialLogits(dist.BinomialLogits):
    """``BinomialLogits`` scored as ``log C(n, k) + k l - n softplus(l)``, differentiable
    at logit 0 (NumPyro 0.22's ``n clip(l, 0) + n log1p(exp(-|l|))`` has the kink of
    :class:`_SmoothBernoulliLogits`: ``d log p(k)/dl`` is ``k`` there instead of ``k - n/2``)."""

    @validate_sample
    def log_prob(self, value):
        n = jnp.asarray(self.total_count, jnp.result_type(float))
        log_binomial = gammaln(n + 1) - gammaln(value + 1) - gammaln(n - value + 1)
        return log_binomial + value * self.logits - n * jax.nn.softplus(self.logits)


def _smooth_copy(node):
    if type(node) is dist.BernoulliLogits:
        return _SmoothBernoulliLogits(node.logits, validate_args=node._validate_args)
    return _SmoothBinomialLogits(node.logits, node.total_count, validate_args=node._validate_args)


def _has_kink(node) -> bool:
    return type(node) in (dist.BernoulliLogits, dist.BinomialLogits)


def without_kinks(fn: dist.Distribution) -> dist.Distribution:
    """``fn`` with every ``BernoulliLogits`` and ``BinomialLogits`` inside it (wrapped by
    plates, ``to_event``, masks) scored by a formula that is smooth at logit 0; other
    distributions unchanged.

    Example:
        >>> import jax
        >>> from numpyro import distributions as dist
        >>> float(jax.grad(lambda l: without_kinks(dist.Bernoulli(logits=l)).log_prob(1.0))(0.0))
        0.5
    """
    if not any(map(_has_kink, jax.tree.leaves(fn, is_leaf=_has_kink))):
        return fn
    return jax.tree.map(lambda node: _smooth_copy(node) if _has_kink(node) else node, fn, is_leaf=_has_kink)


class _DrawnNormal(dist.Normal):
    """A ``Normal`` scored at its own reparameterised draw ``z = loc + scale * eps``:
    ``log q = -eps^2 / 2 - log scale - log sqrt(2 pi)`` with the noise ``eps`` held fixed.
    As a function of the parameters (and data) for fixed noise this is ``log q(z(eps))``
    itself, so value and every derivative agree; the backward pass skips the path
    through ``z`` that cancels (what a hand-written reparameterised loss does)."""

    def log_prob(self, value):
        noise = jax.lax.stop_gradient((value - self.loc) / self.scale)
        return -0.5 * jnp.square(noise) - jnp.log(self.scale) - 0.5 * jnp.log(2 * jnp.pi)


def scored_at_draw(fn: dist.Distribution) -> dist.Distribution:
    """``fn`` to score its own reparameterised draw: a ``Normal`` (inside ``to_event`` and
    plate expansions only) becomes :class:`_DrawnNormal`; anything else is unchanged."""
    node = fn
    while isinstance(node, (dist.Independent, dist.ExpandedDistribution)):
        node = node.base_dist
    if type(node) is not dist.Normal:
        return fn
    return jax.tree.map(
        lambda leaf: _DrawnNormal(leaf.loc, leaf.scale) if type(leaf) is dist.Normal else leaf,
        fn,
        is_leaf=lambda leaf: type(leaf) is dist.Normal,
    )


def lane_probabilities(fn: dist.Distribution) -> tuple[jax.Array, jax.Array]:
    """Support values ``(K,)`` and per-lane probabilities ``(num_lanes, K)`` of a
    discrete site whose lanes (batch entries) are independent."""
    support = fn.enumerate_support(expand=False)  # (K, 1, ..., 1)
    log_probs = fn.log_prob(support)  # (K, *batch_shape)
    num_values = support.shape[0]
    return support.reshape(num_values), jnp.exp(log_probs.reshape(num_values, -1)).T


def joint_values(fn: dist.Distribution, site: str) -> jax.Array:
    """Every joint value of a (possibly batched) finite site, ``(C, *batch_shape)``."""
    support = fn.enumerate_support(expand=False).reshape(-1)
    shape = fn.batch_shape + fn.event_shape
    num_lanes = int(np.prod(shape))
    count = len(support) ** num_lanes
    if count > MAX_ENUMERATION:
        raise ValueError(
            f"site '{site}': enumerating {len(support)}^{num_lanes} = {count} joint values exceeds "
            f"{MAX_ENUMERATION}; use mvd() or reinforce(), or enumerate inside a vmapped objective"
        )
    indices = np.array(list(itertools.product(range(len(support)), repeat=num_lanes)), dtype=np.int32)
    return support[indices].reshape((count, *shape))


def lane_values(fn: dist.Distribution, sampled: jax.Array) -> jax.Array:
    """``(num_lanes * K, *shape)``: the draw with one lane set to each support value."""
    support, _ = lane_probabilities(fn)
    flat = sampled.reshape(-1)
    num_lanes = flat.shape[0]
    lanes = jnp.repeat(jnp.arange(num_lanes), support.shape[0])
    values = jnp.tile(support, num_lanes).astype(flat.dtype)
    configs = jnp.tile(flat, (lanes.shape[0], 1)).at[jnp.arange(lanes.shape[0]), lanes].set(values)
    return configs.reshape((lanes.shape[0], *sampled.shape))
