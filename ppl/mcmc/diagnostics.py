"""Rank-normalised split R-hat and bulk ESS for many coordinates at once.

The formulas are ArviZ's (``az.rhat(method="rank")``, ``az.ess(method="bulk")``;
Vehtari et al. 2021), computed here on a whole ``(chains, draws, k)`` array with NumPy
instead of one coordinate at a time, so the end-of-run warnings of :func:`ppl.nuts` cost
a few milliseconds rather than tens. The tests check both against ArviZ to 1e-8.

Example:
    >>> import numpy as np
    >>> from ppl.mcmc import diagnostics
    >>> draws = np.random.default_rng(0).normal(size=(4, 500, 3))
    >>> diagnostics.rank_normalized_rhat(draws).shape, diagnostics.bulk_ess(draws).shape
    ((3,), (3,))
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

__all__ = ["bulk_ess", "rank_normalized_rhat"]


def _split_chains(draws: np.ndarray) -> np.ndarray:
    """``(chains, draws, k) -> (2 chains, draws // 2, k)``: each chain's halves as chains."""
    half = draws.shape[1] // 2
    return np.concatenate([draws[:, :half], draws[:, draws.shape[1] - half :]], axis=0)


def _z_scale(draws: np.ndarray) -> np.ndarray:
    """Normal scores of the pooled ranks of each coordinate (Blom's offset 3/8)."""
    flat = draws.reshape(-1, draws.shape[-1])
    ranks = stats.rankdata(flat, method="average", axis=0)
    return special.ndtri((ranks - 3 / 8) / (flat.shape[0] - 2 * 3 / 8 + 1)).reshape(draws.shape)


def _rhat(draws: np.ndarray) -> np.ndarray:
    num = draws.shape[1]
    between = num * np.var(draws.mean(axis=1), axis=0, ddof=1)
    within = np.mean(np.var(draws, axis=1, ddof=1), axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):  # a constant coordinate: NaN, as ArviZ
        return np.sqrt((between / within + num - 1) / num)


def rank_normalized_rhat(draws: np.ndarray) -> np.ndarray:
    """Rank-normalised split R-hat (the larger of bulk and tail) per coordinate.

    Args:
        draws: ``(chains, draws, k)`` with at least 2 chains and 4 draws.

    Returns:
        ``(k,)``.
    """
    split = _split_chains(np.asarray(draws, np.float64))
    bulk = _rhat(_z_scale(split))
    tail = _rhat(_z_scale(np.abs(split - np.median(split.reshape(-1, split.shape[-1]), axis=0))))
    return np.maximum(bulk, tail)


def _autocovariance(draws: np.ndarray) -> np.ndarray:
    """Autocovariance of every chain and coordinate at every lag, ``(chains, draws, k)``."""
    num = draws.shape[1]
    centred = draws - draws.mean(axis=1, keepdims=True)
    size = 2 * num
    transform = np.fft.rfft(centred, n=size, axis=1)
    return np.fft.irfft(transform * np.conjugate(transform), n=size, axis=1)[:, :num] / num


def _ess(draws: np.ndarray) -> np.ndarray:
    """ESS of ``(chains, draws, k)`` with Geyer's initial monotone sequence, as ArviZ's ``_ess``."""
    chains, num, k = draws.shape
    covariance = _autocovariance(draws)
    mean_var = covariance[:, 0].mean(axis=0) * num / (num - 1.0)
    var_plus = mean_var * (num - 1.0) / num
    if chains > 1:
        var_plus = var_plus + np.var(draws.mean(axis=1), axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):  # constant coordinates: set below
        rho = 1.0 - (mean_var - covariance.mean(axis=0)) / var_plus  # (num, k)
    rho[0] = 1.0
    # Pairs (rho[2j], rho[2j + 1]); pair j >= 1 is computed while pair j - 1 sums > 0
    # and 2j - 1 < num - 3. J is the last pair computed.
    last = max(0, (num - 2) // 2 if num % 2 else (num - 2) // 2 - 1)
    pairs = rho[: 2 * last + 2].reshape(last + 1, 2, k).sum(axis=1)  # (last + 1, k)
    ends = pairs[1:] <= 0
    stop = np.where(ends.any(axis=0), ends.argmax(axis=0) + 1, last) if last else np.zeros(k, int)
    stop = np.where(pairs[0] <= 0, 0, stop)
    monotone = np.minimum.accumulate(pairs, axis=0)
    index = np.arange(last + 1)[:, None]
    kept = np.where(index < stop, monotone, 0.0).sum(axis=0)
    columns = np.arange(k)
    even = rho[2 * stop, columns]
    last_pair_kept = pairs[stop, columns] >= 0
    extra = np.where((stop > 0) & (last_pair_kept | (even > 0)), even, np.where(stop == 0, 1.0, 0.0))
    tau = np.maximum(-1.0 + 2.0 * kept + extra, 1.0 / np.log10(chains * num))
    ess = chains * num / tau
    constant = np.ptp(draws.reshape(-1, k), axis=0) < np.finfo(float).resolution
    return np.where(constant, chains * num, np.where(np.isnan(rho).any(axis=0), np.nan, ess))


def bulk_ess(draws: np.ndarray) -> np.ndarray:
    """Bulk effective sample size (rank-normalised, split chains) per coordinate.

    Args:
        draws: ``(chains, draws, k)`` with at least 4 draws.

    Returns:
        ``(k,)``.
    """
    return _ess(_z_scale(_split_chains(np.asarray(draws, np.float64))))
