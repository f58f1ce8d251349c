"""Running a guide or a model on given values: the site-level half of ``ppl.vi``.

:class:`_GuideRun` is the NumPyro messenger that draws each guide site with its
estimator (or raises :class:`Branch` at an ``enum``/``mvd`` site that needs the
continuation) and records what the surrogate needs; :func:`log_joint` scores a model
on values with the checks that catch missing, extra and mis-shaped values.

Param sites (``ppl.param`` / ``numpyro.param``, and so NumPyro's autoguides) take their
value from the parameter dict, the first argument of every guide and model run here
(:class:`SubstituteParams`): ``params[name]`` is unconstrained and mapped through the site's
constraint, as NumPyro's SVI stores them, so an optimiser may move it freely. An
autoguide sets itself up on its first run (NumPyro's lazy prototype trace of the
model), which needs concrete data and a key from an enclosing ``seed`` handler:
:func:`ppl.vi.initial_params` provides both and adds the initial values of every param
site to the parameters; ``ppl.vi.fit`` calls it when a run raises :class:`ParamsNeeded`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
from numpyro import handlers
from numpyro.distributions import constraints as dist_constraints
from numpyro.distributions.transforms import biject_to
from numpyro.infer.autoguide import AutoGuide
from numpyro.primitives import Messenger

from ppl.errors import ModelError
from ppl.vi import estimators as est
from ppl.vi.rao_blackwell import PlateArray, plate_form

# The key a param message carries while its name is missing from the parameters: a
# collector further out (ppl.vi.initial_params) clears it, otherwise SubstituteParams raises.
UNSET_PARAM = "ppl_unset_param"


class ParamsNeeded(ModelError):
    """A param site has no value in the parameters, or an autoguide is not set up yet;
    :func:`ppl.vi.initial_params` supplies both (``ppl.vi.fit`` calls it by itself)."""


def constrain_param(value, constraint):
    """The value of a param site stored unconstrained as ``value``."""
    if constraint is dist_constraints.real:
        return value  # also a pytree (numpyro.module's network parameters)
    return biject_to(constraint)(value)


def unconstrain_param(value, constraint):
    """Inverse of :func:`constrain_param`."""
    if constraint is dist_constraints.real:
        return value
    return biject_to(constraint).inv(value)


class SubstituteParams(Messenger):
    """Give every param site its value from ``params`` (a dict, unconstrained values)."""

    def __init__(self, params, owner):
        super().__init__(fn=None)
        self.params, self.owner = params, owner

    def process_message(self, msg):
        if msg["type"] != "param":
            return
        if isinstance(self.params, Mapping) and msg["name"] in self.params:
            constraint = msg["kwargs"].get("constraint", dist_constraints.real)
            msg["value"] = constrain_param(self.params[msg["name"]], constraint)
        else:
            msg[UNSET_PARAM] = True

    def postprocess_message(self, msg):
        if msg["type"] == "param" and msg.get(UNSET_PARAM):
            where = (
                "a dict of parameters" if isinstance(self.params, Mapping) else "parameters given as a dict"
            )
            raise ParamsNeeded(
                f"param site '{msg['name']}' of {callable_name(self.owner)} has no value: it needs {where} "
                "(the first argument) with an entry of that name. Start from "
                "params = ppl.vi.initial_params(objective, params, *data, key=key), which adds the "
                "initial value of every param site; ppl.vi.fit does this by itself"
            )


def _first(args):
    return args[0] if args else None


def is_autoguide(fn) -> bool:
    """Whether ``fn`` is one of NumPyro's autoguides (``AutoNormal``, ``AutoDelta``, ...)."""
    return isinstance(fn, AutoGuide)


