"""Compound (empirical-Bayes) estimation of many binomial rates.

Units ``i = 1..m`` have ``X_i ~ Binomial(n_i, p_i)`` with ``n_i, p_i`` fixed (the
compound-decision setting). The main estimator is linear shrinkage of the raw rates
``phat_i = X_i / n_i`` toward a target ``mu_i``::

    delta_i = mu_i + w_i (phat_i - mu_i),    w_i = n_i / (n_i + lam)

tuned by an *exactly unbiased* risk estimate (URE) for binomials, valid whenever
``(w_i, mu_i)`` do not depend on ``X_i`` and ``n_i >= 2``::

    URE_i = (1 - w_i)^2 (phat_i - mu_i)^2 + (2 w_i - 1) phat_i (1 - phat_i) / (n_i - 1)

(``E URE_i = w_i^2 p_i(1-p_i)/n_i + (1-w_i)^2 (p_i-mu_i)^2``, the risk of ``delta_i``).
Targets are cross-fitted: ``mu_i`` comes from a regression fitted on the other folds (the
grand mean of the other folds without covariates), which keeps ``mu_i`` independent of
``X_i`` and the URE exact for fixed ``lam``.

Also here: the two-sample version for differences of rates, and the standard baselines
(MLE, beta-binomial EB by marginal likelihood, James-Stein on arcsine-transformed rates,
the Kiefer-Wolfowitz NPMLE by EM) and the hierarchical beta-binomial model for NUTS.
Background and reference numbers: ``shared/notes/binomial_eb.md``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import betaln, gammaln
from numpyro import distributions as dist

from ppl.model.dsl import plate, sample

__all__ = [
    "NPMLEResult",
    "ShrinkageResult",
    "beta_binomial",
    "cross_fitted_target",
    "distinct_pairs",
    "fold_labels",
    "hierarchical_model",
    "james_stein_arcsine",
    "linear_regression",
    "logistic_regression",
    "mle",
    "npmle",
    "shrink",
    "shrink_difference",
    "unbiased_risk",
]

Regression = Callable[[np.ndarray, np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]
"""``regression(covariates, rates, trials) -> predict``; ``predict(covariates) -> rates``."""


# ----------------------------------------------------------------------- checks


def _rows(mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(r) for r in rows[:10])
    return f"row(s) {shown}" + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")


def check_counts(successes, trials, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Validate counts; return them as float arrays of shape ``(m,)``.

    Raises:
        ValueError: shapes differ, counts are negative, non-integer or non-finite, or
            ``successes > trials``; the message names the offending rows.
    """
    x, n = np.asarray(successes, dtype=float), np.asarray(trials, dtype=float)
    label = f"{name} " if name else ""
    if x.ndim != 1 or x.shape != n.shape:
        raise ValueError(
            f"{label}successes and trials must be 1-D of equal length, got {x.shape} and {n.shape}"
        )
    for values, what in ((x, "successes"), (n, "trials")):
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(f"{label}{what} are NaN or infinite at {_rows(bad)}")
        bad = (values < 0) | (values != np.round(values))
        if bad.any():
            raise ValueError(f"{label}{what} must be non-negative integers; not at {_rows(bad)}")
    bad = x > n
    if bad.any():
        raise ValueError(f"{label}successes exceed trials at {_rows(bad)}")
    return x, n


def _check_covariates(covariates, m: int) -> np.ndarray | None:
    if covariates is None:
        return None
    z = np.asarray(covariates, dtype=float)
    z = z[:, None] if z.ndim == 1 else z
    if z.ndim != 2 or z.shape[0] != m:
        raise ValueError(f"covariates must have shape (m, k) with m = {m}, got {np.shape(covariates)}")
    bad = ~np.isfinite(z).all(axis=1)
    if bad.any():
        raise ValueError(f"covariates are NaN or infinite at {_rows(bad)}; impute or drop those units")
    return z


# ------------------------------------------------------------ risk and weights


