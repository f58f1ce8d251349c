"""The objective language: ``expectation``, ``sim``, ``density``, ``marginal``, ``normalize``.

An objective is a Python function of parameters (and data) that draws from a guide
with :func:`sim`, scores values under a model with :func:`density`, and returns a
scalar. :func:`expectation` turns it into an :class:`Expectation` whose
``grad_estimate`` is an unbiased estimate of the gradient of the objective's expected
value, whatever mix of per-site estimators the guide uses (see
:mod:`ppl.vi.estimators`)::

    @ppl.vi.expectation
    def elbo(params, data):
        z, log_q = ppl.vi.sim(guide, params, data)
        return ppl.vi.density(model, z, params, data) - log_q

    grads = elbo.grad_estimate(jax.random.key(0), params, data)

How it works. Running the objective records every guide site (its estimator and
log-density). The gradient is that of a surrogate with the objective's value:
score-function sites enter through the DiCE box ``f * exp(tau - sg(tau))`` and
their baselines; ``enum`` and ``mvd`` sites need the rest of the program at other
values, so the program is re-executed with the site's value forced (the same keys
give every other random choice the same value), batched with ``vmap``. An objective
that returns the log weight of :func:`log_weight` (the ELBO) gets Rao-Blackwellised
score terms instead: each site's score times the terms downstream of it only.

Randomness: each ``sim``/``density`` call inside an objective gets the key
``fold_in(rng_key, call_index)`` and each site inside it ``fold_in(call_key,
site_index)``, so the same key gives the same estimate.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp

from ppl.model.data import merge_data, split_data
from ppl.runtime.cache import function_key
from ppl.vi import estimators as est
from ppl.vi import rao_blackwell as rb
from ppl.vi.families import Family, _Normalized, as_family, draw_particles, marginal, normalize
from ppl.vi.sites import (
    Branch,
    SiteRecord,
    callable_name,
    is_autoguide,
    log_joint,
    log_joint_terms,
    run_guide,
)

__all__ = [
    "Expectation",
    "Family",
    "density",
    "expectation",
    "leave_one_out",
    "log_weight",
    "marginal",
    "mean_over_data",
    "normalize",
    "sample_guide",
    "sim",
]


_STACK: list[_Context] = []


@dataclass
class _Context:
    rng_key: jax.Array
    forced: Mapping[str, jax.Array]
    records: dict[str, SiteRecord] = field(default_factory=dict)
    calls: int = 0
    loo_baselines: jax.Array | None = None
    autoguides: list = field(default_factory=list)  # checked against the models they are scored by
    costs: list = field(default_factory=list)  # log weights (_Cost) and plate bounds (_ElementCost)
    element_records: list[str] = field(default_factory=list)  # drawn by sim_elements: (K, B) scores

    def next_call(self) -> tuple[jax.Array, str]:
        index = self.calls
        self.calls += 1
        return jax.random.fold_in(self.rng_key, index), f"call{index}/"


@dataclass(frozen=True)
class _Cost:
    """A log weight returned by :func:`log_weight`, with what its score terms need:
    ``whole`` names the records whose scores multiply the whole value, ``sites`` and
    ``terms`` the Rao-Blackwellised ones (:mod:`ppl.vi.rao_blackwell`)."""

    total: jax.Array
    whole: tuple[str, ...]
    sites: tuple[rb.ScoreSite, ...] = ()
    terms: tuple[rb.Term, ...] = ()


@dataclass(frozen=True)
class _ElementCost:
    """A bound summed over the elements of a data plate (:mod:`ppl.vi.elements`):
    ``total = scale * sum_b elements_b``. The score sites of ``records`` (drawn by
    ``sim_elements``, their ``score_log_q`` of shape ``(K, B)``) credit element ``b``'s
    score only with element ``b``'s bound, and ``loo`` (``(K, B)`` or ``None``) holds
    VIMCO's leave-one-out baselines per particle and element."""

    total: jax.Array
    elements: jax.Array
    scale: jax.Array
    records: tuple[str, ...]
    loo: jax.Array | None = None


def _current(what: str) -> _Context:
    if not _STACK:
        raise RuntimeError(
            f"ppl.vi.{what} draws random choices, so it must run inside an objective built with "
            "ppl.vi.expectation; to draw from a guide directly use ppl.vi.sample_guide"
        )
    return _STACK[-1]


