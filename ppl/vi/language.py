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
give every other random choice the same value), batched with ``vmap``.

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
from jax.scipy.special import logsumexp
from numpyro import handlers
from numpyro.primitives import Messenger

from ppl.errors import ModelError
from ppl.vi import estimators as est

__all__ = [
    "Expectation",
    "Family",
    "density",
    "expectation",
    "leave_one_out",
    "marginal",
    "mean_over_data",
    "normalize",
    "sample_guide",
    "sim",
]

_STACK: list[_Context] = []


@functools.partial(jax.tree_util.register_dataclass, data_fields=["log_q", "baseline"], meta_fields=["kind"])
@dataclass
class _Record:
    """One guide site as the surrogate needs it; ``log_q`` has the particle axes
    of the ``sim`` call that drew it (``()`` for a single draw)."""

    kind: str
    log_q: jax.Array
    baseline: jax.Array | None = None


class _Branch(Exception):
    """Raised at the first ``enum``/``mvd`` site whose value is not yet forced."""

    def __init__(self, site, fn, estimator, rng_key):
        super().__init__(site)
        self.site, self.fn, self.estimator, self.rng_key = site, fn, estimator, rng_key


@dataclass
class _Context:
    rng_key: jax.Array
    forced: Mapping[str, jax.Array]
    records: dict[str, _Record] = field(default_factory=dict)
    calls: int = 0
    loo_baselines: jax.Array | None = None

    def next_call(self) -> tuple[jax.Array, str]:
        index = self.calls
        self.calls += 1
        return jax.random.fold_in(self.rng_key, index), f"call{index}/"


def _current(what: str) -> _Context:
    if not _STACK:
        raise RuntimeError(
            f"ppl.vi.{what} draws random choices, so it must run inside an objective built with "
            "ppl.vi.expectation; to draw from a guide directly use ppl.vi.sample_guide"
        )
    return _STACK[-1]


# --------------------------------------------------------------------------- sites


def _check_shape(site: str, fn, value, sample_shape=()) -> None:
    expected = tuple(sample_shape) + tuple(fn.batch_shape) + tuple(fn.event_shape)
    if tuple(jnp.shape(value)) != expected:
        raise ModelError(
            f"site '{site}': value has shape {tuple(jnp.shape(value))} but the distribution "
            f"{type(fn).__name__} (with its plates) has shape {expected}; for several particles "
            "use sim(..., particles=K) and vmap density over them"
        )


def _site_log_prob(msg) -> jax.Array:
    log_prob = msg["fn"].log_prob(msg["value"])
    if msg.get("scale") is not None:
        log_prob = msg["scale"] * log_prob
    return jnp.sum(log_prob)


class _GuideRun(Messenger):
    """Draw each unobserved sample site of a guide with its estimator and record it.

    ``constraints`` fixes sites to given values (they add to ``weight`` and are not
    recorded); ``forced`` fixes branch values of ``enum``/``mvd`` sites;
    ``branching`` says what an unforced ``enum``/``mvd`` site does: ``"raise"``
    (hand the continuation to :func:`_surrogate`), ``"error"`` (not allowed here)
    or ``"draw"`` (plain sampling, for :func:`sample_guide`).
    """

    def __init__(self, rng_key, prefix, forced, constraints, branching):
        super().__init__(fn=None)
        self.rng_key, self.prefix, self.forced = rng_key, prefix, forced
        self.constraints, self.branching = constraints or {}, branching
        self.values: dict[str, jax.Array] = {}
        self.records: dict[str, _Record] = {}
        self.log_probs: dict[str, jax.Array] = {}
        self.weight = jnp.zeros(())
        self._estimators: dict[str, est.Estimator] = {}

    def process_message(self, msg):
        if msg["type"] != "sample" or msg["is_observed"]:
            return
        name, fn = msg["name"], msg["fn"]
        if name in self.values:
            raise ModelError(f"guide site '{name}' is sampled twice; site names must be unique")
        sample_shape = tuple(msg["kwargs"].get("sample_shape", ()))
        site_key = jax.random.fold_in(self.rng_key, len(self.values))
        full_name = self.prefix + name
        if name in self.constraints:
            value = jnp.asarray(self.constraints[name])
            _check_shape(name, fn, value, sample_shape)
        else:
            estimator = est.resolve(msg["infer"].get("grad"), name, fn)
            self._estimators[name] = estimator
            if full_name in self.forced:
                value = self.forced[full_name]
            elif estimator.branches and self.branching != "draw":
                if sample_shape:
                    raise ModelError(f"site '{name}': grad={estimator.kind!r} needs sample_shape ()")
                if self.branching == "error":
                    raise ValueError(
                        f"site '{name}': grad={estimator.kind!r} cannot be used for a site drawn "
                        "inside particles or marginal/normalize (enumerating every particle jointly "
                        "is exponential); use reinforce()/reparam() there, or draw the particles "
                        "with separate sim calls"
                    )
                raise _Branch(full_name, fn, estimator, site_key)
            elif estimator.branches:
                value = jax.lax.stop_gradient(fn.sample(site_key, sample_shape))
            else:
                value = estimator.draw(site_key, fn, sample_shape)
        self.values[name] = value
        msg["value"] = value

    def postprocess_message(self, msg):
        if msg["type"] != "sample" or msg["is_observed"]:
            return
        name = msg["name"]
        log_prob = _site_log_prob(msg)
        self.log_probs[name] = log_prob
        if name in self.constraints:
            self.weight = self.weight + log_prob
            return
        estimator = self._estimators[name]
        baseline = None
        if estimator.kind == "reinforce" and estimator.baseline is not None:
            baseline = jnp.asarray(estimator.baseline, dtype=log_prob.dtype)
        kind = "forced" if self.prefix + name in self.forced else estimator.kind
        self.records[self.prefix + name] = _Record(kind, log_prob, baseline)


