"""Differences of rates when both arms share clusters (paired / clustered two-sample designs).

In an audit study both arms (e.g. white- and Black-named applications) go to the same
jobs, and callbacks of one job move together. Data come per cluster: row ``j`` of the
input is one cluster (job) of unit ``unit[j]`` (firm), with ``successes1[j]`` out of
``trials1[j]`` in arm 1 and ``successes2[j]`` out of ``trials2[j]`` in arm 2.

Estimator (per unit ``i`` with ``J_i`` clusters): the mean of the per-cluster
differences ``d_ij = x1_ij / n1_ij - x2_ij / n2_ij``,

    thetahat_i = dbar_i = (1/J_i) sum_j d_ij,
    Vhat_i = sum_j (d_ij - dbar_i)^2 / (J_i (J_i - 1)),

which is exactly unbiased for ``Var(dbar_i)`` when the unit's clusters are independent
draws from its population of clusters (the job effects random), whatever the within-job
correlation of the two arms. The estimand ``theta_i`` is the unit's mean gap over that
population, ``E d_ij``. (With equal trials per cluster ``dbar_i`` is also the difference
of the arms' pooled rates.) If the clusters are instead regarded as fixed, ``Vhat_i`` is
conservative: it adds ``sum_j (theta_ij - theta_i)^2 / (J_i (J_i - 1))``.

Shrinkage is ``delta_i = mu_i + w_i (dbar_i - mu_i)`` with cross-fitted ``mu_i`` and
``w_i = 1 / (1 + lam v_i)``, ``v_i = (1/J_i^2) sum_j (1/n1_ij + 1/n2_ij)`` a design
variance that uses the cluster counts only, so the URE
``(1-w)^2 (dbar - mu)^2 + (2w - 1) Vhat`` stays exactly unbiased for fixed ``lam``.
Units with ``J_i < 2`` have no variance estimate: they are shrunk but not scored.

:func:`ppl.eb.binomial.shrink_difference` treats the arms as independent binomials; on
paired data its variance ``sum_g phat_g (1 - phat_g) / (N_g - 1)`` is biased (usually
too large: the job effect moves both arms together), and so is its risk estimate.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from ppl.eb import binomial as _binomial
from ppl.eb import robust

__all__ = ["PairedSummary", "paired_differences", "shrink_paired_difference"]


class PairedSummary(NamedTuple):
    """Per-unit summaries of clustered two-arm data (each ``(m,)``).

    Attributes:
        raw: mean per-cluster difference ``dbar_i`` (NaN for units without clusters).
        variance: unbiased ``Vhat_i`` of ``Var(dbar_i)`` (NaN where ``J_i < 2``).
        design_variance: ``v_i = (1/J_i^2) sum_j (1/n1_ij + 1/n2_ij)``, outcome-free.
        clusters: ``J_i``, the number of clusters.
        independent_variance: the independent-binomial variance
            ``sum_g phat_g (1 - phat_g) / (N_g - 1)`` from the pooled counts ``N_g``,
            shown for comparison (biased on paired data).
    """

    raw: np.ndarray
    variance: np.ndarray
    design_variance: np.ndarray
    clusters: np.ndarray
    independent_variance: np.ndarray


def paired_differences(unit, successes1, trials1, successes2, trials2, num_units: int | None = None):
    """Per-unit mean cluster differences and their unbiased variances.

    Args:
        unit: integer unit index ``0..m-1`` of each cluster row, ``(rows,)``.
        successes1: arm-1 successes per cluster, ``(rows,)``.
        trials1: arm-1 trials per cluster (at least 1), ``(rows,)``.
        successes2: arm-2 successes per cluster, ``(rows,)``.
        trials2: arm-2 trials per cluster (at least 1), ``(rows,)``.
        num_units: ``m``; default ``max(unit) + 1``.

    Returns:
        A :class:`PairedSummary`.

    Raises:
        ValueError: bad counts (named rows), a cluster with no trials in an arm, or a
            unit index that is negative or not an integer.
    """
    x1, n1 = _binomial.check_counts(successes1, trials1, "arm 1")
    x2, n2 = _binomial.check_counts(successes2, trials2, "arm 2")
    index = np.asarray(unit)
    if index.shape != x1.shape or x1.shape != x2.shape:
        raise ValueError(
            f"unit, arm 1 and arm 2 must have equal length, got {index.shape}, {x1.shape}, {x2.shape}"
        )
    if not np.issubdtype(index.dtype, np.integer):
        rounded = np.round(np.asarray(index, dtype=float))
        if not np.array_equal(rounded, index):
            raise ValueError("unit must hold integer unit indices")
        index = rounded.astype(np.int64)
    if (index < 0).any():
        raise ValueError(f"unit indices must be non-negative; not at {_binomial._rows(index < 0)}")
    empty = (n1 < 1) | (n2 < 1)
    if empty.any():
        raise ValueError(
            f"every cluster needs at least one trial in each arm; not at {_binomial._rows(empty)}"
        )
    m = int(index.max()) + 1 if num_units is None else int(num_units)
    if index.size and index.max() >= m:
        raise ValueError(f"unit indices must be below num_units = {m}")

    def total(values):
        return np.bincount(index, weights=values, minlength=m)

    d = x1 / n1 - x2 / n2
    clusters = total(np.ones_like(d))
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = total(d) / clusters
        squares = total((d - raw[index]) ** 2)
        variance = np.where(clusters >= 2, squares / (clusters * (clusters - 1.0)), np.nan)
        design_variance = total(1.0 / n1 + 1.0 / n2) / clusters**2
        pooled = []
        for x, n in ((x1, n1), (x2, n2)):
            big_x, big_n = total(x), total(n)
            rate = big_x / big_n
            pooled.append(rate * (1 - rate) / np.maximum(big_n - 1.0, 1.0))
    return PairedSummary(raw, variance, design_variance, clusters, pooled[0] + pooled[1])


def shrink_paired_difference(
    unit,
    successes1,
    trials1,
    successes2,
    trials2,
    covariates=None,
    *,
    key: jax.Array,
    num_units: int | None = None,
    folds: int = _binomial.FOLDS,
    regression=None,
    lam: float | None = None,
    level: float | None = 0.9,
) -> _binomial.ShrinkageResult:
    """Shrink per-unit gaps ``dbar_i`` (mean per-cluster difference of the arms' rates)
    toward a cross-fitted target, tuned by the exact paired URE.

    Args:
        unit: integer unit index of each cluster row, ``(rows,)``.
        successes1: arm-1 successes per cluster.
        trials1: arm-1 trials per cluster.
        successes2: arm-2 successes per cluster.
        trials2: arm-2 trials per cluster.
        covariates: optional ``(m, k)`` unit covariates for the target regression.
        key: ``jax.random`` key for the cross-fitting folds.
        num_units: ``m``; default ``max(unit) + 1``. Units without clusters raise.
        folds: number of cross-fitting folds.
        regression: ``regression(z, values, weights) -> predict``; default
            :func:`ppl.eb.binomial.linear_regression` weighted by ``1 / v_i``.
        lam: fix the shrinkage strength instead of tuning it.
        level: level of the robust EBCIs (:func:`ppl.eb.robust.robust_intervals`);
            ``None`` skips them.

    Returns:
        A :class:`ppl.eb.binomial.ShrinkageResult` (``risk`` is the mean paired URE over
        units with ``J_i >= 2``).

    The weights ``w_i = 1 / (1 + lam v_i)`` use cluster and trial counts only, so the URE
    is exact for fixed ``lam``. Interval approximations: the scale is the design-based
    ``sigma_i^2 = s^2 v_i`` with ``s^2 = sum_i Vhat_i / sum_i v_i`` pooled over scored
    units (assumes the per-trial variance of a cluster difference is similar across
    units), and the fourth moment of ``theta - mu`` uses the normal-noise form.
    """
    summary = paired_differences(unit, successes1, trials1, successes2, trials2, num_units)
    raw, variance, design_variance = summary.raw, summary.variance, summary.design_variance
    missing = summary.clusters < 1
    if missing.any():
        raise ValueError(f"units without clusters: {_binomial._rows(missing)}")
    m = len(raw)
    z = _binomial._check_covariates(covariates, m)
    regression = regression or _binomial.linear_regression

    def fit(train):
        return regression(z[train], raw[train], 1.0 / design_variance[train])

    fold = _binomial.fold_labels(key, m, folds)
    target = _binomial._out_of_fold(fold, z, lambda train: raw[train].mean(), fit)
    scored = summary.clusters >= 2
    if (~scored).any():
        import warnings

        warnings.warn(
            f"{int((~scored).sum())} of {m} units have a single cluster: they are shrunk like "
            "the others, but their variance cannot be estimated, so the risk and the choice "
            "of the shrinkage strength use the other units only",
            stacklevel=2,
        )
    if not scored.any():
        raise ValueError("no unit has 2 or more clusters: the risk cannot be estimated")
    filled = np.where(scored, variance, 0.0)
    if lam is None:
        lam = float(_binomial._tune_lambda(raw, filled, design_variance, target, scored))
    weight = 1.0 / (1.0 + lam * design_variance)
    lower = upper = np.full(m, np.nan)
    if level is not None:
        scale = variance[scored].sum() / design_variance[scored].sum()
        error = raw - target
        lower, upper = robust.robust_intervals(
            raw,
            filled,
            target,
            weight,
            level,
            noise_variance=scale * design_variance,
            second=np.where(scored, error**2 - filled, np.nan),
            fourth=np.where(scored, error**4 - 6.0 * filled * error**2 + 3.0 * filled**2, np.nan),
            bounds=(-1.0, 1.0),
        )
    return _binomial._result(raw, filled, target, weight, lam, scored, lower, upper, level)
