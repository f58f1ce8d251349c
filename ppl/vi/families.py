"""Guides whose density is estimated: ``marginal`` (auxiliaries integrated out) and
``normalize`` (sampling-importance-resampling), behind one small interface."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from ppl.errors import ModelError
from ppl.vi.sites import SiteRecord, callable_name, log_joint, run_guide


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
        run = run_guide(self.fn, args, kwargs, rng_key, prefix, forced, branching=branching)
        return run.values, sum(run.log_probs.values(), jnp.zeros(())), run.records

    def estimate_log_density(self, rng_key, prefix, values, args, kwargs):
        return log_joint(self.fn, values, args, kwargs), {}


def as_family(guide) -> Family:
    return guide if isinstance(guide, Family) else _Guide(guide)


def draw_particles(family: Family, rng_key, prefix, num, args, kwargs):
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
            run = run_guide(self.guide, args, kwargs, key, prefix, {}, constraints=kept, branching="error")
            return run.weight, run.records

        return jax.vmap(one)(jax.random.split(rng_key, num))

    def simulate(self, rng_key, prefix, forced, branching, args, kwargs):
        joint_key, aux_key = jax.random.split(rng_key)
        run = run_guide(self.guide, args, kwargs, joint_key, prefix, forced, branching=branching)
        missing = set(self.keep) - set(run.values)
        if missing:
            raise ModelError(
                f"marginal: {sorted(missing)} are not sample sites of {callable_name(self.guide)}"
            )
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
        self.model, self.proposal, self.num_particles = model, as_family(proposal), num_particles

    def _log_target(self, values, args, kwargs):
        return jax.vmap(lambda v: log_joint(self.model, v, args, kwargs))(values)

    def draw(self, rng_key, prefix, args, kwargs):
        """``(chosen, log_q, records, log Z_hat, index record name)``: ``log_q`` is
        ``log p(chosen) - log Z_hat``; the index record is the resampling choice's score."""
        draw_key, pick_key = jax.random.split(rng_key)
        values, log_q, records = draw_particles(
            self.proposal, draw_key, prefix, self.num_particles, args, kwargs
        )
        log_w = self._log_target(values, args, kwargs) - log_q
        index = jax.random.categorical(pick_key, jax.lax.stop_gradient(log_w))
        # The resampling index is a random choice whose law depends on the parameters.
        records = dict(records)
        records[prefix + "resample"] = SiteRecord("reinforce", jax.nn.log_softmax(log_w)[index])
        chosen = jax.tree.map(lambda leaf: leaf[index], values)
        log_normalizer = logsumexp(log_w) - jnp.log(self.num_particles)
        return (
            chosen,
            log_w[index] + log_q[index] - log_normalizer,
            records,
            log_normalizer,
            prefix + "resample",
        )

    def simulate(self, rng_key, prefix, forced, branching, args, kwargs):
        return self.draw(rng_key, prefix, args, kwargs)[:3]

    def estimate_log_density(self, rng_key, prefix, values, args, kwargs):
        draws, log_q, records = draw_particles(
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