def _linear_risk(raw, variance, target, weight):
    """URE of ``target + weight (raw - target)`` given an unbiased ``variance`` of ``raw``:
    ``E = (1-w)^2 (theta - mu)^2 + w^2 Var(raw)``, the risk (one and two samples)."""
    return (1.0 - weight) ** 2 * (raw - target) ** 2 + (2.0 * weight - 1.0) * variance


def _rate_and_variance(x, n):
    """``phat = X/n`` and ``phat (1 - phat) / (n - 1)``, unbiased for ``p (1 - p) / n``."""
    phat = x / np.maximum(n, 1.0)
    return phat, phat * (1.0 - phat) / np.maximum(n - 1.0, 1.0)


def unbiased_risk(successes, trials, target, weight) -> jax.Array:
    """Per-unit unbiased risk of ``delta = target + weight (phat - target)``.

    Exact when ``target`` and ``weight`` do not depend on unit ``i``'s own count and
    ``trials >= 2``; units with ``trials < 2`` get NaN (no unbiased estimate exists).

    Returns:
        ``(m,)`` array; its mean estimates the compound squared error.
    """
    x, n = jnp.asarray(successes, float), jnp.asarray(trials, float)
    phat = x / jnp.maximum(n, 1.0)
    variance = phat * (1.0 - phat) / jnp.maximum(n - 1.0, 1.0)
    return jnp.where(n >= 2, _linear_risk(phat, variance, target, weight), jnp.nan)


@jax.jit
def _tune_lambda(raw, variance, design_variance, target, usable):
    """argmin over lam of the mean URE of ``w = 1 / (1 + lam v)`` (``v = 1/n`` gives
    ``w = n / (n + lam)``): a log grid, then golden section between the grid neighbours
    of the best point."""

    def mean_risk(log_lam):
        weight = 1.0 / (1.0 + jnp.exp(log_lam) * design_variance)
        risk = _linear_risk(raw, variance, target, weight)
        return jnp.sum(jnp.where(usable, risk, 0.0)) / jnp.sum(usable)

    grid = jnp.linspace(-12.0, 16.0, 113)
    values = jax.lax.map(mean_risk, grid)
    best = jnp.argmin(values)
    low, high = grid[jnp.maximum(best - 1, 0)], grid[jnp.minimum(best + 1, grid.size - 1)]
    ratio = (jnp.sqrt(5.0) - 1.0) / 2.0

    def golden(_, bounds):
        a, b = bounds
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        return jnp.where(mean_risk(c) < mean_risk(d), jnp.array([a, d]), jnp.array([c, b]))

    a, b = jax.lax.fori_loop(0, 40, golden, jnp.array([low, high]))
    return jnp.exp((a + b) / 2.0)


# -------------------------------------------------------------------- targets


@functools.partial(jax.jit, static_argnames="steps")
def _irls(design, rates, trials, ridge, steps):
    """Ridge-penalised binomial logistic regression by Newton's method (IRLS)."""
    penalty = ridge * trials.sum() * jnp.eye(design.shape[1]).at[0, 0].set(0.0)

    def newton(_, beta):
        prob = jax.nn.sigmoid(design @ beta)
        weight = trials * prob * (1 - prob) + 1e-9
        gradient = design.T @ (trials * (rates - prob)) - penalty @ beta
        hessian = (design.T * weight) @ design + penalty
        return beta + jnp.linalg.solve(hessian, gradient)

    return jax.lax.fori_loop(0, steps, newton, jnp.zeros(design.shape[1]))


def logistic_regression(covariates, rates, trials, ridge: float = 1e-3, steps: int = 25):
    """Default target regression: binomial logistic regression (IRLS, small ridge) on
    standardised covariates.

    Returns ``predict(covariates) -> rates`` (shape ``(m,)``).
    """
    covariates = np.asarray(covariates, dtype=float)
    center, scale = covariates.mean(0), covariates.std(0) + 1e-12

    def design(z):
        return jnp.column_stack([jnp.ones(len(z)), (np.asarray(z, dtype=float) - center) / scale])

    beta = _irls(design(covariates), jnp.asarray(rates), jnp.asarray(trials), ridge, steps)
    return lambda z: np.asarray(jax.nn.sigmoid(design(z) @ beta))


