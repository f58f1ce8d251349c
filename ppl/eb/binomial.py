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
    "SplineRegression",
    "spline_regression",
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


def _distinct(code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(code, return_inverse=True)`` for non-negative integer codes; by
    counting (O(m)) when the codes are below 2^22, by sorting otherwise."""
    if code.max(initial=0) < 1 << 22:
        present = np.flatnonzero(np.bincount(code))
        lookup = np.zeros(int(present[-1]) + 1 if len(present) else 1, dtype=np.int64)
        lookup[present] = np.arange(len(present))
        return present, lookup[code]
    return np.unique(code, return_inverse=True)


def _tune_lambda(raw, variance, design_variance, target, usable, code=None) -> float:
    """argmin over lam of the mean URE of ``w = 1 / (1 + lam v)`` (``v = 1/n`` gives
    ``w = n / (n + lam)``) over the ``usable`` units.

    The weight depends on a unit only through ``v``, so the mean URE is a sum over the
    distinct values of ``v`` of ``(1-w)^2 sum (raw - target)^2 + (2w - 1) sum variance``:
    the search runs on those sums (a few dozen values for integer trials instead of 10^6
    units; the same objective exactly). ``code``: optional non-negative integer labels with
    equal ``v`` within a label (e.g. the trials), which spare the sort of ``v``."""
    usable = np.asarray(usable, dtype=bool)
    design_variance = np.asarray(design_variance, dtype=float)[usable]
    if code is None:
        values, inverse = np.unique(design_variance, return_inverse=True)
    else:
        _, inverse = _distinct(np.asarray(code, dtype=np.int64)[usable])
        values = np.zeros(inverse.max(initial=0) + 1)
        values[inverse] = design_variance
    residual = (np.asarray(raw, dtype=float) - np.asarray(target, dtype=float))[usable]
    squares = np.bincount(inverse, weights=residual**2, minlength=len(values))
    variances = np.bincount(inverse, weights=np.asarray(variance, dtype=float)[usable], minlength=len(values))
    # Pad to a power of two (zero sums) so that the jitted search compiles once per bucket.
    size = 1 << int(np.ceil(np.log2(max(len(values), 8))))
    pad = size - len(values)
    scale = max(float(squares.sum() + variances.sum()), 1e-300)  # float32-safe magnitudes
    return float(
        _tune_lambda_sums(
            jnp.asarray(np.concatenate([values, np.ones(pad)])),
            jnp.asarray(np.concatenate([squares, np.zeros(pad)]) / scale),
            jnp.asarray(np.concatenate([variances, np.zeros(pad)]) / scale),
        )
    )


@jax.jit
def _tune_lambda_sums(design_variance, squares, variances):
    """The search of :func:`_tune_lambda` on per-value sums: a log grid, then golden
    section between the grid neighbours of the best point."""

    def mean_risk(log_lam):
        weight = 1.0 / (1.0 + jnp.exp(log_lam) * design_variance)
        return jnp.sum((1.0 - weight) ** 2 * squares + (2.0 * weight - 1.0) * variances)

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


EXPONENTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
"""The grid of exponents ``a`` searched by ``shrink(..., exponent=None)``."""


class _Weights(NamedTuple):
    weight: np.ndarray  # w_i
    concentration: np.ndarray  # kappa_i with w_i = n_i / (n_i + kappa_i): the beta prior's
    lam: float  # the single lam (NaN with groups)
    exponent: float
    group_lam: np.ndarray | None
    risk: float  # mean URE over the scored units at these weights


def _check_target(target, m: int) -> np.ndarray:
    """A user's fixed targets: shape ``(m,)``, finite, inside [0, 1]; else a ValueError
    naming the rows."""
    target = np.asarray(target, dtype=float)
    if target.shape != (m,):
        raise ValueError(f"target must have shape ({m},) like the counts, got {target.shape}")
    bad = ~np.isfinite(target) | (target < 0) | (target > 1)
    if bad.any():
        raise ValueError(f"target must be finite and inside [0, 1]; not at {_rows(bad)}")
    return target


def _tune_weights(raw, variance, n, target, scored, exponent, groups, lam) -> _Weights:
    """URE-tuned weights ``w_i = n_i^a / (n_i^a + lam_g(i))``.

    For fixed ``(a, lam)`` the URE is exactly unbiased (the weights depend on ``n_i`` and
    the group labels only). The tuning is the one approximation: ``lam`` (per group: the
    URE is a sum over groups, so each ``lam_g`` minimises its group's sum) by a 1-D
    search, and ``a`` over :data:`EXPONENTS` when ``exponent`` is None.
    """
    size = np.maximum(n, 1.0)
    code = size.astype(np.int64)  # the weights depend on a unit through n_i and its group
    best = None
    for a in EXPONENTS if exponent is None else (float(exponent),):
        design = size ** (-a)
        if groups is None:
            lam_a = (
                float(lam) if lam is not None else _tune_lambda(raw, variance, design, target, scored, code)
            )
            unit_lam, group_lam = np.full(len(n), lam_a), None
        else:
            labels, index = np.unique(groups, return_inverse=True)
            overall = _tune_lambda(raw, variance, design, target, scored, code)
            group_lam = np.array(
                [
                    _tune_lambda(raw, variance, design, target, scored & (index == g), code)
                    if (scored & (index == g)).any()
                    else overall  # no scored unit in the group: no risk to tune on
                    for g in range(len(labels))
                ]
            )
            unit_lam, lam_a = group_lam[index], np.nan
        # A unit without trials has no raw rate: it sits at its target (w = 0).
        weight = np.where(n > 0, 1.0 / (1.0 + unit_lam * design), 0.0)
        risk = float(_linear_risk(raw, variance, target, weight)[scored].mean())
        if best is None or risk < best.risk:
            concentration = unit_lam * size ** (1.0 - a)
            best = _Weights(weight, concentration, lam_a, a, group_lam, risk)
    return best


def _beta_intervals(x, n, concentration, target, level):
    """Equal-tailed ``level`` quantiles of ``Beta(X + kappa mu, n - X + kappa (1 - mu))``.

    Quantiles depend on the two shapes only. With few distinct targets (no covariates:
    one per fold) they are computed once per distinct pair of shapes. With a target per
    unit (covariates) at scale they are computed on a grid of 129 targets equally spaced
    in logit(mu) for each distinct ``(X, n, kappa)`` and interpolated linearly in
    (logit mu, logit quantile): largest absolute error 1.4e-4 against exact quantiles at
    10^6 units (n_i 2..29, two covariates, spline target), below 1e-3 in
    ``tests/eb/test_weights.py``; far inside the intervals' own width and sampling error."""
    from scipy import stats

    tail = (1.0 - level) / 2.0
    alpha, beta = x + concentration * target, n - x + concentration * (1.0 - target)
    m = len(x)
    inside = bool(np.all((target > 0.0) & (target < 1.0)))
    if m > 50_000 and inside and len(np.unique(target[: min(m, 4096)])) > 64:
        if np.all(concentration == concentration[0]):  # one lam, a = 1: skip the sort
            kappa_values, kappa_index = concentration[:1], np.zeros(m, dtype=np.int64)
        else:
            kappa_values, kappa_index = np.unique(concentration, return_inverse=True)
        base = int(n.max()) + 1
        if len(kappa_values) * base * base < 2**62:
            code = (kappa_index.astype(np.int64) * base + n.astype(np.int64)) * base + x.astype(np.int64)
            codes, inverse = _distinct(code)
            grid_size = 129
            if len(codes) * grid_size * 4 < m:
                return _interpolated_intervals(
                    codes, inverse, base, kappa_values, target, grid_size, tail, stats
                )
    shapes = alpha + 1j * beta
    distinct, inverse = np.unique(shapes, return_inverse=True)
    lower = stats.beta.ppf(tail, distinct.real, distinct.imag)[inverse]
    upper = stats.beta.ppf(1.0 - tail, distinct.real, distinct.imag)[inverse]
    return lower, upper


def _interpolated_intervals(codes, inverse, base, kappa_values, target, grid_size, tail, stats):
    """Quantile tables on a logit(mu) grid per distinct ``(X, n, kappa)`` code, read by
    linear interpolation in (logit mu, logit quantile)."""
    x_d = (codes % base).astype(float)
    n_d = ((codes // base) % base).astype(float)
    kappa_d = kappa_values[codes // (base * base)]
    logit_target = np.log(target) - np.log1p(-target)
    low, high = logit_target.min(), logit_target.max()
    grid = np.linspace(low, high, grid_size)
    mu = 1.0 / (1.0 + np.exp(-grid))
    alpha = x_d[:, None] + kappa_d[:, None] * mu[None, :]
    beta = n_d[:, None] - x_d[:, None] + kappa_d[:, None] * (1.0 - mu[None, :])
    position = (logit_target - low) / max(high - low, 1e-300) * (grid_size - 1)
    cell = np.clip(np.floor(position).astype(np.int64), 0, grid_size - 2)
    fraction = position - cell
    bounds = []
    for q in (tail, 1.0 - tail):
        table = np.clip(stats.beta.ppf(q, alpha, beta), 1e-300, 1.0 - 1e-16)
        table = np.log(table) - np.log1p(-table)
        value = (1.0 - fraction) * table[inverse, cell] + fraction * table[inverse, cell + 1]
        bounds.append(1.0 / (1.0 + np.exp(-value)))
    return bounds[0], bounds[1]


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


PENALTIES = tuple(float(v) for v in np.logspace(-7.0, 2.0, 19))
"""Ridge penalties (relative to the total weight) searched by :func:`spline_regression`."""


def _spline_basis(z, low, high, center, scale, knots):
    """Intercept; per covariate ``z, z^2, z^3`` and ``(z - t_k)_+^3`` at the knots (a
    cubic regression spline); products of pairs of covariates. ``z`` is clamped to
    ``[low, high]`` first (the training 0.5% and 99.5% quantiles), so that predictions
    never extrapolate a cubic. Filled in place
    into one Fortran-ordered array (column by column: 5x faster than stacking at 10^6)."""
    z = (np.clip(z, low, high) - center) / scale
    k = z.shape[1]
    width = 1 + sum(3 + len(t) for t in knots) + k * (k - 1) // 2
    basis = np.empty((len(z), width), order="F")
    basis[:, 0] = 1.0
    column = 1
    for j in range(k):
        basis[:, column] = z[:, j]
        np.multiply(z[:, j], z[:, j], out=basis[:, column + 1])
        np.multiply(basis[:, column + 1], z[:, j], out=basis[:, column + 2])
        column += 3
        for t in knots[j]:
            out = basis[:, column]
            np.subtract(z[:, j], t, out=out)
            np.maximum(out, 0.0, out=out)
            out **= 3
            column += 1
    for j in range(k):
        for i in range(j + 1, k):
            np.multiply(z[:, j], z[:, i], out=basis[:, column])
            column += 1
    return basis


class _SplineDesign(NamedTuple):
    """The spline basis of :class:`SplineRegression`: clipping range, standardisation,
    knots and column scales, all functions of covariates only (never of counts)."""

    low: np.ndarray
    high: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    knots: list
    column_scale: np.ndarray

    @classmethod
    def from_covariates(cls, z, num_knots):
        """The design fitted to ``z`` (column scales still 1) and its basis at ``z``."""
        # Covariates are clamped to their 0.5% and 99.5% quantiles: beyond them a handful
        # of units would set the cubic tails (the fit there is flat instead).
        inner = np.linspace(0.0, 1.0, num_knots + 2)[1:-1]
        quantiles = np.quantile(z, np.concatenate([[0.005], inner, [0.995]]), axis=0)
        # A column whose tails hold under 0.5% of the units (a rare dummy) would collapse
        # to a constant: it keeps its full range.
        collapsed = ~(quantiles[0] < quantiles[-1])
        low = np.where(collapsed, z.min(0), quantiles[0])
        high = np.where(collapsed, z.max(0), quantiles[-1])
        center, scale = z.mean(0), z.std(0) + 1e-12
        knots = [np.unique((quantiles[1:-1, j] - center[j]) / scale[j]) for j in range(z.shape[1])]
        basis = _spline_basis(z, low, high, center, scale, knots)
        return cls(low, high, center, scale, knots, np.ones(basis.shape[1])), basis

    def scaled(self, gram, total):
        """The design with columns of unit weighted sd (so that one penalty suits all of
        them), read off the weighted Gram matrix (column 0 is the intercept)."""
        mean = gram[0] / total
        column_scale = np.sqrt(np.maximum(np.diag(gram) / total - mean**2, 0.0)) + 1e-12
        column_scale[0] = 1.0
        return self._replace(column_scale=column_scale)

    def __call__(self, z):
        basis = _spline_basis(z, self.low, self.high, self.center, self.scale, self.knots)
        basis /= self.column_scale
        return basis


def _ridge_gcv(gram, moment, squares, count, total, penalties):
    """Weighted ridge coefficients at the GCV-chosen penalty, from sufficient statistics
    ``G = B' N B``, ``b = B' N y``, ``y' N y`` (intercept unpenalised)."""
    penalty = np.eye(len(moment))
    penalty[0, 0] = 0.0
    best_score, coef = np.inf, np.zeros(len(moment))
    for r in penalties:
        system = gram + r * total * penalty
        candidate = np.linalg.solve(system, moment)
        residual = squares - 2.0 * candidate @ moment + candidate @ gram @ candidate
        dof = np.trace(np.linalg.solve(system, gram))
        score = count * residual / max(count - dof, 1.0) ** 2
        if score < best_score:
            best_score, coef = score, candidate
    return coef


def _as_matrix(z):
    z = np.asarray(z, dtype=float)
    return z[:, None] if z.ndim == 1 else z


class SplineRegression(NamedTuple):
    """Default target regression: an additive cubic spline in each covariate plus pairwise
    products, fitted to the rates by weighted ridge regression (weights ``n_i``), the
    penalty chosen by generalised cross-validation.

    Why this one: it follows smooth nonlinear mean functions (the benchmark's
    ``sin(2 z_1)``); it is closed form (one weighted Gram matrix per fit, ``O(m p^2)``
    with ``p = 1 + k (3 + num_knots) + k (k - 1) / 2`` columns for ``k`` covariates, and
    the penalty search reuses that matrix), so it is deterministic and fast at 10^6 units;
    it needs nothing beyond numpy. Weights ``n_i`` are the inverse binomial variance of
    the raw rate up to ``p_i (1 - p_i)``. The fit is on the rate scale (the caller clips
    predictions into (0, 1)); it has no interactions beyond products of pairs, so for
    many covariates or sharp effects pass another ``regression=``.

    For each penalty ``r`` (relative to the total weight) ``beta_r = (G + r sum(n) P)^-1 b``
    with ``G = B' N B``, ``b = B' N y``; GCV picks the ``r`` minimising
    ``m RSS_N(r) / (m - tr((G + r sum(n) P)^-1 G))^2``.

    Calling it, ``spline_regression(z, rates, trials) -> predict``, is the generic
    fit/predict :data:`Regression`. Cross-fitting uses :meth:`cross_fit`, which builds
    the basis once from all units' covariates (no counts) and obtains each fold's
    training Gram matrix as the total minus the fold's: the same estimator, one pass.

    Attributes:
        num_knots: interior knots per covariate, at its quantiles.
        penalties: the ridge penalties searched.
    """

    num_knots: int = 5
    penalties: tuple = PENALTIES

    def __call__(self, covariates, rates, trials):
        """Fit on ``(m, k)`` covariates, rates and trials; return ``predict(z) -> rates``."""
        z, y, weight = _as_matrix(covariates), np.asarray(rates, float), np.asarray(trials, float)
        design, basis = _SplineDesign.from_covariates(z, self.num_knots)
        stats = _weighted_stats(basis, weight, y)
        design = design.scaled(stats[0], stats[4])
        coef = _ridge_gcv(*_rescale(stats, design.column_scale), self.penalties)
        return lambda z_new: design(_as_matrix(z_new)) @ coef

    def cross_fit(self, covariates, rates, trials, fold) -> np.ndarray:
        """Out-of-fold predictions ``(m,)``: unit ``i``'s from the fit on the other folds."""
        # Sorted by fold, each fold is a contiguous block of rows (no copies per fold);
        # small integer labels sort by radix.
        order = np.argsort(np.asarray(fold, dtype=np.int16), kind="stable")
        z, y = _as_matrix(covariates)[order], np.asarray(rates, float)[order]
        weight = np.asarray(trials, float)[order]
        design, basis = _SplineDesign.from_covariates(z, self.num_knots)
        counts = np.bincount(np.asarray(fold, dtype=np.int64))
        edges = np.concatenate([[0], np.cumsum(counts[counts > 0])])
        blocks = [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        stats = [_weighted_stats(basis[rows], weight[rows], y[rows]) for rows in blocks]
        total = [sum(s[i] for s in stats) for i in range(5)]
        column_scale = design.scaled(total[0], total[4]).column_scale
        prediction = np.empty(len(y))
        for rows, own in zip(blocks, stats, strict=True):
            train = _rescale([t - o for t, o in zip(total, own, strict=True)], column_scale)
            prediction[order[rows]] = basis[rows] @ (_ridge_gcv(*train, self.penalties) / column_scale)
        return prediction


def _weighted_stats(basis, weight, y):
    """``(B' N B, B' N y, y' N y, count, sum n)``: all a weighted ridge fit needs."""
    return ((basis.T * weight) @ basis, basis.T @ (weight * y), weight @ y**2, len(y), weight.sum())


def _rescale(stats, column_scale):
    """The statistics of the basis with columns divided by ``column_scale``."""
    gram, moment, squares, count, total = stats
    return gram / np.outer(column_scale, column_scale), moment / column_scale, squares, count, total


spline_regression = SplineRegression()
"""The default :class:`SplineRegression` (5 knots per covariate, GCV over :data:`PENALTIES`)."""


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


FOLDS = 5
"""Default number of cross-fitting folds: each target is fitted on 80% of the units (with
2 folds, half the units are too few for a target regression on a few hundred units)."""


def _cross_fit(x, n, z, fold, regression) -> np.ndarray:
    """Out-of-fold targets on given fold labels: pooled rates if ``z`` is None, else
    ``regression`` predictions clipped into ``[1e-6, 1 - 1e-6]`` (through its
    ``cross_fit`` method when it has one, e.g. :class:`SplineRegression`)."""
    rates = x / np.maximum(n, 1.0)
    if z is not None and hasattr(regression, "cross_fit"):
        return np.clip(regression.cross_fit(z, rates, n, fold), 1e-6, 1 - 1e-6)

    def fit(train):
        predict = regression(z[train], rates[train], n[train])
        return lambda z_test: np.clip(np.asarray(predict(z_test)), 1e-6, 1 - 1e-6)

    return _out_of_fold(fold, z, lambda train: x[train].sum() / max(n[train].sum(), 1.0), fit)


def cross_fitted_target(
    successes, trials, covariates=None, *, key, folds: int = FOLDS, regression: Regression | None = None
) -> np.ndarray:
    """Out-of-fold targets ``mu_i``: each unit's target is fitted without its own count.

    Without covariates the target is the pooled rate of the other folds; with them, the
    ``regression`` (default :func:`spline_regression`) fitted on the other folds.
    """
    x, n = check_counts(successes, trials)
    z = _check_covariates(covariates, len(x))
    return _cross_fit(x, n, z, fold_labels(key, len(x), folds), regression or spline_regression)


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
        exponent: ``a`` in ``w_i = n_i^a / (n_i^a + lam)`` (1 unless chosen otherwise).
        group_lam: per-group shrinkage strengths with ``groups=`` (``lam`` is NaN then),
            in the order of the sorted group labels; None otherwise.
        target_choice: which target the URE chose, ``"pooled"`` or ``"regression"``
            (``"fixed"`` for user targets and for :func:`shrink_difference`).
        candidate_risks: the mean URE of each candidate target at its own tuned weights
            (the numbers the choice compared); None when there was no choice.
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
    exponent: float = 1.0
    group_lam: np.ndarray | None = None
    target_choice: str = "fixed"
    candidate_risks: dict | None = None

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


def _result(raw, variance, target, weight, lam, scored, lower, upper, level, **extra) -> ShrinkageResult:
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
        **extra,
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
    folds: int = FOLDS,
    regression: Regression | None = None,
    lam: float | None = None,
    target: np.ndarray | None = None,
    target_choice: str = "auto",
    choice_margin: float = 1.0,
    exponent: float | None = 1.0,
    groups: np.ndarray | None = None,
    intervals: str = "beta",
) -> ShrinkageResult:
    """Shrink raw rates ``X_i / n_i`` toward a cross-fitted target, tuned by the URE.

    ``delta_i = mu_i + w_i (phat_i - mu_i)`` with ``w_i = n_i^a / (n_i^a + lam_g(i))``
    (``a = 1``, one ``lam``: the beta-binomial form ``(X_i + lam mu_i) / (n_i + lam)``).
    The URE is exactly unbiased for the risk at fixed targets and weights; choosing
    ``lam``, ``a`` and the target by minimising it is the one approximation (a selection
    over a small class; its optimism is small for m in the hundreds and more, see
    ``docs/eb.md``).

    Args:
        successes: success counts ``X_i``, shape ``(m,)``.
        trials: trial counts ``n_i``, shape ``(m,)``.
        covariates: optional ``(m, k)`` unit covariates for the target regression.
        key: ``jax.random`` key for the cross-fitting folds.
        level: interval level; ``None`` skips intervals. Intervals are the equal-tailed
            quantiles of ``Beta(X_i + kappa_i mu_i, n_i - X_i + kappa_i (1 - mu_i))`` with
            ``kappa_i = n_i (1 - w_i) / w_i`` (``= lam`` for ``a = 1``), the
            empirical-Bayes posterior under a beta prior with mean ``mu_i`` and
            concentration ``kappa_i`` (beta quantiles: no normal approximation, so they
            stay inside [0, 1] and keep their level at small ``n_i`` and rare rates, on
            average over units when the rates are beta-distributed around the target).
        folds: number of cross-fitting folds (default 5).
        regression: ``regression(z, rates, trials) -> predict``; default
            :func:`spline_regression`.
        lam: fix the shrinkage strength instead of tuning it.
        target: fix the targets ``mu_i`` (must not depend on the units' own counts).
        target_choice: with covariates, ``"auto"`` (default) tunes the weights for both
            the pooled target and the regression target and keeps the regression only
            if its mean URE is smaller than the pooled target's by more than
            ``choice_margin`` standard errors of the paired per-unit difference (the
            one-standard-error rule: on noise covariates a GCV-shrunk regression is
            nearly the pooled rate and wins half the coin flips by a negligible amount;
            the pooled target is the simpler model); ``"pooled"`` or ``"regression"``
            forces one.
        choice_margin: the margin of ``"auto"``, in standard errors (0: plain minimum).
        exponent: ``a`` in the weights; ``None`` chooses it by the URE over
            :data:`EXPONENTS`.
        groups: optional integer labels ``(m,)``: one ``lam`` per group, each tuned by
            its group's URE.
        intervals: ``"beta"`` (above) or ``"robust"``: the robust EBCIs of
            :func:`ppl.eb.robust.robust_intervals` (Armstrong, Kolesar and Plagborg-Moller
            2022), which need no beta prior: exact unbiased moments of ``p_i - mu_i`` from
            the counts (:func:`ppl.eb.robust.rate_moments`), the plug-in noise scale
            ``mu_i (1 - mu_i) / n_i`` and a normal approximation of the noise (the two
            approximations); they guarantee coverage *on average over units*, not for each
            unit (a unit far from its target is pulled toward it and covered less often).

    Example:
        >>> result = shrink([3, 0, 5], [10, 4, 12], key=jax.random.key(0))  # doctest: +SKIP
        >>> result.estimate, result.improvement  # doctest: +SKIP
    """
    x, n = check_counts(successes, trials)
    z = _check_covariates(covariates, len(x))
    if target_choice not in ("auto", "pooled", "regression"):
        raise ValueError(f"target_choice must be 'auto', 'pooled' or 'regression', got {target_choice!r}")
    if intervals not in ("beta", "robust"):
        raise ValueError(f"intervals must be 'beta' or 'robust', got {intervals!r}")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != x.shape:
            raise ValueError(f"groups must have shape {x.shape}, got {groups.shape}")
        if lam is not None:
            raise ValueError("pass lam or groups, not both: groups tune one lam per group")
    scored = n >= 2
    _warn_unscored(int((~scored).sum()), len(x))
    if not scored.any():
        raise ValueError("no unit has 2 or more trials: the risk cannot be estimated")
    if target is not None:
        candidates = {"fixed": _check_target(target, len(x))}
    else:
        fold = fold_labels(key, len(x), folds)
        candidates = {}
        if z is None or target_choice in ("auto", "pooled"):
            candidates["pooled"] = _cross_fit(x, n, None, fold, None)
        if z is not None and target_choice in ("auto", "regression"):
            candidates["regression"] = _cross_fit(x, n, z, fold, regression or spline_regression)
    raw, variance = _rate_and_variance(x, n)
    tuned = {
        name: _tune_weights(raw, variance, n, candidate, scored, exponent, groups, lam)
        for name, candidate in candidates.items()
    }
    choice = min(tuned, key=lambda name: tuned[name].risk)
    if len(tuned) == 2 and choice == "regression":
        difference = (
            _linear_risk(raw, variance, candidates["regression"], tuned["regression"].weight)
            - _linear_risk(raw, variance, candidates["pooled"], tuned["pooled"].weight)
        )[scored]
        if len(difference) > 1:
            se = difference.std(ddof=1) / np.sqrt(len(difference))
            choice = "regression" if difference.mean() < -choice_margin * se else "pooled"
    target, weights = candidates[choice], tuned[choice]
    lower = upper = np.full(len(x), np.nan)
    if level is not None and intervals == "robust":
        from ppl.eb import robust

        second, fourth = robust.rate_moments(x, n, target)
        noise = np.clip(target, 1e-6, 1 - 1e-6) * (1 - np.clip(target, 1e-6, 1 - 1e-6)) / np.maximum(n, 1.0)
        lower, upper = robust.robust_intervals(
            raw,
            variance,
            target,
            weights.weight,
            level,
            noise_variance=noise,
            second=second,
            fourth=fourth,
            bounds=(0.0, 1.0),
        )
    elif level is not None:
        lower, upper = _beta_intervals(x, n, weights.concentration, target, level)
    return _result(
        raw,
        variance,
        target,
        weights.weight,
        weights.lam,
        scored,
        lower,
        upper,
        level,
        exponent=weights.exponent,
        group_lam=weights.group_lam,
        target_choice=choice,
        candidate_risks={name: w.risk for name, w in tuned.items()} if len(tuned) > 1 else None,
    )


def shrink_difference(
    successes1,
    trials1,
    successes2,
    trials2,
    covariates=None,
    *,
    key: jax.Array,
    folds: int = FOLDS,
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
            raw,
            variance,
            target,
            weight,
            level,
            noise_variance=noise,
            second=second,
            fourth=fourth,
            bounds=(-1.0, 1.0),
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