def set_up_autoguide(guide, args, kwargs) -> None:
    """Run NumPyro's lazy set-up of an autoguide (its prototype trace of the model) once.

    The set-up draws initial values, so it takes a key from an enclosing ``seed``
    handler, and keeps arrays computed from the data on the guide, so the data must be
    concrete (not traced by ``jit``/``vmap``). Call inside a NumPyro handler.
    """
    if not is_autoguide(guide) or guide.prototype_trace is not None:
        return
    name = type(guide).__name__
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs))):
        raise ParamsNeeded(
            f"{name} sets itself up on its first run (a prototype trace of its model), which must "
            "see concrete data, not values traced by jit or vmap: call "
            "params = ppl.vi.initial_params(objective, params, *data, key=key) first "
            "(ppl.vi.fit does this by itself)"
        )
    rng_key = numpyro.prng_key()
    if rng_key is None:
        raise ParamsNeeded(
            f"{name} sets itself up on its first run and draws its initial values, which needs a key: "
            "call params = ppl.vi.initial_params(objective, params, *data, key=key) first "
            "(ppl.vi.fit does this by itself)"
        )
    # NumPyro's set-up happens on the first call; its sites stay inside the block.
    with handlers.block(), handlers.seed(rng_seed=rng_key):
        guide(*args, **kwargs)


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["score_log_q", "baseline"], meta_fields=["kind"]
)
@dataclass
class SiteRecord:
    """One guide site as the surrogate needs it.

    ``score_log_q`` is the log-density of the distribution the value was drawn from,
    *without* NumPyro's ``scale`` (a subsampled plate's ``N / B``): it is what the
    score term ``grad log q(z)`` differentiates, while the objective's value sees the
    scaled log-density. It has the particle axes of the ``sim`` call that drew it
    (``()`` for a single draw)."""

    kind: str
    score_log_q: jax.Array
    baseline: jax.Array | None = None


class Branch(Exception):
    """Raised at the first ``enum``/``mvd`` site whose value is not yet forced."""

    def __init__(self, site, fn, estimator, rng_key):
        super().__init__(site)
        self.site, self.fn, self.estimator, self.rng_key = site, fn, estimator, rng_key


def _check_shape(site: str, fn, value, sample_shape=()) -> None:
    expected = tuple(sample_shape) + tuple(fn.batch_shape) + tuple(fn.event_shape)
    if tuple(jnp.shape(value)) != expected:
        raise ModelError(
            f"site '{site}': value has shape {tuple(jnp.shape(value))} but the distribution "
            f"{type(fn).__name__} (with its plates) has shape {expected}; for several particles "
            "use sim(..., particles=K) and vmap density over them"
        )


def unscaled_log_prob(msg) -> jax.Array:
    """A sample site's elementwise log-density, NumPyro's ``scale`` not applied (the draw's
    intermediates used when it has them, Bernoulli's kink at logit 0 removed)."""
    fn, intermediates = est.without_kinks(msg["fn"]), msg.get("intermediates")
    return fn.log_prob(msg["value"], intermediates) if intermediates else fn.log_prob(msg["value"])


def _scaled(msg, log_prob) -> jax.Array:
    """``scale * log_prob``: the site's elementwise term in a log-density, as NumPyro scores it."""
    return log_prob if msg.get("scale") is None else msg["scale"] * log_prob