def fold_labels(key: jax.Array, num_units: int, folds: int) -> np.ndarray:
    """Balanced random fold labels ``(num_units,)`` in ``0..folds-1`` (ranks of uniform
    draws modulo ``folds``; numpy's argsort is ~10x faster than a JAX permutation here)."""
    if folds < 2:
        raise ValueError(f"folds must be >= 2 for cross-fitting, got {folds}")
    labels = np.empty(num_units, dtype=np.int64)
    labels[np.argsort(np.asarray(jax.random.uniform(key, (num_units,))))] = np.arange(num_units) % folds
    return labels


def _out_of_fold(fold: np.ndarray, covariates, pooled: Callable, fit: Callable) -> np.ndarray:
    """Targets fitted without each unit's fold: ``pooled(train_mask)`` without covariates,
    else ``fit(train_mask)(covariates[test])``."""
    target = np.empty(len(fold))
    for k in np.unique(fold):
        test, train = fold == k, fold != k
        target[test] = pooled(train) if covariates is None else fit(train)(covariates[test])
    return target


def cross_fitted_target(
    successes, trials, covariates=None, *, key, folds: int = 2, regression: Regression | None = None
) -> np.ndarray:
    """Out-of-fold targets ``mu_i``: each unit's target is fitted without its own count.

    Without covariates the target is the pooled rate of the other folds; with them, the
    ``regression`` (default :func:`logistic_regression`) fitted on the other folds.
    """
    x, n = check_counts(successes, trials)
    z = _check_covariates(covariates, len(x))
    regression = regression or logistic_regression
    rates = x / np.maximum(n, 1.0)

    def fit(train):
        predict = regression(z[train], rates[train], n[train])
        return lambda z_test: np.clip(np.asarray(predict(z_test)), 1e-6, 1 - 1e-6)

    return _out_of_fold(
        fold_labels(key, len(x), folds), z, lambda train: x[train].sum() / max(n[train].sum(), 1.0), fit
    )


def linear_regression(covariates, values, trials):
    """Default target regression for differences of rates: least squares with intercept,
    weighted by ``1 / (1/n_1 + 1/n_2)`` (pass the harmonic trials as ``trials``).

    Returns ``predict(covariates) -> values``.
    """
    design = np.column_stack([np.ones(len(values)), covariates])
    root = np.sqrt(trials)
    coef = np.linalg.lstsq(design * root[:, None], values * root, rcond=None)[0]
    return lambda z: np.column_stack([np.ones(len(z)), z]) @ coef


# --------------------------------------------------------------- the estimator


class ShrinkageResult(NamedTuple):
    """Shrunken estimates, their intervals and the estimated risk.

    Attributes:
        estimate: shrunken rates (or differences), ``(m,)``.
        lower, upper: interval bounds at ``level`` (NaN where not computed), ``(m,)``.
        raw: unshrunken rates (differences), ``(m,)``.
        target: the cross-fitted targets ``mu_i``, ``(m,)``.
        weight: ``w_i``, the weight on the raw value, ``(m,)``.
        lam: the URE-tuned shrinkage strength.
        risk, risk_se: mean URE of the shrinkage estimator (compound squared error) and
            its standard error over units (units with ``n_i >= 2``).
        raw_risk: unbiased estimate of the raw estimator's compound squared error.
        improvement, improvement_se: ``raw_risk - risk`` and its (paired) standard error.
        num_unscored: units with ``n_i < 2``, estimated but left out of the risk.
        level: the interval level.
    """

    estimate: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    raw: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    lam: float
    risk: float
    risk_se: float
    raw_risk: float
    improvement: float
    improvement_se: float
    num_unscored: int
    level: float

    def table(self):
        """A tidy table, one row per unit: a pandas DataFrame if pandas is installed,
        else a dict of columns."""
        columns = {
            "raw": self.raw,
            "estimate": self.estimate,
            "lower": self.lower,
            "upper": self.upper,
            "target": self.target,
            "weight": self.weight,
        }
        try:
            import pandas as pd
        except ImportError:
            return columns
        return pd.DataFrame(columns)