def sim(
    guide: Callable | Family, *args: Any, particles: int | None = None, **kwargs: Any
) -> tuple[dict, jax.Array]:
    """Draw from a guide: ``(values, log_q)``.

    Args:
        guide: a guide function (its sites pick estimators with ``infer={"grad": ...}``)
            or a :class:`Family` from :func:`marginal` / :func:`normalize`.
        *args: passed to the guide.
        particles: ``None`` for one draw; ``K`` for ``K`` independent draws, every
            value and ``log_q`` with a leading axis of length ``K``.
        **kwargs: passed to the guide.

    Returns:
        ``(values, log_q)``: a dict site name -> value, and ``log q(values)`` (an
        estimate for a :class:`Family`) of shape ``()`` or ``(K,)``.
    """
    context = _current("sim")
    rng_key, prefix = context.next_call()
    if is_autoguide(guide) and guide not in context.autoguides:
        context.autoguides.append(guide)
    family = as_family(guide)
    if particles is None:
        values, log_q, records = family.simulate(rng_key, prefix, context.forced, "raise", args, kwargs)
    else:
        if int(particles) < 1:
            raise ValueError(f"sim: particles must be >= 1, got {particles}")
        values, log_q, records = draw_particles(family, rng_key, prefix, int(particles), args, kwargs)
    context.records.update(records)
    return values, log_q


def density(target, values: Mapping[str, Any], *args, **kwargs) -> jax.Array:
    """``log p(values, observations)`` under a model (or a guide).

    For a plain function this is exact and deterministic: every latent site must have
    a value and every value must be a site. For a :class:`Family` it is the log of an
    unbiased density estimate and must run inside an objective.
    """
    if isinstance(target, Family):
        context = _current("density")
        rng_key, prefix = context.next_call()
        log_q, records = target.estimate_log_density(rng_key, prefix, values, args, kwargs)
        context.records.update(records)
        return log_q
    autoguides = _STACK[-1].autoguides if _STACK else ()
    return log_joint(target, values, args, kwargs, autoguides)


def log_weight(
    model: Callable, guide: Callable | Family, *args: Any, **kwargs: Any
) -> tuple[dict, jax.Array]:
    """One draw of ``guide`` scored under ``model``: ``(values, log p(x, z) - log q(z))``,
    both programs called with ``*args, **kwargs``; ``sim`` then ``density`` in one call.

    When the objective returns this log weight itself (the ELBO), each REINFORCE site's
    score multiplies only the terms downstream of it (plate by plate, see
    :mod:`ppl.vi.rao_blackwell`) instead of the whole value: same expectation, variance
    growing like the number of plate elements instead of its square. Any other use of
    the log weight (a sum, a log-mean-exp over particles) gets the whole-value score,
    correct as always. For ``normalize(model, proposal, K)`` as the guide of the same
    ``model`` the log weight is ``log Z_hat``, which does not depend on the resampling
    index, so the index's score term is dropped.

    Example::

        @ppl.vi.expectation
        def elbo(params, x):
            return ppl.vi.log_weight(model, guide, params, x)[1]
    """
    context = _current("log_weight")
    earlier = tuple(context.records)
    if isinstance(guide, _Normalized) and guide.model is model:
        return _evidence_weight(context, guide, earlier, args, kwargs)
    if isinstance(guide, Family):
        values, log_q = sim(guide, *args, **kwargs)
        log_w = density(model, values, *args, **kwargs) - log_q
        context.costs.append(_Cost(log_w, tuple(context.records)))
        return values, log_w
    rng_key, prefix = context.next_call()
    if is_autoguide(guide) and guide not in context.autoguides:
        context.autoguides.append(guide)
    run = run_guide(guide, args, kwargs, rng_key, prefix, context.forced)
    context.records.update(run.records)
    log_p, model_sites = log_joint_terms(model, run.values, args, kwargs, context.autoguides)
    log_w = log_p - sum(run.log_probs.values(), jnp.zeros(()))
    sites, terms = _structure(run, prefix, model_sites)
    context.costs.append(_Cost(log_w, earlier, sites, terms))
    return run.values, log_w


def _structure(run, prefix, model_sites):
    """The REINFORCE sites of a guide run and the terms of its log weight (model terms
    then ``-log q`` terms), each with the latest guide position it may depend on."""
    positions = {name: position for position, name in enumerate(run.plate_forms)}
    sites = tuple(
        rb.ScoreSite(name, positions[name], run.plate_forms[name][1], run.records[prefix + name].baseline)
        for name in run.plate_forms
        if run.records[prefix + name].kind == "reinforce"
    )
    latents = [latent for latent, _ in model_sites]
    guide_carriers = tuple(
        rb.Carrier(positions[name], rb.plate_set(scaled), False)
        for name, (scaled, _) in run.plate_forms.items()
    )
    model_terms, model_carriers = [], ()
    for (latent, cost), reach in zip(model_sites, rb.model_reach(latents, positions), strict=True):
        if latent is not None:
            model_carriers += (rb.Carrier(positions[latent], rb.plate_set(cost), True),)
        model_terms.append(rb.Term(cost, reach, guide_carriers + model_carriers))
    guide_terms = [
        rb.Term(rb.PlateArray(-scaled.values, scaled.plates), positions[name], guide_carriers)
        for name, (scaled, _) in run.plate_forms.items()
    ]
    return sites, tuple(model_terms + guide_terms)


