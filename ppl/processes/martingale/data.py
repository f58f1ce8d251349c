"""Input checks and standardisation shared by the copula estimators.

The copula starts from ``P_0 = N(0, I)``, so every estimator works on data standardised
with the training mean and standard deviation (``ddof = 0``, as the authors do);
densities are mapped back to the original scale with the Jacobian. Data that a user has
already standardised this way pass through unchanged.

Example:
    >>> import numpy as np
    >>> from ppl.processes.martingale import data
    >>> y = data.as_rows("y", np.array([1.0, 2.0, 4.0]))
    >>> scaler = data.Standardiser.fit("y", y)
    >>> scaler.apply(y).shape
    (3, 1)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ppl.errors import warn

__all__ = ["Standardiser", "as_rows", "check_count", "warn_outside"]


def as_rows(name: str, values, *, features: int | None = None, min_rows: int = 1) -> np.ndarray:
    """``values`` as a float ``(n, d)`` array (a vector is ``n`` rows of one feature).

    Raises:
        ValueError: naming ``name`` and the shape, if it has fewer than ``min_rows`` rows,
            more than two axes, non-finite entries (with their count and first row), or a
            number of features other than ``features``.
    """
    array = np.asarray(values, dtype=float)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name} must be (n,) or (n, features), got shape {np.shape(values)}")
    if array.shape[0] < min_rows:
        raise ValueError(
            f"{name} has {array.shape[0]} rows (shape {array.shape}); at least {min_rows} needed"
        )
    if array.shape[1] == 0:
        raise ValueError(f"{name} has no features (shape {array.shape})")
    bad = ~np.isfinite(array)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise ValueError(
            f"{name} {array.shape} has {int(bad.sum())} non-finite entries in {rows.size} rows "
            f"(first: row {int(rows[0])})"
        )
    if features is not None and array.shape[1] != features:
        raise ValueError(
            f"{name} has {array.shape[1]} features (shape {array.shape}), the data have {features}"
        )
    return array


def check_count(name: str, value) -> int:
    """``value`` as an ``int >= 1``, or a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def warn_outside(name: str, points: np.ndarray, data: np.ndarray, margin: float = 2.0) -> None:
    """Warn (with counts) if rows of ``points`` lie beyond the data's range by more than
    ``margin`` standard deviations in some feature: the predictive there is ``P_0``
    barely moved, which is rarely what was meant (e.g. a grid on another scale)."""
    spread = np.std(data, axis=0) * margin
    outside = ((points < data.min(axis=0) - spread) | (points > data.max(axis=0) + spread)).any(axis=1)
    if outside.any():
        warn(
            f"{int(outside.sum())} of {len(points)} rows of {name} lie outside the data's range "
            f"[{np.round(data.min(axis=0), 3).tolist()}, {np.round(data.max(axis=0), 3).tolist()}] "
            f"widened by {margin:g} standard deviation(s): the predictive there is mostly "
            "the starting N(0, 1)"
        )


class Standardiser(NamedTuple):
    """Per-feature location and scale (training mean and ``ddof = 0`` standard deviation)."""

    location: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, name: str, rows: np.ndarray) -> Standardiser:
        scale = np.std(rows, axis=0)
        if np.any(scale == 0):
            constant = np.flatnonzero(scale == 0).tolist()
            raise ValueError(f"{name} {rows.shape}: features {constant} are constant; drop them")
        return cls(np.mean(rows, axis=0), scale)

    def apply(self, rows: np.ndarray) -> np.ndarray:
        return (rows - self.location) / self.scale

    def log_jacobian(self) -> float:
        """``-sum log scale``: add to a standardised log-density to get the original scale's."""
        return float(-np.sum(np.log(self.scale)))