def _result(raw, variance, target, weight, lam, scored, lower, upper, level) -> ShrinkageResult:
    """Estimates, risk of the shrinkage and of the raw estimator (mean URE over scored
    units), their paired difference, and standard errors over units."""
    shrunk_risk = _linear_risk(raw, variance, target, weight)[scored]
    raw_risk = _linear_risk(raw, variance, target, 1.0)[scored]
    count = int(scored.sum())

    def standard_error(values):
        return float(values.std(ddof=1) / np.sqrt(count)) if count > 1 else np.nan

    return ShrinkageResult(
        estimate=target + weight * (raw - target),
        lower=lower,
        upper=upper,
        raw=raw,
        target=target,
        weight=weight,
        lam=float(lam),
        risk=float(shrunk_risk.mean()),
        risk_se=standard_error(shrunk_risk),
        raw_risk=float(raw_risk.mean()),
        improvement=float((raw_risk - shrunk_risk).mean()),
        improvement_se=standard_error(raw_risk - shrunk_risk),
        num_unscored=int((~scored).sum()),
        level=np.nan if level is None else float(level),
    )


def _warn_unscored(num: int, m: int) -> None:
    if num:
        import warnings

        warnings.warn(
            f"{num} of {m} units have fewer than 2 trials: they are shrunk like the others, "
            "but no unbiased risk estimate exists for them, so the risk and the choice of "
            "the shrinkage strength use the other units only",
            stacklevel=3,
        )


def shrink(
    successes: np.ndarray,
    trials: np.ndarray,
    covariates: np.ndarray | None = None,
    *,
    key: jax.Array,
    level: float | None = 0.9,
    folds: int = 2,
    regression: Regression | None = None,
    lam: float | None = None,
    target: np.ndarray | None = None,
) -> ShrinkageResult:
    """Shrink raw rates ``X_i / n_i`` toward a cross-fitted target, tuned by the URE.

    Args:
        successes: success counts ``X_i``, shape ``(m,)``.
        trials: trial counts ``n_i``, shape ``(m,)``.
        covariates: optional ``(m, k)`` unit covariates for the target regression.
        key: ``jax.random`` key for the cross-fitting folds.
        level: interval level; ``None`` skips intervals. Intervals are the equal-tailed
            quantiles of ``Beta(X_i + lam mu_i, n_i - X_i + lam (1 - mu_i))``, the
            empirical-Bayes posterior under a beta prior with mean ``mu_i`` and
            concentration ``lam`` (exact beta quantiles: no normal approximation, so they
            stay inside [0, 1] and keep their level at small ``n_i`` and rare rates, on
            average over units when the rates are beta-distributed around the target).
        folds: number of cross-fitting folds.
        regression: ``regression(z, rates, trials) -> predict``; default logistic.
        lam: fix the shrinkage strength instead of tuning it.
        target: fix the targets ``mu_i`` (must not depend on the units' own counts).

    Example:
        >>> result = shrink([3, 0, 5], [10, 4, 12], key=jax.random.key(0))  # doctest: +SKIP
        >>> result.estimate, result.improvement  # doctest: +SKIP
    """
    x, n = check_counts(successes, trials)
    if target is None:
        target = cross_fitted_target(x, n, covariates, key=key, folds=folds, regression=regression)
    target = np.asarray(target, dtype=float)
    scored = n >= 2
    _warn_unscored(int((~scored).sum()), len(x))
    if not scored.any():
        raise ValueError("no unit has 2 or more trials: the risk cannot be estimated")
    raw, variance = _rate_and_variance(x, n)
    if lam is None:
        lam = float(_tune_lambda(raw, variance, 1.0 / np.maximum(n, 1.0), target, scored))
    weight = n / (n + lam)
    lower = upper = np.full(len(x), np.nan)
    if level is not None:
        from scipy import stats

        # Quantiles depend on (alpha, beta) only: compute them once per distinct pair
        # (few without covariates, where targets are constant within a fold).
        shapes = (x + lam * target) + 1j * (n - x + lam * (1.0 - target))
        distinct, inverse = np.unique(shapes, return_inverse=True)
        tail = (1.0 - level) / 2.0
        lower = stats.beta.ppf(tail, distinct.real, distinct.imag)[inverse]
        upper = stats.beta.ppf(1.0 - tail, distinct.real, distinct.imag)[inverse]
    return _result(raw, variance, target, weight, lam, scored, lower, upper, level)