def _run_guide(guide, args, kwargs, rng_key, prefix, forced, constraints=None, branching="raise"):
    run = _GuideRun(rng_key, prefix, forced, constraints, branching)
    with run:
        guide(*args, **kwargs)
    if constraints:
        unused = set(constraints) - set(run.values)
        if unused:
            raise ModelError(f"values {sorted(unused)} are not sample sites of {_name(guide)}")
    return run


def _name(fn) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


class _RequireValues(Messenger):
    def __init__(self, model, values):
        super().__init__(fn=None)
        self.model, self.values = model, values

    def process_message(self, msg):
        if msg["type"] != "sample":
            return
        name = msg["name"]
        if msg["is_observed"] and name in self.values:
            raise ModelError(
                f"density: site '{name}' of {_name(self.model)} is observed but also given a value"
            )
        if msg["value"] is None and not msg["is_observed"]:
            raise ModelError(
                f"density: latent site '{name}' of {_name(self.model)} has no value "
                f"(values given: {sorted(self.values)})"
            )


def log_joint(model: Callable, values: Mapping[str, Any], args=(), kwargs=None) -> jax.Array:
    """``log p(values, observations)`` of a plain model: every latent site needs a value."""
    kwargs = kwargs or {}
    with handlers.trace() as trace, _RequireValues(model, values), handlers.substitute(data=dict(values)):
        model(*args, **kwargs)
    unused = set(values) - {name for name, site in trace.items() if site["type"] == "sample"}
    if unused:
        raise ModelError(f"density: values {sorted(unused)} are not sample sites of {_name(model)}")
    total = jnp.zeros(())
    for name, site in trace.items():
        if site["type"] == "sample":
            _check_shape(name, site["fn"], site["value"], site["kwargs"].get("sample_shape", ()))
            total = total + _site_log_prob(site)
    return total


# --------------------------------------------------------------------------- families


class Family:
    """A guide whose density is only estimated: what :func:`marginal` and
    :func:`normalize` return, usable wherever :func:`sim` and :func:`density` take
    a guide.

    ``simulate`` returns values and ``log_q`` with ``exp(-log_q)`` unbiased for
    ``1 / q(values)``; ``estimate_log_density`` returns ``log_q`` with ``exp(log_q)``
    unbiased for ``q(values)``.
    """

    def simulate(self, rng_key, prefix, forced, branching, args, kwargs):  # pragma: no cover - interface
        raise NotImplementedError

    def estimate_log_density(self, rng_key, prefix, values, args, kwargs):  # pragma: no cover - interface
        raise NotImplementedError


class _Guide(Family):
    """A plain guide function: exact density."""

    def __init__(self, fn):
        self.fn = fn

    def simulate(self, rng_key, prefix, forced, branching, args, kwargs):
        run = _run_guide(self.fn, args, kwargs, rng_key, prefix, forced, branching=branching)
        return run.values, sum(run.log_probs.values(), jnp.zeros(())), run.records

    def estimate_log_density(self, rng_key, prefix, values, args, kwargs):
        return log_joint(self.fn, values, args, kwargs), {}


def _as_family(guide) -> Family:
    return guide if isinstance(guide, Family) else _Guide(guide)


def _particles(family: Family, rng_key, prefix, num, args, kwargs):
    """``num`` independent draws of ``family`` (vmapped), records with a leading axis."""

    def one(key):
        return family.simulate(key, prefix, {}, "error", args, kwargs)

    return jax.vmap(one)(jax.random.split(rng_key, num))