def _evidence_weight(context, family, earlier, args, kwargs):
    """:func:`log_weight` of ``normalize(model, ...)`` under the same model: ``log Z_hat``,
    a function of the proposals only, so the resampling index's score is left out."""
    rng_key, prefix = context.next_call()
    values, _, records, log_normalizer, index = family.draw(rng_key, prefix, args, kwargs)
    context.records.update(records)
    proposals = tuple(name for name in records if name != index)
    context.costs.append(_Cost(log_normalizer, earlier + proposals))
    return values, log_normalizer


def leave_one_out(values: jax.Array, reduce: Callable = jnp.mean) -> jax.Array:
    """``reduce(values)``, registering per-particle leave-one-out baselines.

    ``values`` has one entry per particle of a ``sim(..., particles=K)`` call along its
    first axis, ``(K,)`` or ``(K, B)`` (per element of a data plate; ``reduce`` then maps
    ``(K, B)`` to a scalar). The score-function term of particle ``k`` uses the baseline
    ``reduce`` of ``values`` with entry ``k`` replaced by the mean of the others: it
    does not depend on particle ``k``, so the estimate stays unbiased. With
    ``reduce=logmeanexp`` over log weights this is VIMCO.
    """
    context = _current("leave_one_out")
    values = jnp.asarray(values)
    if values.ndim not in (1, 2) or values.shape[0] < 2:
        raise ValueError(
            f"leave_one_out: values must have shape (K,) or (K, B) with K >= 2, got {values.shape}"
        )
    if context.loo_baselines is not None:
        raise ValueError("leave_one_out may be used once per objective")
    replaced = each_replaced_by_the_others(values)
    context.loo_baselines = jax.lax.stop_gradient(jax.vmap(reduce)(replaced))
    return reduce(values)


def each_replaced_by_the_others(values: jax.Array) -> jax.Array:
    """``(K, K, ...)``: entry ``k`` is ``values`` (``(K, ...)``) with row ``k`` replaced by
    the mean of the other rows (the leave-one-out inputs of VIMCO's baselines)."""
    num = values.shape[0]
    others_mean = (jnp.sum(values, axis=0) - values) / (num - 1)
    own = jnp.eye(num, dtype=bool).reshape(num, num, *([1] * (values.ndim - 1)))
    return jnp.where(own, others_mean[:, None], values[None, :])


def _box(log_prob):
    """DiCE's magic box: value 1, gradient ``grad log_prob``."""
    return jnp.exp(log_prob - jax.lax.stop_gradient(log_prob))


def _leaf(context: _Context, value) -> jax.Array:
    cost = next((cost for cost in context.costs if cost.total is value), None)
    value = jnp.asarray(value)
    if value.shape != ():
        raise ValueError(f"an objective must return a scalar, got shape {value.shape}")
    if cost is None:
        return _whole_value_scores(context, value, context.records.values())
    if isinstance(cost, _ElementCost):
        return _element_scores(context, value, cost)
    whole = [context.records[name] for name in cost.whole]
    return _whole_value_scores(context, value, whole) + rb.score_terms(cost.sites, cost.terms)


def _whole_value_scores(context: _Context, value, records) -> jax.Array:
    """``value`` with the score terms of ``records`` multiplying the whole value."""
    scored = [record for record in records if record.kind == "reinforce"]
    # Scores use each site's unscaled log q (SiteRecord): NumPyro's scale weighs the value only.
    total_score = sum((jnp.sum(record.score_log_q) for record in scored), jnp.zeros(()))
    surrogate = value * _box(total_score)
    fixed_value = jax.lax.stop_gradient(value)
    for record in scored:
        if record.baseline is not None:
            baseline = jnp.broadcast_to(record.baseline, record.score_log_q.shape)
            surrogate = surrogate + jnp.sum((1.0 - _box(record.score_log_q)) * baseline)
            # A learned baseline regresses on the value; zero in value, no gradient
            # for anything else (the baseline's own parameters get the least-squares step).
            squared = jnp.square(fixed_value - baseline)
            surrogate = surrogate - jnp.sum(squared - jax.lax.stop_gradient(squared))
        elif (
            context.loo_baselines is not None and record.score_log_q.shape[:1] == context.loo_baselines.shape
        ):
            per_particle = record.score_log_q.reshape(record.score_log_q.shape[0], -1).sum(axis=1)
            surrogate = surrogate + jnp.sum((1.0 - _box(per_particle)) * context.loo_baselines)
    return surrogate


