"""Resampling, effective sample size and log-evidence bookkeeping for every SMC sampler.

Weights are carried as *normalised log-weights* (``logsumexp == 0``). A step adds
incremental log-weights with :func:`reweight`, which returns the log-evidence
increment ``log sum_i w_i exp(g_i)``; :func:`resample_if` resamples when the
effective sample size falls below a fraction of the particle count and resets the
weights to ``1/N``. The four schemes are BlackJAX's (the same functions its SMC
kernels call); this module only gives them one interface.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ppl.smc import resampling
    >>> log_w = resampling.normalize(jnp.log(jnp.array([0.7, 0.1, 0.1, 0.1])))
    >>> float(resampling.ess(log_w))  # 1 / sum w^2
    1.923...
    >>> resampling.resample(jax.random.key(0), log_w, "systematic").shape
    (4,)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc import resampling as _blackjax
from jax.scipy.special import logsumexp

__all__ = [
    "SCHEMES",
    "check_scheme",
    "ess",
    "merge_islands",
    "normalize",
    "resample",
    "resample_if",
    "reweight",
]

#: Resampling schemes by name: ``fn(rng_key, weights (N,), num_samples) -> indices``.
SCHEMES: dict[str, Callable] = {
    "multinomial": _blackjax.multinomial,
    "systematic": _blackjax.systematic,
    "stratified": _blackjax.stratified,
    "residual": _blackjax.residual,
}


def check_scheme(name: str) -> str:
    """Return ``name`` if it is a key of :data:`SCHEMES`; otherwise raise ``ValueError`` listing them."""
    if name not in SCHEMES:
        raise ValueError(f"unknown resampling scheme {name!r}; choose one of {sorted(SCHEMES)}")
    return name


def normalize(log_weights: jax.Array) -> jax.Array:
    """Log-weights shifted so that ``logsumexp == 0`` (shape unchanged, ``(N,)``)."""
    return log_weights - logsumexp(log_weights)


def ess(log_weights: jax.Array) -> jax.Array:
    """Effective sample size ``(sum w)^2 / sum w^2`` of (possibly unnormalised) log-weights ``(N,)``."""
    return jnp.exp(2 * logsumexp(log_weights) - logsumexp(2 * log_weights))


def reweight(log_weights: jax.Array, increments: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Multiply normalised weights by ``exp(increments)``; renormalise.

    Args:
        log_weights: normalised log-weights, shape ``(N,)``.
        increments: incremental log-weights ``g_i``, shape ``(N,)``.

    Returns:
        ``(new normalised log-weights, log sum_i w_i exp(g_i))``: the second is the
        step's factor of the evidence estimate (the running log-evidence is its sum).
    """
    unnormalised = log_weights + increments
    log_increment = logsumexp(unnormalised)
    return unnormalised - log_increment, log_increment


def resample(
    rng_key: jax.Array, log_weights: jax.Array, scheme: str = "systematic", num_samples: int | None = None
):
    """Ancestor indices, shape ``(num_samples,)`` (default ``N``), drawn with ``scheme``.

    Every scheme is unbiased: the expected number of copies of particle ``i`` is
    ``num_samples * w_i``.
    """
    num_samples = log_weights.shape[0] if num_samples is None else num_samples
    return SCHEMES[check_scheme(scheme)](rng_key, jnp.exp(normalize(log_weights)), num_samples)


def resample_if(
    rng_key: jax.Array,
    particles,
    log_weights: jax.Array,
    threshold: float = 0.5,
    scheme: str = "systematic",
):
    """Resample when ``ESS < threshold * N``; otherwise leave particles and weights.

    Args:
        particles: pytree whose leaves have leading axis ``N``.
        log_weights: normalised log-weights ``(N,)``.
        threshold: ``1.0`` resamples every step, ``0.0`` never.

    Returns:
        ``(particles, log_weights, resampled)``; after resampling the weights are ``-log N``.
    """
    num_particles = log_weights.shape[0]
    resampled = ess(log_weights) < threshold * num_particles
    ancestors = jnp.where(resampled, resample(rng_key, log_weights, scheme), jnp.arange(num_particles))
    particles = jax.tree.map(lambda leaf: leaf[ancestors], particles)
    log_weights = jnp.where(resampled, -jnp.log(num_particles) * jnp.ones_like(log_weights), log_weights)
    return particles, log_weights, resampled


def merge_islands(log_weights, log_evidences) -> tuple[np.ndarray, float]:
    """Merge independent particle systems exactly (NumPy, on the host).

    Island ``j``'s normalised log-weights are shifted by its share of the evidence,
    ``log Z_j - log sum_k Z_k``, and the merged evidence is the mean of the ``Z_j`` (an
    average of unbiased estimates of ``p(y)``).

    Args:
        log_weights: ``(islands, n)`` normalised per island.
        log_evidences: ``(islands,)``.

    Returns:
        ``(log_weights (islands * n,), log_evidence)``.
    """
    log_weights = np.asarray(log_weights, np.float64)
    log_evidences = np.asarray(log_evidences, np.float64)
    total = float(np.logaddexp.reduce(log_evidences))
    merged = log_weights + (log_evidences - total)[:, None]
    return merged.reshape(-1), total - float(np.log(len(log_evidences)))