class _Marginal(Family):
    def __init__(self, guide, keep, num_particles):
        self.guide, self.keep, self.num_particles = guide, tuple(keep), num_particles

    def _weights(self, rng_key, prefix, kept, num, args, kwargs):
        """``log q(kept | aux_i)`` for ``num`` fresh auxiliary draws from the guide."""

        def one(key):
            run = _run_guide(self.guide, args, kwargs, key, prefix, {}, constraints=kept, branching="error")
            return run.weight, run.records

        return jax.vmap(one)(jax.random.split(rng_key, num))

    def simulate(self, rng_key, prefix, forced, branching, args, kwargs):
        joint_key, aux_key = jax.random.split(rng_key)
        run = _run_guide(self.guide, args, kwargs, joint_key, prefix, forced, branching=branching)
        missing = set(self.keep) - set(run.values)
        if missing:
            raise ModelError(f"marginal: {sorted(missing)} are not sample sites of {_name(self.guide)}")
        kept = {name: run.values[name] for name in self.keep}
        log_weights = jnp.stack([run.log_probs[name] for name in self.keep]).sum()[None]
        records = dict(run.records)
        if self.num_particles > 1:
            more, aux_records = self._weights(
                aux_key, prefix + "aux/", kept, self.num_particles - 1, args, kwargs
            )
            log_weights = jnp.concatenate([log_weights, more])
            records.update(aux_records)
        # The drawn auxiliary value is one particle of a conditional SIR targeting
        # q(aux | kept): mean of the weights estimates q(kept), its reciprocal 1/q(kept).
        return kept, logsumexp(log_weights) - jnp.log(self.num_particles), records

    def estimate_log_density(self, rng_key, prefix, values, args, kwargs):
        kept = {name: values[name] for name in self.keep}
        log_weights, records = self._weights(rng_key, prefix, kept, self.num_particles, args, kwargs)
        return logsumexp(log_weights) - jnp.log(self.num_particles), records


class _Normalized(Family):
    def __init__(self, model, proposal, num_particles):
        self.model, self.proposal, self.num_particles = model, _as_family(proposal), num_particles

    def _log_target(self, values, args, kwargs):
        return jax.vmap(lambda v: log_joint(self.model, v, args, kwargs))(values)

    def simulate(self, rng_key, prefix, forced, branching, args, kwargs):
        draw_key, pick_key = jax.random.split(rng_key)
        values, log_q, records = _particles(self.proposal, draw_key, prefix, self.num_particles, args, kwargs)
        log_w = self._log_target(values, args, kwargs) - log_q
        index = jax.random.categorical(pick_key, jax.lax.stop_gradient(log_w))
        # The resampling index is a random choice whose law depends on the parameters.
        records = dict(records)
        records[prefix + "resample"] = _Record("reinforce", jax.nn.log_softmax(log_w)[index])
        chosen = jax.tree.map(lambda leaf: leaf[index], values)
        log_normalizer = logsumexp(log_w) - jnp.log(self.num_particles)
        return chosen, log_w[index] + log_q[index] - log_normalizer, records

    def estimate_log_density(self, rng_key, prefix, values, args, kwargs):
        draws, log_q, records = _particles(
            self.proposal, rng_key, prefix, self.num_particles - 1, args, kwargs
        )
        own_key = jax.random.fold_in(rng_key, self.num_particles)
        own_log_q, own_records = self.proposal.estimate_log_density(
            own_key, prefix + "own/", values, args, kwargs
        )
        log_p = log_joint(self.model, values, args, kwargs)
        log_w = jnp.concatenate([(log_p - own_log_q)[None], self._log_target(draws, args, kwargs) - log_q])
        return log_p - (logsumexp(log_w) - jnp.log(self.num_particles)), {**records, **own_records}


def marginal(guide: Callable, keep, particles: int = 1) -> Family:
    """The marginal of a guide over the sites in ``keep``, auxiliaries integrated out
    by importance sampling with ``particles`` draws (the drawn one included).

    ``sim`` returns an unbiased estimate of ``1/q(kept)`` (as ``-log_q``), ``density``
    an unbiased estimate of ``q(kept)``; with ``particles=1`` this is HVI's
    ``log q(kept | aux)``, with ``m`` it is IWHVI's. Example::

        q = ppl.vi.marginal(guide, keep=["x", "y"], particles=5)
        values, log_q = ppl.vi.sim(q, params)        # values: {"x", "y"}
    """
    if int(particles) < 1:
        raise ValueError(f"marginal: particles must be >= 1, got {particles}")
    return _Marginal(guide, keep, int(particles))