def _element_scores(context: _Context, value, cost: _ElementCost) -> jax.Array:
    """``value`` with each plate element's score crediting only that element's bound:
    ``scale sum_b f_b box(S_b)`` (plus VIMCO's ``scale sum_kb (1 - box(s_kb)) loo_kb``),
    ``s_kb`` the particle's log q of element ``b``, ``S_b = sum_k s_kb``. Unbiased because
    element ``b``'s bound depends only on its own latents (every site in the plate). A
    learned baseline or a score site from elsewhere falls back to whole-value scores."""
    scored = [context.records[name] for name in cost.records if context.records[name].kind == "reinforce"]
    others = [
        record
        for name, record in context.records.items()
        if record.kind == "reinforce" and name not in cost.records
    ]
    if others or any(record.baseline is not None for record in scored):
        return _whole_value_scores(context, value, context.records.values())
    if not scored:
        return value
    scores = sum(record.score_log_q for record in scored)  # (K, B)
    surrogate = cost.scale * jnp.sum(cost.elements * _box(jnp.sum(scores, axis=0)))
    if cost.loo is not None:
        surrogate = surrogate + cost.scale * jnp.sum((1.0 - _box(scores)) * cost.loo)
    return surrogate


def _surrogate(program: Callable, rng_key, args, forced) -> jax.Array:
    context = _Context(rng_key, forced)
    _STACK.append(context)
    try:
        value = program(*args)
    except Branch as branch:
        branched = branch
    else:
        branched = None
    finally:
        _STACK.pop()
    if branched is not None:
        return _branches(program, rng_key, args, forced, branched)
    return _leaf(context, value)


def _branches(program, rng_key, args, forced, branch: Branch) -> jax.Array:
    """Combine the continuations of an ``enum`` or ``mvd`` site (see estimators)."""

    def continuation(value):
        return _surrogate(program, rng_key, args, {**forced, branch.site: value})

    fn, site = branch.fn, branch.site
    if branch.estimator.kind == "enum":
        configs = est.joint_values(fn, site)
        log_weights = jax.vmap(lambda config: jnp.sum(fn.log_prob(config)))(configs)
        return jnp.sum(jnp.exp(log_weights) * jax.vmap(continuation)(configs))
    sampled = jax.lax.stop_gradient(fn.sample(branch.rng_key))
    support, probabilities = est.lane_probabilities(fn)
    outcomes = jax.vmap(continuation)(est.lane_values(fn, sampled))
    # Lane 0 set to its own drawn value is the sampled configuration itself.
    own = jnp.argmax(support == sampled.reshape(-1)[0])
    probabilities = probabilities.reshape(-1)
    correction = jnp.sum(
        jax.lax.stop_gradient(outcomes) * (probabilities - jax.lax.stop_gradient(probabilities))
    )
    return outcomes[own] + correction


