"""Robust empirical-Bayes confidence intervals for linear shrinkage.

Armstrong, Kolesar and Plagborg-Moller (2022, Econometrica 90(6), "Robust Empirical
Bayes Confidence Intervals"; AKP). For a linear shrinkage estimator
``thetahat_i = mu_i + w_i (Y_i - mu_i)`` of ``theta_i`` with noise sd ``sigma_i``,

    thetahat_i - theta_i = w_i sigma_i (e_i - b_i),   b_i = (1/w_i - 1)(theta_i - mu_i) / sigma_i,

with ``e_i`` standardised noise. The interval ``thetahat_i +- cva_alpha(m2_i, kappa)
w_i sigma_i`` uses the largest critical value needed when only the moments of the
normalised bias are known: ``E b_i^2 = m2_i = (1/w_i - 1)^2 mu2 / sigma_i^2`` and
``E b_i^4 = kappa m2_i^2``, where ``mu2 = E (theta - mu)^2`` and ``kappa = mu4 / mu2^2``
are estimated across units by the method of moments. ``cva`` solves
``rho(m2, kappa, chi) = alpha``, ``rho`` being the largest non-coverage
``E r(b, chi)``, ``r(b, chi) = P(|Z - b| > chi)``, over all distributions of ``b`` with
those two moments (a linear program in the distribution of ``t = b^2``; its solution
puts mass on at most two points, which is what :func:`max_noncoverage` searches).

The guarantee is AKP's *average* coverage: over units (with the same ``sigma_i``), at
least ``level`` of the intervals cover, whatever the distribution of ``theta - mu``
with those moments. It is not a per-unit guarantee: a unit whose ``theta_i`` is far
from its target has a large bias and may be covered far less often.

Binomial noise (this module's adaptation): ``sigma_i`` is not known, since
``p_i (1 - p_i) / n_i`` depends on the unknown rate. The moments ``mu2`` and ``mu4``
have *unbiased* per-unit estimates for binomial counts (falling factorials:
``E X(X-1)...(X-k+1) = n(n-1)...(n-k+1) p^k``; see :func:`rate_moments`), so no normal
approximation enters them; the scale ``sigma_i`` is a plug-in (``noise_variance``, e.g.
``mu_i (1 - mu_i) / n_i`` from the target) and the non-coverage ``r`` uses the normal
law of the standardised noise: these two are where approximation enters.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import special

__all__ = ["critical_value", "difference_moments", "max_noncoverage", "rate_moments", "robust_intervals"]


def _r(t, chi):
    """``r_0(t, chi) = P(|Z - sqrt(t)| > chi)``."""
    root = np.sqrt(np.maximum(t, 0.0))
    return special.ndtr(-root - chi) + special.ndtr(root - chi)


def _solve_tangent_point(chi):
    """``t0(chi)`` solved directly: the maximiser of the slope ``(r_0(t) - r_0(0)) / t``
    (grid scaled by ``chi^2``, then golden section)."""
    chi = np.asarray(chi, dtype=float)
    scale = np.maximum(chi**2, 1.0)[..., None]
    grid = np.linspace(1e-6, 3.0, 1500) * scale
    slope = (_r(grid, chi[..., None]) - _r(0.0, chi)[..., None]) / grid
    best = np.argmax(slope, axis=-1)
    step = grid[..., 1] - grid[..., 0]
    t = np.take_along_axis(grid, best[..., None], -1)[..., 0]
    low, high = np.maximum(t - step, 1e-9), t + step
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    for _ in range(40):
        c, d = high - ratio * (high - low), low + ratio * (high - low)
        keep_left = (_r(c, chi) - _r(0.0, chi)) / c > (_r(d, chi) - _r(0.0, chi)) / d
        high, low = np.where(keep_left, d, high), np.where(keep_left, low, c)
    return np.where(chi**2 < 3.0, 0.0, (low + high) / 2.0)


@functools.cache
def _tangent_table():
    """``t0`` on a grid of ``chi`` (linear up to 40, geometric up to 10^4), built once."""
    chi = np.concatenate([np.linspace(np.sqrt(3.0), 40.0, 3000), np.geomspace(40.0, 1e4, 1200)[1:]])
    return chi, _solve_tangent_point(chi)


def _tangent_point(chi):
    """``t0(chi)``: where the line from ``(0, r_0(0))`` touches ``r_0(., chi)`` (0 when
    ``chi^2 < 3``: then ``r_0`` is concave in ``t``). Below ``t0`` the largest non-coverage
    under a second-moment constraint is that line (the least concave majorant).
    Interpolated from a table for ``chi <= 10^4`` (an error in ``t0`` moves the majorant
    only at second order: it is a tangent point), solved directly above."""
    chi = np.asarray(chi, dtype=float)
    table_chi, table_t0 = _tangent_table()
    t0 = np.where(chi**2 < 3.0, 0.0, np.interp(chi, table_chi, table_t0))
    big = chi > table_chi[-1]
    if big.any():
        t0 = np.where(big, _solve_tangent_point(np.where(big, chi, 2.0)), t0)
    return t0


def max_noncoverage(m2, kappa, chi, points: int = 200):
    """``rho(m2, kappa, chi)``: the largest ``E r(b, chi)`` over distributions of the
    normalised bias with ``E b^2 = m2`` and ``E b^4 <= kappa m2^2`` (AKP's robust
    non-coverage; ``kappa = inf`` drops the fourth-moment constraint, ``kappa = 1``
    fixes ``|b| = sqrt(m2)``). Broadcasts over its arguments.

    Without the fourth moment the answer is the least concave majorant of
    ``r_0(t) = r(sqrt(t), chi)`` at ``t = m2`` (mass on ``0`` and ``t0``). When that
    distribution violates the fourth-moment bound the bound binds, and the maximum is over
    two-point distributions ``{t_a, t_b}`` with ``t_a <= m2 <= t_b`` and
    ``(m2 - t_a)(t_b - m2) = (kappa - 1) m2^2``, searched on a grid of ``points`` values
    of ``t_b`` (checked against a linear program in the tests).
    """
    m2, kappa, chi = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (m2, kappa, chi)))
    t0 = _tangent_point(chi)
    r_m2, r_zero = _r(m2, chi), _r(0.0, chi)
    below = m2 < t0
    rho0 = np.where(below, r_zero + m2 / np.where(t0 > 0, t0, 1.0) * (_r(t0, chi) - r_zero), r_m2)
    with np.errstate(invalid="ignore"):  # inf * 0 when m2 = 0 (then nothing binds)
        binds = below & (kappa * m2 < t0) & (kappa > 1.0)
    result = np.where(kappa <= 1.0, r_m2, rho0)
    if binds.any():
        m, k, c, top = m2[binds], kappa[binds], chi[binds], t0[binds]
        low = k * m
        high = np.maximum(3.0 * top, 2.0 * low) + 10.0
        fraction = np.linspace(0.0, 1.0, points) ** 2
        t_b = low[:, None] + (high - low)[:, None] * fraction
        spread = (k - 1.0)[:, None] * m[:, None] ** 2
        t_a = np.maximum(m[:, None] - spread / np.maximum(t_b - m[:, None], 1e-300), 0.0)
        p_a = (t_b - m[:, None]) / np.maximum(t_b - t_a, 1e-300)
        value = p_a * _r(t_a, c[:, None]) + (1.0 - p_a) * _r(t_b, c[:, None])
        result[binds] = np.minimum(value.max(axis=1), rho0[binds])
    return result


_HUGE_M2 = 1e6


def critical_value(m2, kappa=np.inf, alpha: float = 0.1, iterations: int = 50):
    """``cva_alpha(m2, kappa)``: the ``chi`` solving ``max_noncoverage(m2, kappa, chi) =
    alpha`` (bisection, vectorised over ``m2``). ``m2 = 0`` gives ``z_{1 - alpha/2}``;
    ``kappa = 1`` gives ``sqrt(ncx2.ppf(1 - alpha, 1, m2))``, the fixed-bias value."""
    m2 = np.atleast_1d(np.asarray(m2, dtype=float))
    kappa = np.broadcast_to(np.asarray(kappa, dtype=float), m2.shape)
    huge = m2 > _HUGE_M2
    if huge.any():
        # cva / sqrt(m2) has converged by m2 = 10^6 (it rises by < 0.15% from 10^6 to
        # 10^10 for kappa in 1.5..inf): extrapolate, 0.2% wider, instead of bisecting
        # at chi > 10^3 (such m2 mean weights near 0: shrinkage all the way to the target).
        at_cap = critical_value(np.full(m2.shape, _HUGE_M2), kappa, alpha, iterations)
        rest = critical_value(np.where(huge, 0.0, m2), kappa, alpha, iterations)
        return np.where(huge, at_cap * np.sqrt(m2 / _HUGE_M2) * 1.002, rest)
    z = special.ndtri(1.0 - alpha / 2.0)
    low = np.full(m2.shape, z - 1e-6)  # rho >= r_0(0, chi), so cva >= z
    high = np.sqrt((1.0 + m2) / alpha) + z  # Chebyshev
    for _ in range(iterations):
        mid = (low + high) / 2.0
        too_wide = max_noncoverage(m2, kappa, mid) < alpha
        high, low = np.where(too_wide, mid, high), np.where(too_wide, low, mid)
    return (low + high) / 2.0


def _falling(x, k):
    out = np.ones_like(x, dtype=float)
    for j in range(k):
        out = out * (x - j)
    return out


def rate_moments(successes, trials, target):
    """Unbiased per-unit estimates of ``(p_i - mu_i)^2`` and ``(p_i - mu_i)^4`` from
    ``X_i ~ Binomial(n_i, p_i)`` and a target ``mu_i`` that does not depend on ``X_i``.

    ``(p - mu)^k = sum_j C(k, j) p^j (-mu)^(k-j)`` with ``p^j`` replaced by its unbiased
    estimate ``X(X-1)...(X-j+1) / (n(n-1)...(n-j+1))``. Exact, no normal approximation.

    Returns:
        ``(second, fourth)``, each ``(m,)``; NaN where ``n_i < 2`` (second) or
        ``n_i < 4`` (fourth), where no unbiased estimate exists.
    """
    x, n, mu = (np.asarray(v, dtype=float) for v in (successes, trials, target))
    from math import comb

    def power(j):
        return _falling(x, j) / np.where(_falling(n, j) > 0, _falling(n, j), np.nan)

    second = sum(comb(2, j) * power(j) * (-mu) ** (2 - j) for j in range(3))
    fourth = sum(comb(4, j) * power(j) * (-mu) ** (4 - j) for j in range(5))
    return np.where(n >= 2, second, np.nan), np.where(n >= 4, fourth, np.nan)


def robust_intervals(
    raw,
    variance,
    target,
    weight,
    level: float = 0.9,
    *,
    noise_variance=None,
    second=None,
    fourth=None,
    kappa: float | None = None,
    grid_size: int = 40,
    bounds: tuple[float, float] | None = None,
):
    """AKP robust EBCIs ``thetahat_i +- cva(m2_i, kappa) w_i sigma_i`` for the linear
    shrinkage ``thetahat_i = target_i + weight_i (raw_i - target_i)``.

    Args:
        raw: unshrunken estimates ``Y_i``, ``(m,)``.
        variance: unbiased per-unit estimates of ``Var(Y_i)`` (the URE's ``Vhat_i``), used
            for the default moment estimates.
        target: targets ``mu_i`` (cross-fitted: not depending on unit ``i``'s data).
        weight: weights ``w_i`` on the raw value.
        level: coverage level ``1 - alpha``.
        noise_variance: ``sigma_i^2`` for the interval scale and the normalised bias;
            default ``variance`` floored at the median of its positive values (pass a
            smooth plug-in such as ``mu_i (1 - mu_i) / n_i`` for binomial rates: the
            unbiased ``Vhat_i`` is 0 whenever ``X_i`` is 0 or ``n_i``).
        second: per-unit unbiased estimates of ``(theta_i - mu_i)^2``; default
            ``(Y_i - mu_i)^2 - variance_i``.
        fourth: per-unit estimates of ``(theta_i - mu_i)^4`` (NaN where unavailable);
            default the normal-noise form ``e^4 - 6 V e^2 + 3 V^2`` with ``e = Y - mu``
            (an approximation for non-normal noise; :func:`rate_moments` gives exact ones
            for binomial rates).
        kappa: fix the kurtosis of ``theta - mu`` (``np.inf``: second moment only).
        grid_size: ``cva`` is computed on a log grid of ``m2`` (at least this many points,
            and 8 per decade) and interpolated linearly in ``log m2``.
        bounds: the parameter space, e.g. ``(0, 1)`` for rates or ``(-1, 1)`` for
            differences of rates; the intervals are intersected with it (which cannot
            lower their coverage).

    Returns:
        ``(lower, upper)``, each ``(m,)``; NaN only where ``raw`` is NaN or the scale is
        zero or NaN (with a warning naming how many).

    The moments are pooled over units (AKP's assumption that ``theta - mu`` has moments
    that do not vary with ``sigma_i``), with their posterior-mean-truncation floors:
    ``mu2 >= 2 mean(sigma^4) / (m mean(sigma^2))`` and
    ``kappa >= 1 + 32 mean(sigma^8) / (m mean(sigma^4) mu2^2)``.
    """
    try:
        raw, variance, target, weight = (
            np.asarray(v, dtype=float) for v in np.broadcast_arrays(raw, variance, target, weight)
        )
    except ValueError:
        shapes = {
            name: np.shape(v)
            for name, v in zip(
                ("raw", "variance", "target", "weight"), (raw, variance, target, weight), strict=True
            )
        }
        raise ValueError(
            f"robust_intervals: raw, variance, target and weight must broadcast, got {shapes}"
        ) from None
    alpha = 1.0 - float(level)
    if noise_variance is None:
        positive = variance[np.isfinite(variance) & (variance > 0)]
        floor = np.median(positive) if positive.size else 0.0
        noise_variance = np.maximum(variance, floor)
    sigma2 = np.broadcast_to(np.asarray(noise_variance, dtype=float), raw.shape)
    error = raw - target
    second = error**2 - variance if second is None else np.asarray(second, dtype=float)
    if fourth is None:
        fourth = error**4 - 6.0 * variance * error**2 + 3.0 * variance**2
    fourth = np.asarray(fourth, dtype=float)
    usable = np.isfinite(sigma2) & (sigma2 > 0)
    count = max(int(usable.sum()), 1)
    s2, s4, s8 = (np.mean(sigma2[usable] ** k) for k in (1, 2, 4))
    if not np.isfinite(np.where(usable, second, np.nan)).any():
        raise ValueError(
            "robust_intervals: no unit has both a finite second-moment estimate (second) and a "
            "positive noise variance; the moments of theta - mu cannot be estimated"
        )
    mu2 = np.nanmean(np.where(usable, second, np.nan))
    mu2 = max(mu2, 2.0 * s4 / (count * s2))
    if kappa is None:
        finite = usable & np.isfinite(fourth)
        mu4 = np.mean(fourth[finite]) if finite.any() else np.inf
        kappa = max(mu4 / mu2**2, 1.0 + 32.0 * s8 / (count * s4 * mu2**2))
    # w = 0 (all the way to the target) is the limit of small w: clip, so its interval is the limit.
    weight = np.clip(weight, 1e-12, None)
    m2 = (1.0 / weight - 1.0) ** 2 * mu2 / np.where(usable, sigma2, np.nan)
    finite_m2 = m2[np.isfinite(m2)]
    cva = np.full(raw.shape, np.nan)
    if finite_m2.size:
        # cva is smooth in log(m2): compute it on a grid, interpolate.
        low, high = max(finite_m2.min(), 1e-8), max(finite_m2.max(), 1e-8)
        # linear interpolation in log(m2) overstates cva slightly (conservative); at least
        # 8 points per decade keep that below 0.5%.
        size = max(grid_size, int(np.ceil(8 * np.log10(high / low))) + 2)
        grid = np.geomspace(low, high * (1 + 1e-9), size) if high > low else np.array([low])
        values = critical_value(grid, kappa, alpha)
        if grid.size > 1:
            cva = np.interp(np.log(np.maximum(m2, low)), np.log(grid), values)
        else:
            cva = np.full(raw.shape, values[0])
        cva = np.where(np.isfinite(m2), cva, np.nan)
    estimate = target + weight * error
    half = cva * weight * np.sqrt(sigma2)
    lost = np.isfinite(raw) & ~np.isfinite(half)
    if lost.any():
        import warnings

        warnings.warn(
            f"{int(lost.sum())} of {len(raw)} units have a zero or undefined noise variance "
            "(noise_variance): their intervals are NaN",
            stacklevel=2,
        )
    lower, upper = estimate - half, estimate + half
    if bounds is not None:
        lower, upper = np.maximum(lower, bounds[0]), np.minimum(upper, bounds[1])
    return lower, upper


def difference_moments(successes1, trials1, successes2, trials2, target):
    """Unbiased per-unit estimates of ``(p_i1 - p_i2 - mu_i)^2`` and ``^4`` from two
    independent binomial samples (``mu_i`` not depending on the unit's counts).

    Expands ``(p1 - p2 - mu)^k`` by the multinomial theorem and replaces ``p_g^a`` by
    ``X_g(X_g-1)...(X_g-a+1) / (n_g(n_g-1)...(n_g-a+1))`` (independent samples, so the
    products stay unbiased). Exact.

    Returns:
        ``(second, fourth)``, each ``(m,)``; NaN where a sample has fewer than 2 (second)
        or 4 (fourth) trials.
    """
    from math import factorial

    x1, n1, x2, n2, mu = (
        np.asarray(v, dtype=float) for v in (successes1, trials1, successes2, trials2, target)
    )

    def power(x, n, a):
        return _falling(x, a) / np.where(_falling(n, a) > 0, _falling(n, a), np.nan)

    def moment(k):
        total = 0.0
        for a in range(k + 1):
            for b in range(k + 1 - a):
                c = k - a - b
                coefficient = factorial(k) // (factorial(a) * factorial(b) * factorial(c))
                total = total + coefficient * power(x1, n1, a) * (-1.0) ** b * power(x2, n2, b) * (-mu) ** c
        return total

    smallest = np.minimum(n1, n2)
    return np.where(smallest >= 2, moment(2), np.nan), np.where(smallest >= 4, moment(4), np.nan)