def _scaled_total(msg, log_prob) -> jax.Array:
    return jnp.sum(_scaled(msg, log_prob))


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
        self.auxiliary: dict[str, jax.Array] = {}
        self.records: dict[str, SiteRecord] = {}
        self.log_probs: dict[str, jax.Array] = {}
        # Every drawn site in guide order: (scaled log q, unscaled log q) in plate form.
        self.plate_forms: dict[str, tuple[PlateArray, PlateArray]] = {}
        # Every drawn site's NumPyro scale (None for none) and plates (cond_indep_stack).
        self.scales: dict[str, Any] = {}
        self.frames: dict[str, list] = {}
        self.weight = jnp.zeros(())
        self._estimators: dict[str, est.Estimator] = {}

    def process_message(self, msg):
        if msg["type"] != "sample" or msg["is_observed"]:
            return
        name = msg["name"]
        # Draws, enumeration weights and lane probabilities all differentiate this fn.
        msg["fn"] = fn = est.without_kinks(msg["fn"])
        if name in self.values or name in self.auxiliary:
            raise ModelError(f"guide site '{name}' is sampled twice; site names must be unique")
        sample_shape = tuple(msg["kwargs"].get("sample_shape", ()))
        site_key = jax.random.fold_in(self.rng_key, len(self.values) + len(self.auxiliary))
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
                raise Branch(full_name, fn, estimator, site_key)
            elif estimator.branches:
                value = jax.lax.stop_gradient(fn.sample(site_key, sample_shape))
            else:
                value, msg["intermediates"] = estimator.draw_with_intermediates(site_key, fn, sample_shape)
                if estimator.kind == "reparam":
                    msg["fn"] = est.scored_at_draw(fn)
        # An auxiliary site (the joint latent of NumPyro's AutoContinuous guides) is
        # drawn and scored, but the model has no such site: it is not returned.
        if msg["infer"].get("is_auxiliary", False):
            self.auxiliary[name] = value
        else:
            self.values[name] = value
        msg["value"] = value

    def postprocess_message(self, msg):
        if msg["type"] != "sample" or msg["is_observed"]:
            return
        name = msg["name"]
        unscaled = unscaled_log_prob(msg)
        log_prob = _scaled_total(msg, unscaled)
        self.log_probs[name] = log_prob
        if name in self.constraints:
            self.weight = self.weight + log_prob
            return
        frames = msg["cond_indep_stack"]
        self.plate_forms[name] = (plate_form(_scaled(msg, unscaled), frames), plate_form(unscaled, frames))
        self.scales[name], self.frames[name] = msg.get("scale"), list(frames)
        estimator = self._estimators[name]
        baseline = None
        if estimator.kind == "reinforce" and estimator.baseline is not None:
            baseline = jnp.asarray(estimator.baseline, dtype=log_prob.dtype)
        kind = "forced" if self.prefix + name in self.forced else estimator.kind
        # The score differentiates the sampling distribution; a scale only weighs the value.
        self.records[self.prefix + name] = SiteRecord(kind, jnp.sum(unscaled), baseline)


class _Unscaled(Messenger):
    """Clear NumPyro's ``scale`` of every site inside; outside every ``scale`` handler
    and subsampled plate of the program, so it acts after them."""

    def process_message(self, msg):
        msg["scale"] = None


def unscaled(fn: Callable) -> Callable:
    """``fn`` with every site's ``scale`` removed: its log-density is that of the
    distributions it samples from (the one a score term differentiates).

    Example::

        excess = density(guide, values, params) - density(unscaled(guide), values, params)
    """

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with _Unscaled():
            return fn(*args, **kwargs)

    return run


def run_guide(guide, args, kwargs, rng_key, prefix, forced, constraints=None, branching="raise"):
    run = _GuideRun(rng_key, prefix, forced, constraints, branching)
    with run, SubstituteParams(_first(args), guide):
        set_up_autoguide(guide, args, kwargs)
        guide(*args, **kwargs)
    if constraints:
        unused = set(constraints) - set(run.values)
        if unused:
            raise ModelError(f"values {sorted(unused)} are not sample sites of {callable_name(guide)}")
    return run


def callable_name(fn) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


class _RequireValues(Messenger):
    """Check each sample site of a model as it runs: observed sites get no value, latent
    sites get one, with the support the autoguides that drew it were built for."""

    def __init__(self, model, values, autoguides=()):
        super().__init__(fn=None)
        self.model, self.values, self.autoguides = model, values, autoguides
        self.note = _autoguide_note(model, autoguides)

    def process_message(self, msg):
        if msg["type"] != "sample":
            return
        name = msg["name"]
        if msg["is_observed"] and name in self.values:
            raise ModelError(
                f"density: site '{name}' of {callable_name(self.model)} is observed but also given a value"
            )
        if msg["is_observed"]:
            return
        if msg["value"] is None:
            auxiliary = msg["infer"].get("is_auxiliary", False)
            raise ModelError(
                f"density: latent site '{name}' of {callable_name(self.model)} has no value "
                f"(values given: {sorted(self.values)})"
                + (
                    "; it is the auxiliary joint latent of an autoguide, whose density at given "
                    "values is not available: use an objective that only draws from it (elbo, "
                    "iwae with gradient='standard', renyi, vimco) or AutoNormal"
                    if auxiliary
                    else self.note
                )
            )
        # Before the value reaches any later site (a value outside the support would
        # make their parameters invalid first).
        _check_prototypes(self.model, name, msg["fn"].support, self.autoguides)