def shrink_difference(
    successes1,
    trials1,
    successes2,
    trials2,
    covariates=None,
    *,
    key: jax.Array,
    folds: int = 2,
    regression: Regression | None = None,
    lam: float | None = None,
    level: float | None = 0.9,
    design: str | None = None,
) -> ShrinkageResult:
    """Two-sample version for *independent* samples: shrink ``thetahat_i = phat_i1 - phat_i2``
    toward a cross-fitted target with ``w_i = 1 / (1 + lam v_i)``, ``v_i = 1/n_i1 + 1/n_i2``
    (known, so the URE ``(1-w)^2 (thetahat - mu)^2 + (2w - 1) Vhat`` stays exact, ``Vhat_i``
    the unbiased variance estimate). Targets are cross-fitted like :func:`shrink`'s: the
    mean difference of the other folds, or ``regression`` (default
    :func:`linear_regression`, weighted by ``1 / v_i``) on covariates.

    ``Vhat_i = sum_g phat_ig (1 - phat_ig) / (n_ig - 1)`` is unbiased only when the two
    samples are independent binomials. When both arms share clusters (an audit study
    sending both arms to the same jobs) it is wrong, usually too large: use
    :func:`ppl.eb.paired.shrink_paired_difference` with the per-cluster counts. Declare
    independence with ``design="independent"``; without it the call still runs as before
    but warns.

    Intervals (``level``; ``None`` skips them) are the robust EBCIs of
    :func:`ppl.eb.robust.robust_intervals` (Armstrong, Kolesar and Plagborg-Moller),
    with the moments of ``theta - mu`` estimated without bias from the counts
    (:func:`ppl.eb.robust.difference_moments`) and the scale
    ``sigma_i^2 = sum_g pbar_g (1 - pbar_g) / n_ig`` from each sample's pooled rate (a
    plug-in: the approximation). Their guarantee is average coverage over units.
    """
    if design is None:
        import warnings

        warnings.warn(
            "shrink_difference assumes the two samples are independent binomials; pass "
            "design='independent' to declare it, or use ppl.eb.paired.shrink_paired_difference "
            "when both arms share clusters (jobs, sites)",
            stacklevel=2,
        )
    elif design != "independent":
        raise ValueError(
            f"design={design!r}: shrink_difference handles design='independent' only; for paired "
            "or clustered arms use ppl.eb.paired.shrink_paired_difference"
        )
    x1, n1 = check_counts(successes1, trials1, "sample 1")
    x2, n2 = check_counts(successes2, trials2, "sample 2")
    if x1.shape != x2.shape:
        raise ValueError(f"the two samples have {len(x1)} and {len(x2)} units")
    (p1, variance1), (p2, variance2) = _rate_and_variance(x1, n1), _rate_and_variance(x2, n2)
    raw, variance = p1 - p2, variance1 + variance2
    design_variance = 1.0 / np.maximum(n1, 1.0) + 1.0 / np.maximum(n2, 1.0)
    z = _check_covariates(covariates, len(raw))
    regression = regression or linear_regression

    def fit(train):
        return regression(z[train], raw[train], 1.0 / design_variance[train])

    target = _out_of_fold(fold_labels(key, len(raw), folds), z, lambda train: raw[train].mean(), fit)
    scored = (n1 >= 2) & (n2 >= 2)
    _warn_unscored(int((~scored).sum()), len(raw))
    if not scored.any():
        raise ValueError("no unit has 2 or more trials in both samples: the risk cannot be estimated")
    if lam is None:
        lam = float(_tune_lambda(raw, variance, design_variance, target, scored))
    weight = 1.0 / (1.0 + lam * design_variance)
    lower = upper = np.full(len(raw), np.nan)
    if level is not None:
        from ppl.eb import robust

        pooled1, pooled2 = x1.sum() / max(n1.sum(), 1.0), x2.sum() / max(n2.sum(), 1.0)
        noise = pooled1 * (1 - pooled1) / np.maximum(n1, 1.0) + pooled2 * (1 - pooled2) / np.maximum(n2, 1.0)
        second, fourth = robust.difference_moments(x1, n1, x2, n2, target)
        lower, upper = robust.robust_intervals(
            raw, variance, target, weight, level, noise_variance=noise, second=second, fourth=fourth
        )
    return _result(raw, variance, target, weight, lam, scored, lower, upper, level)


