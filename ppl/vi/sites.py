"""Running a guide or a model on given values: the site-level half of ``ppl.vi``.

:class:`_GuideRun` is the NumPyro messenger that draws each guide site with its
estimator (or raises :class:`Branch` at an ``enum``/``mvd`` site that needs the
continuation) and records what the surrogate needs; :func:`log_joint` scores a model
on values with the checks that catch missing, extra and mis-shaped values.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from numpyro import handlers
from numpyro.primitives import Messenger

from ppl.errors import ModelError
from ppl.vi import estimators as est


@functools.partial(jax.tree_util.register_dataclass, data_fields=["log_q", "baseline"], meta_fields=["kind"])
@dataclass
class SiteRecord:
    """One guide site as the surrogate needs it; ``log_q`` has the particle axes
    of the ``sim`` call that drew it (``()`` for a single draw)."""

    kind: str
    log_q: jax.Array
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
        self.records: dict[str, SiteRecord] = {}
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
                raise Branch(full_name, fn, estimator, site_key)
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
        self.records[self.prefix + name] = SiteRecord(kind, log_prob, baseline)


def run_guide(guide, args, kwargs, rng_key, prefix, forced, constraints=None, branching="raise"):
    run = _GuideRun(rng_key, prefix, forced, constraints, branching)
    with run:
        guide(*args, **kwargs)
    if constraints:
        unused = set(constraints) - set(run.values)
        if unused:
            raise ModelError(f"values {sorted(unused)} are not sample sites of {callable_name(guide)}")
    return run


def callable_name(fn) -> str:
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
                f"density: site '{name}' of {callable_name(self.model)} is observed but also given a value"
            )
        if msg["value"] is None and not msg["is_observed"]:
            raise ModelError(
                f"density: latent site '{name}' of {callable_name(self.model)} has no value "
                f"(values given: {sorted(self.values)})"
            )


def log_joint(model: Callable, values: Mapping[str, Any], args=(), kwargs=None) -> jax.Array:
    """``log p(values, observations)`` of a plain model: every latent site needs a value."""
    kwargs = kwargs or {}
    with handlers.trace() as trace, _RequireValues(model, values), handlers.substitute(data=dict(values)):
        model(*args, **kwargs)
    unused = set(values) - {name for name, site in trace.items() if site["type"] == "sample"}
    if unused:
        raise ModelError(f"density: values {sorted(unused)} are not sample sites of {callable_name(model)}")
    total = jnp.zeros(())
    for name, site in trace.items():
        if site["type"] == "sample":
            _check_shape(name, site["fn"], site["value"], site["kwargs"].get("sample_shape", ()))
            total = total + _site_log_prob(site)
    return total