def _autoguide_note(model, autoguides) -> str:
    others = [guide for guide in autoguides if guide.model is not model]
    if not others:
        return ""
    built = ", ".join(f"{type(guide).__name__} built for {callable_name(guide.model)}" for guide in others)
    return f"; the values come from {built}: an autoguide must be built for the model it is used with"


def _same_support(first, second) -> bool:
    try:
        return bool(first == second)
    except jax.errors.ConcretizationTypeError:  # bounds traced by jit: cannot tell here
        return True


def _check_prototypes(model: Callable, name: str, support, autoguides) -> None:
    """Raise a :class:`ModelError` naming the site if an autoguide was built for a model
    (its prototype trace) where latent site ``name`` has another support."""
    for guide in autoguides:
        if guide.model is model or guide.prototype_trace is None:
            continue
        site = guide.prototype_trace.get(name)
        if site is None or site["type"] != "sample" or site["is_observed"]:
            continue
        if not _same_support(site["fn"].support, support):
            raise ModelError(
                f"site '{name}': {type(guide).__name__} was built for {callable_name(guide.model)}, "
                f"where the site has support {site['fn'].support}, but {callable_name(model)} gives it "
                f"support {support}; build the autoguide from the model it is used with"
            )


def log_joint(model: Callable, values: Mapping[str, Any], args=(), kwargs=None, autoguides=()) -> jax.Array:
    """``log p(values, observations)`` of a plain model: every latent site needs a value.

    ``autoguides`` (those that drew ``values``) are checked against the model's sites.
    """
    return log_joint_terms(model, values, args, kwargs, autoguides)[0]


def log_joint_terms(model: Callable, values: Mapping[str, Any], args=(), kwargs=None, autoguides=()):
    """:func:`log_joint` and its terms: ``(total, sites)`` with ``sites`` a list, in model
    order, of ``(latent name or None for an observed site, scaled log p in plate form)``."""
    total, sites = jnp.zeros(()), []
    for name, site in scored_sites(model, values, args, kwargs, autoguides):
        log_prob = _scaled(site, unscaled_log_prob(site))
        total = total + jnp.sum(log_prob)
        latent = None if site["is_observed"] else name
        sites.append((latent, plate_form(log_prob, site["cond_indep_stack"])))
    return total, sites


def scored_sites(model: Callable, values: Mapping[str, Any], args=(), kwargs=None, autoguides=()):
    """The sample sites of ``model`` run on ``values``, checked (every latent has a value,
    every value is a site, shapes match): a list of ``(name, NumPyro site message)``."""
    kwargs = kwargs or {}
    # A guide scored as a density is checked only against itself (its sites, its supports).
    checks = _RequireValues(model, values, () if is_autoguide(model) else tuple(autoguides))
    with (
        handlers.trace() as trace,
        checks,
        SubstituteParams(_first(args), model),
        handlers.substitute(data=dict(values)),
    ):
        set_up_autoguide(model, args, kwargs)
        model(*args, **kwargs)
    unused = set(values) - {name for name, site in trace.items() if site["type"] == "sample"}
    if unused:
        raise ModelError(
            f"density: values {sorted(unused)} are not sample sites of {callable_name(model)}{checks.note}"
        )
    sites = [(name, site) for name, site in trace.items() if site["type"] == "sample"]
    for name, site in sites:
        _check_shape(name, site["fn"], site["value"], site["kwargs"].get("sample_shape", ()))
    return sites