def normalize(model: Callable, proposal, particles: int) -> Family:
    """The sampling-importance-resampling family: ``particles`` proposals weighted by
    ``model``'s (unnormalised) density, one resampled.

    ``sim`` returns the resampled value and ``log p(z) - log Z_hat``, whose negated
    exponential is unbiased for ``1/q_SIR(z)`` (so the ELBO of this family is the
    IWAE bound); ``density`` runs conditional SIR for an unbiased ``q_SIR(z)``.
    """
    if int(particles) < 1:
        raise ValueError(f"normalize: particles must be >= 1, got {particles}")
    return _Normalized(model, proposal, int(particles))


# --------------------------------------------------------------------------- language


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
    family = _as_family(guide)
    if particles is None:
        values, log_q, records = family.simulate(rng_key, prefix, context.forced, "raise", args, kwargs)
    else:
        if int(particles) < 1:
            raise ValueError(f"sim: particles must be >= 1, got {particles}")
        values, log_q, records = _particles(family, rng_key, prefix, int(particles), args, kwargs)
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
    return log_joint(target, values, args, kwargs)


def leave_one_out(values: jax.Array, reduce: Callable = jnp.mean) -> jax.Array:
    """``reduce(values)``, registering per-particle leave-one-out baselines.

    ``values`` has one entry per particle of a ``sim(..., particles=K)`` call. The
    score-function term of particle ``k`` uses the baseline ``reduce`` of ``values``
    with entry ``k`` replaced by the mean of the others: it does not depend on
    particle ``k``, so the estimate stays unbiased. With ``reduce=logmeanexp`` over
    log weights this is VIMCO.
    """
    context = _current("leave_one_out")
    values = jnp.asarray(values)
    if values.ndim != 1 or values.shape[0] < 2:
        raise ValueError(f"leave_one_out: values must have shape (K,) with K >= 2, got {values.shape}")
    if context.loo_baselines is not None:
        raise ValueError("leave_one_out may be used once per objective")
    num = values.shape[0]
    others_mean = (jnp.sum(values) - values) / (num - 1)
    replaced = jnp.where(jnp.eye(num, dtype=bool), others_mean[:, None], values[None, :])
    context.loo_baselines = jax.lax.stop_gradient(jax.vmap(reduce)(replaced))
    return reduce(values)


def _box(log_prob):
    """DiCE's magic box: value 1, gradient ``grad log_prob``."""
    return jnp.exp(log_prob - jax.lax.stop_gradient(log_prob))


def _leaf(context: _Context, value) -> jax.Array:
    value = jnp.asarray(value)
    if value.shape != ():
        raise ValueError(f"an objective must return a scalar, got shape {value.shape}")
    scored = [record for record in context.records.values() if record.kind == "reinforce"]
    total_log_q = sum((jnp.sum(record.log_q) for record in scored), jnp.zeros(()))
    surrogate = value * _box(total_log_q)
    fixed_value = jax.lax.stop_gradient(value)
    for record in scored:
        if record.baseline is not None:
            baseline = jnp.broadcast_to(record.baseline, record.log_q.shape)
            surrogate = surrogate + jnp.sum((1.0 - _box(record.log_q)) * baseline)
            # A learned baseline regresses on the value; zero in value, no gradient
            # for anything else (the baseline's own parameters get the least-squares step).
            squared = jnp.square(fixed_value - baseline)
            surrogate = surrogate - jnp.sum(squared - jax.lax.stop_gradient(squared))
        elif context.loo_baselines is not None and record.log_q.shape[:1] == context.loo_baselines.shape:
            per_particle = record.log_q.reshape(record.log_q.shape[0], -1).sum(axis=1)
            surrogate = surrogate + jnp.sum((1.0 - _box(per_particle)) * context.loo_baselines)
    return surrogate


def _surrogate(program: Callable, rng_key, args, forced) -> jax.Array:
    context = _Context(rng_key, forced)
    _STACK.append(context)
    try:
        value = program(*args)
    except _Branch as branch:
        branched = branch
    else:
        branched = None
    finally:
        _STACK.pop()
    if branched is not None:
        return _branches(program, rng_key, args, forced, branched)
    return _leaf(context, value)


def _branches(program, rng_key, args, forced, branch: _Branch) -> jax.Array:
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
    """The expected value of a program; see :func:`expectation`."""

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
        return f"Expectation({_name(self.program)})"


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
    each with a leading axis ``(num_samples, ...)``; ``enum``/``mvd`` sites are drawn."""

    def one(key):
        run = _run_guide(guide, args, kwargs, key, "", {}, branching="draw")
        return run.values

    return jax.lax.stop_gradient(jax.vmap(one)(jax.random.split(rng_key, num_samples)))