class Expectation:
    """The expected value of a program; see :func:`expectation`.

    ``model`` and ``guide`` are the functions the objective was built from when known
    (the constructors of :mod:`ppl.vi.objectives` set them; ``None`` for a hand-written
    program): :meth:`ppl.vi.VIResult.to_arviz` draws from that guide by default.
    """

    model: Callable | None = None
    guide: Callable | None = None

    def __init__(self, program: Callable):
        self.program = program
        functools.update_wrapper(self, program)

    def surrogate(self, rng_key: jax.Array, *args) -> jax.Array:
        """A scalar with the estimate's value whose gradient is the gradient estimate."""
        return _surrogate(self.program, rng_key, args, {})

    def estimate(self, rng_key: jax.Array, *args) -> jax.Array:
        """One unbiased estimate of the expected value, ``()``."""
        return jax.lax.stop_gradient(self.surrogate(rng_key, *args))

    def grad_estimate(self, rng_key: jax.Array, *args, argnums=0):
        """One unbiased estimate of the gradient with respect to ``args[argnums]``
        (a pytree like that argument; a tuple for a tuple ``argnums``)."""
        return jax.grad(lambda *a: self.surrogate(rng_key, *a), argnums=argnums)(*args)

    def value_and_grad_estimate(self, rng_key: jax.Array, *args, argnums=0):
        """``(estimate, grad_estimate)`` from one draw."""
        return jax.value_and_grad(lambda *a: self.surrogate(rng_key, *a), argnums=argnums)(*args)

    def __repr__(self) -> str:
        return f"Expectation({callable_name(self.program)})"

    # A static argument of compiled programs (``ppl.vi.fit``): compared by what it computes,
    # so the same objective built twice (``objectives.elbo(model, guide)``) shares them.
    def _key(self):
        return (type(self), function_key(self.program))

    def __eq__(self, other) -> bool:
        return isinstance(other, Expectation) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def expectation(program: Callable) -> Expectation:
    """Turn an objective program into an :class:`Expectation`.

    Example:
        >>> import jax, jax.numpy as jnp, ppl
        >>> from ppl import dist
        >>> def guide(mu):
        ...     ppl.sample("x", dist.Normal(mu, 1.0))
        >>> @ppl.vi.expectation
        ... def second_moment(mu):
        ...     values, _ = ppl.vi.sim(guide, mu)
        ...     return values["x"] ** 2
        >>> keys = jax.random.split(jax.random.key(0), 20000)
        >>> grads = jax.vmap(second_moment.grad_estimate, (0, None))(keys, 1.5)
        >>> round(float(grads.mean()), 1)  # d/dmu (mu^2 + 1) = 2 mu
        3.0
    """
    return Expectation(program)


class _MeanOverData(Expectation):
    def __init__(self, objective: Expectation, in_axes):
        super().__init__(objective.program)
        self.objective, self.in_axes = objective, tuple(in_axes)

    def surrogate(self, rng_key, *args):
        if len(args) != len(self.in_axes):
            raise ValueError(f"mean_over_data: in_axes {self.in_axes} given for {len(args)} arguments")
        sizes = {
            jax.tree.leaves(a)[0].shape[axis]
            for a, axis in zip(args, self.in_axes, strict=True)
            if axis is not None
        }
        if len(sizes) != 1:
            raise ValueError(f"mean_over_data: mapped arguments have different sizes {sorted(sizes)}")
        keys = jax.random.split(rng_key, sizes.pop())
        return jnp.mean(jax.vmap(self.objective.surrogate, in_axes=(0, *self.in_axes))(keys, *args))

    def __repr__(self) -> str:
        return f"mean_over_data({self.objective!r})"

    def _key(self):
        return (type(self), self.objective._key(), self.in_axes)


def mean_over_data(objective: Expectation, in_axes=(None, 0)) -> Expectation:
    """The average of a per-datum objective over a batch, as one :class:`Expectation`.

    ``in_axes`` says, as for ``jax.vmap``, which arguments carry the data axis (default:
    parameters shared, first data argument mapped). Each datum gets its own key, so
    per-datum objectives (IWAE, VIMCO, enumeration of a local discrete latent) stay
    per-datum: ``log mean_k w_k`` is taken for each image, not for the whole batch.

    Example::

        per_image = ppl.vi.objectives.iwae(vae_model, vae_guide, num_particles=5)
        batch_iwae = ppl.vi.mean_over_data(per_image)     # batch_iwae(params, images)
    """
    return _MeanOverData(objective, in_axes)


def sample_guide(guide, rng_key: jax.Array, num_samples: int, *args, **kwargs) -> dict[str, jax.Array]:
    """``num_samples`` independent draws of every site of ``guide`` (no gradients),
    each with a leading axis ``(num_samples, ...)``; ``enum``/``mvd`` sites are drawn.

    One compiled program per guide, ``num_samples`` and non-array arguments: arrays and
    floats are its arguments (``ppl.model.data.split_data``), so new parameters or data
    of the same shape do not recompile. An auxiliary site (an autoguide's joint latent)
    is not returned."""
    try:
        hash(guide)
    except TypeError:  # not a static argument: draw op by op
        return _draw_guide(guide, int(num_samples), rng_key, args, kwargs)
    arrays, static = split_data(args, kwargs)
    return _draw_guide_compiled(guide, int(num_samples), static, rng_key, arrays)


def _draw_guide(guide, num_samples, rng_key, args, kwargs):
    def one(key):
        run = run_guide(guide, args, kwargs, key, "", {}, branching="draw")
        return run.values

    return jax.lax.stop_gradient(jax.vmap(one)(jax.random.split(rng_key, num_samples)))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _draw_guide_compiled(guide, num_samples, static, rng_key, arrays):
    args, kwargs = merge_data(arrays, static)
    return _draw_guide(guide, num_samples, rng_key, args, kwargs)
