"""Predictions on query points of few-shot episodes, and the metrics every method shares.

Every method of :mod:`ppl.meta` (NIW, MAML, pretrain + fine-tune, ProtoNet) returns one
of two types, so the benchmark scores them alike:

* :class:`RegressionPrediction`: an equal-weight mixture over ``S`` weight draws of
  Gaussians ``N(means[e, s, q], noise^2)`` per query point (``S = 1`` for a point
  estimate). Mean, variance, log-density, CDF and central intervals are those of the
  mixture.
* :class:`ClassPrediction`: class probabilities per query point (for NIW, the mean of
  the softmax over weight draws).

Coverage of the central ``level`` interval is read off the mixture CDF at the label
(``y`` is inside iff ``(1 - level)/2 <= F(y) <= (1 + level)/2``), so no interval is
computed to score it. :func:`mean_interval` summarises per-episode metrics by their mean
and the half-width of a normal 95% confidence interval over episodes.

Example:
    >>> import jax.numpy as jnp
    >>> from ppl.meta.predictive import RegressionPrediction
    >>> prediction = RegressionPrediction(means=jnp.zeros((1, 2, 3)), noise=jnp.array(1.0))
    >>> prediction.mean().shape, float(prediction.variance()[0, 0])
    ((1, 3), 1.0)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jax.scipy.stats import norm

__all__ = ["ClassPrediction", "RegressionPrediction", "expected_calibration_error", "mean_interval"]

Z_95 = 1.959963984540054


class RegressionPrediction(NamedTuple):
    """A Gaussian mixture per query point.

    Attributes:
        means: ``(E, S, Q)`` the network's output at each of ``S`` weight draws.
        noise: the observation noise standard deviation, ``()`` or ``(E,)``.
    """

    means: jax.Array
    noise: jax.Array

    def _noise(self):
        noise = jnp.asarray(self.noise)
        return noise.reshape(noise.shape + (1,) * (3 - noise.ndim)) if noise.ndim else noise

    def mean(self) -> jax.Array:
        """``(E, Q)`` predictive means."""
        return jnp.mean(self.means, axis=1)

    def variance(self) -> jax.Array:
        """``(E, Q)`` predictive variances: the spread of the draws plus the noise."""
        noise = jnp.broadcast_to(self._noise(), self.means.shape)
        return jnp.var(self.means, axis=1) + jnp.mean(jnp.square(noise), axis=1)

    def log_density(self, y: jax.Array) -> jax.Array:
        """``(E, Q)`` log predictive densities of labels ``y`` ``(E, Q)`` or ``(E, Q, 1)``."""
        y = _labels(y)[:, None, :]
        log_densities = norm.logpdf(y, self.means, self._noise())
        return logsumexp(log_densities, axis=1) - math.log(self.means.shape[1])

    def cdf(self, y: jax.Array) -> jax.Array:
        """``(E, Q)`` predictive CDF at ``y``."""
        return jnp.mean(norm.cdf(_labels(y)[:, None, :], self.means, self._noise()), axis=1)

    def interval(self, level: float = 0.9, iterations: int = 60) -> tuple[jax.Array, jax.Array]:
        """``(lower, upper)``, each ``(E, Q)``: the central ``level`` interval (bisection)."""
        spread = jnp.max(jnp.abs(self.means), axis=1) + 10.0 * jnp.max(
            jnp.broadcast_to(self._noise(), self.means.shape), axis=1
        )

        def quantile(probability):
            def step(_, bounds):
                low, high = bounds
                middle = 0.5 * (low + high)
                below = self.cdf(middle) < probability
                return jnp.where(below, middle, low), jnp.where(below, high, middle)

            low, high = jax.lax.fori_loop(0, iterations, step, (-spread, spread))
            return 0.5 * (low + high)

        return quantile(0.5 * (1.0 - level)), quantile(0.5 * (1.0 + level))

    def metrics(self, y: jax.Array, level: float = 0.9) -> dict[str, jax.Array]:
        """Per episode ``(E,)``: ``mse`` of the predictive mean, ``nll`` (mean over query
        points of ``-log p(y)``) and ``coverage`` of the central ``level`` interval."""
        y = _labels(y)
        probability = self.cdf(y)
        inside = (probability >= 0.5 * (1.0 - level)) & (probability <= 0.5 * (1.0 + level))
        return {
            "mse": jnp.mean(jnp.square(self.mean() - y), axis=1),
            "nll": -jnp.mean(self.log_density(y), axis=1),
            "coverage": jnp.mean(inside, axis=1),
        }


class ClassPrediction(NamedTuple):
    """Class probabilities ``(E, Q, C)`` per query point."""

    probabilities: jax.Array

    def metrics(self, y: jax.Array) -> dict[str, jax.Array]:
        """Per episode ``(E,)``: ``accuracy`` and ``nll`` (mean ``-log p(y)``) of labels ``(E, Q)``."""
        y = jnp.asarray(y)
        chosen = jnp.take_along_axis(self.probabilities, y[..., None], axis=-1)[..., 0]
        return {
            "accuracy": jnp.mean(jnp.argmax(self.probabilities, axis=-1) == y, axis=1),
            "nll": -jnp.mean(jnp.log(jnp.maximum(chosen, 1e-30)), axis=1),
        }


def expected_calibration_error(probabilities, labels, num_bins: int = 10) -> float:
    """ECE over all query points: ``sum_b (n_b / n) |accuracy_b - confidence_b|`` with
    ``num_bins`` equal-width bins of the top-class probability.

    Args:
        probabilities: ``(..., C)``; labels: ``(...)`` integers.
    """
    probabilities = np.asarray(probabilities).reshape(-1, np.shape(probabilities)[-1])
    labels = np.asarray(labels).reshape(-1)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    bins = np.minimum((confidence * num_bins).astype(int), num_bins - 1)
    total = 0.0
    for b in range(num_bins):
        chosen = bins == b
        if chosen.any():
            total += chosen.mean() * abs(correct[chosen].mean() - confidence[chosen].mean())
    return float(total)


def mean_interval(values) -> tuple[float, float]:
    """``(mean, half-width)`` of a normal 95% confidence interval of per-episode ``values``."""
    values = np.asarray(values, dtype=float).reshape(-1)
    if values.size < 2:
        raise ValueError(f"mean_interval: need at least 2 values, got {values.size}")
    return float(values.mean()), float(Z_95 * values.std(ddof=1) / math.sqrt(values.size))


def _labels(y):
    y = jnp.asarray(y)
    return y[..., 0] if y.ndim == 3 else y