# ------------------------------------------------------------------ baselines


def mle(successes, trials) -> np.ndarray:
    """Raw rates ``X_i / n_i`` (0 where ``n_i = 0``)."""
    x, n = check_counts(successes, trials)
    return x / np.maximum(n, 1.0)


def distinct_pairs(x: np.ndarray, n: np.ndarray):
    """Distinct ``(x, n)`` pairs, their counts and the map back to units.

    Marginal likelihoods depend on the data only through these, so baselines fitted on
    them cost O(distinct pairs) instead of O(units) (10^6 units with n <= 30 have a few
    hundred distinct pairs). Padded with zero-count pairs to a power-of-two length.
    """
    base = int(n.max()) + 1
    codes, inverse, counts = np.unique(
        x.astype(np.int64) * base + n.astype(np.int64), return_inverse=True, return_counts=True
    )
    # Pad to a power of two with zero-count pairs, so that the jitted fits compile once
    # per size bucket rather than once per number of distinct pairs.
    size = 1 << int(np.ceil(np.log2(max(len(codes), 8))))
    pad = size - len(codes)
    pairs_x = np.concatenate([codes // base, np.zeros(pad, np.int64)])
    pairs_n = np.concatenate([codes % base, np.ones(pad, np.int64)])
    return pairs_x, pairs_n, np.concatenate([counts, np.zeros(pad, np.int64)]), inverse


@jax.jit
def _beta_binomial_fit(x, n, counts):
    def negative_loglik(params):
        a, b = jnp.exp(params)
        return -jnp.sum(counts * (betaln(x + a, n - x + b) - betaln(a, b)))

    mean = jnp.clip((counts * x).sum() / (counts * n).sum(), 1e-3, 1 - 1e-3)
    params = jnp.log(jnp.array([mean, 1 - mean]) * 10.0)
    gradient, hessian = jax.grad(negative_loglik), jax.hessian(negative_loglik)

    def newton(_, params):
        step = jnp.linalg.solve(hessian(params) + 1e-6 * jnp.eye(2), gradient(params))
        return params - jnp.clip(step, -1.0, 1.0)  # damped: the likelihood is flat far out

    return jnp.exp(jax.lax.fori_loop(0, 100, newton, params))


def beta_binomial(successes, trials) -> tuple[np.ndarray, float, float]:
    """Beta-binomial empirical Bayes by marginal maximum likelihood.

    Maximises ``sum_i log B(X_i + a, n_i - X_i + b) - log B(a, b)`` over ``(a, b)``
    (Newton on ``log a, log b``); returns the posterior means ``(X_i + a)/(n_i + a + b)``
    and ``(a, b)``.
    """
    x, n = check_counts(successes, trials)
    ux, un, counts, _ = distinct_pairs(x, n)
    a, b = (
        float(v)
        for v in _beta_binomial_fit(
            jnp.asarray(ux, float), jnp.asarray(un, float), jnp.asarray(counts, float)
        )
    )
    return (x + a) / (n + a + b), a, b


def james_stein_arcsine(successes, trials) -> np.ndarray:
    """Efron-Morris (1975): James-Stein on ``y = sqrt(n) arcsin(2 phat - 1)`` (variance ~1),
    shrunk toward the mean by ``1 - (m - 3) / sum (y - ybar)^2``, transformed back.
    Designed for equal ``n_i``; with unequal ``n_i`` each unit keeps its own ``sqrt(n_i)``."""
    x, n = check_counts(successes, trials)
    m = len(x)
    if m < 4:
        raise ValueError(f"James-Stein needs at least 4 units, got {m}")
    y = np.sqrt(n) * np.arcsin(2 * x / np.maximum(n, 1.0) - 1)
    shrinkage = max(0.0, 1.0 - (m - 3) / np.sum((y - y.mean()) ** 2))
    z = y.mean() + shrinkage * (y - y.mean())
    return (np.sin(np.clip(z / np.sqrt(np.maximum(n, 1.0)), -np.pi / 2, np.pi / 2)) + 1) / 2


class NPMLEResult(NamedTuple):
    """Kiefer-Wolfowitz NPMLE of the prior on a grid.

    Attributes:
        estimate: posterior means ``(m,)``.
        grid: support points ``(k,)``; weights: prior masses ``(k,)``.
        loglik: marginal log-likelihood after each EM iteration ``(iterations,)``.
    """

    estimate: np.ndarray
    grid: np.ndarray
    weights: np.ndarray
    loglik: np.ndarray


@jax.jit
def _npmle_em(x, n, counts, grid, iterations_marker):
    log_binomial = (
        gammaln(n + 1)[:, None]
        - gammaln(x + 1)[:, None]
        - gammaln(n - x + 1)[:, None]
        + x[:, None] * jnp.log(grid)
        + (n - x)[:, None] * jnp.log1p(-grid)
    )
    likelihood = jnp.exp(log_binomial - log_binomial.max(axis=1, keepdims=True))
    offset = jnp.sum(counts * log_binomial.max(axis=1))
    fraction = counts / counts.sum()

    def em(weights, _):
        marginal = likelihood @ weights
        weights = weights * (fraction @ (likelihood / marginal[:, None]))
        loglik = jnp.sum(counts * jnp.log(likelihood @ weights)) + offset
        return weights, loglik

    weights = jnp.full(grid.shape, 1.0 / grid.size)
    weights, loglik = jax.lax.scan(em, weights, iterations_marker)
    estimate = (likelihood * weights) @ grid / (likelihood @ weights)
    return estimate, weights, loglik


def npmle(successes, trials, grid_size: int = 300, iterations: int = 500) -> NPMLEResult:
    """Binomial NPMLE (Kiefer-Wolfowitz) by EM on a uniform grid of ``grid_size`` points
    in (0, 1): ``pi <- pi * mean_i[L_ik / (L pi)_i]``. Each EM step cannot decrease the
    marginal likelihood; the posterior means use the final prior."""
    x, n = check_counts(successes, trials)
    grid = jnp.linspace(0.5 / grid_size, 1 - 0.5 / grid_size, grid_size)
    ux, un, counts, inverse = distinct_pairs(x, n)
    estimate, weights, loglik = _npmle_em(
        jnp.asarray(ux, float),
        jnp.asarray(un, float),
        jnp.asarray(counts, float),
        grid,
        jnp.zeros(iterations),
    )
    return NPMLEResult(
        np.asarray(estimate)[inverse], np.asarray(grid), np.asarray(weights), np.asarray(loglik)
    )


def hierarchical_model(trials, successes=None):
    """Fully Bayesian beta-binomial model, for ``ppl.nuts``.

    ``mean ~ Beta(1, 1)``, ``concentration ~ LogNormal(log 10, 2)``, and per unit (plate
    ``unit``) ``p ~ Beta(mean * concentration, (1 - mean) * concentration)``,
    ``X ~ Binomial(n, p)``.
    """
    mean = sample("mean", dist.Beta(1.0, 1.0))
    concentration = sample("concentration", dist.LogNormal(jnp.log(10.0), 2.0))
    with plate("unit", len(trials)):
        p = sample("p", dist.Beta(mean * concentration, (1 - mean) * concentration))
        sample("successes", dist.Binomial(trials, p), obs=successes)
