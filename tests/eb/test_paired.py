"""Paired / clustered two-sample designs: exact URE under a shared cluster effect.

Simulated audit study: firms (units) x jobs (clusters), two applications per arm per
job; a job's callback propensity ``c_i + s e_ij`` (``e_ij = +-1``, drawn afresh in every
replication) is shared by both arms, and the arms differ by the firm's fixed gap
``theta_i``: ``p_ij1 = c_i + s e_ij + theta_i / 2``, ``p_ij2 = c_i + s e_ij - theta_i / 2``
(inside (0, 1), so ``E d_ij = theta_i`` exactly).

Statistical checks compare a Monte Carlo mean with its target within 4 standard errors
of that mean, the standard error being the sample sd of the per-replication quantity
over independent replications / sqrt(replications).
"""

import warnings

import numpy as np
import pytest

from ppl.eb import binomial as eb
from ppl.eb import paired
from tests.seeds import key, seed

TRIALS = 2  # applications per arm per job


def audit_design(rng, m=40, jobs=(2, 8)):
    clusters = rng.integers(jobs[0], jobs[1] + 1, m)
    unit = np.repeat(np.arange(m), clusters)
    base = rng.uniform(0.4, 0.5, m)
    gap = rng.uniform(-0.1, 0.1, m)
    return unit, base, gap


def simulate(rng, unit, base, gap, replications, spread=0.3):
    shape = (replications, len(unit))
    job = base[unit] + spread * rng.choice([-1.0, 1.0], shape)
    x1 = rng.binomial(TRIALS, job + gap[unit] / 2)
    x2 = rng.binomial(TRIALS, job - gap[unit] / 2)
    return x1.astype(float), x2.astype(float)


def unit_sums(values, unit, m):
    """(replications, rows) -> (replications, m) sums over each unit's clusters."""
    indicator = np.zeros((len(unit), m))
    indicator[np.arange(len(unit)), unit] = 1.0
    return values @ indicator


def paired_risk_gaps(rng, replications=20_000, lam=1.0):
    """Per replication: mean URE minus realised mean squared error at fixed lam, with the
    paired variance and with the independent-binomial variance."""
    unit, base, gap = audit_design(rng)
    m = len(gap)
    x1, x2 = simulate(rng, unit, base, gap, replications)
    clusters = np.bincount(unit, minlength=m).astype(float)
    d = (x1 - x2) / TRIALS
    raw = unit_sums(d, unit, m) / clusters
    variance = unit_sums((d - raw[:, unit]) ** 2, unit, m) / (clusters * (clusters - 1))
    big_n = clusters * TRIALS
    independent = 0.0
    for x in (x1, x2):
        rate = unit_sums(x, unit, m) / big_n
        independent = independent + rate * (1 - rate) / (big_n - 1)
    fold = np.arange(m) % 2
    target = np.empty_like(raw)
    for k in (0, 1):
        target[:, fold == k] = raw[:, fold != k].mean(1, keepdims=True)
    design_variance = (2.0 / TRIALS) / clusters
    weight = 1.0 / (1.0 + lam * design_variance)
    loss = ((target + weight * (raw - target) - gap) ** 2).mean(1)

    def ure(v):
        return ((1 - weight) ** 2 * (raw - target) ** 2 + (2 * weight - 1) * v).mean(1)

    return ure(variance) - loss, ure(independent) - loss, variance.mean() / independent.mean()


def test_paired_risk_is_unbiased_and_the_independent_one_is_not():
    paired_gap, independent_gap, ratio = paired_risk_gaps(np.random.default_rng(seed(11)))
    replications = len(paired_gap)
    se = paired_gap.std() / np.sqrt(replications)
    assert abs(paired_gap.mean()) < 4 * se, (paired_gap.mean(), se)
    # Power: the shared job effect makes the independent-binomial variance too large
    # (ratio about 0.6 here), so its URE overstates the risk by many standard errors.
    se_independent = independent_gap.std() / np.sqrt(replications)
    assert independent_gap.mean() > 10 * se_independent, (independent_gap.mean(), se_independent)
    assert ratio < 0.8


def test_shrink_paired_difference_matches_the_formulas():
    rng = np.random.default_rng(seed(12))
    unit, base, gap = audit_design(rng, m=60)
    x1, x2 = (v[0] for v in simulate(rng, unit, base, gap, 1))
    n = np.full(len(unit), TRIALS)
    summary = paired.paired_differences(unit, x1, n, x2, n)
    result = paired.shrink_paired_difference(unit, x1, n, x2, n, key=key(12), lam=2.0)
    weight = 1.0 / (1.0 + 2.0 * summary.design_variance)
    ure = (1 - weight) ** 2 * (summary.raw - result.target) ** 2 + (2 * weight - 1) * summary.variance
    np.testing.assert_allclose(result.risk, ure.mean())
    np.testing.assert_allclose(result.estimate, result.target + weight * (summary.raw - result.target))
    assert np.all(np.isfinite(result.lower)) and np.all(result.lower <= result.estimate)
    assert np.all(result.upper >= result.estimate)
    tuned = paired.shrink_paired_difference(unit, x1, n, x2, n, key=key(12))
    assert tuned.risk <= result.risk + 1e-12  # tuning lam cannot raise the mean URE
    # equal trials per cluster: the mean cluster difference is the difference of pooled rates
    pooled = np.bincount(unit, x1) / np.bincount(unit, n) - np.bincount(unit, x2) / np.bincount(unit, n)
    np.testing.assert_allclose(summary.raw, pooled)


def test_single_cluster_units_are_estimated_and_reported():
    unit = np.array([0, 0, 1, 1, 1, 2, 3, 3])
    x1, x2, n = np.array([1, 0, 2, 1, 1, 0, 1, 2]), np.array([0, 0, 1, 1, 0, 1, 1, 1]), np.full(8, 2)
    with pytest.warns(UserWarning, match="1 of 4 units have a single cluster"):
        result = paired.shrink_paired_difference(unit, x1, n, x2, n, key=key(13))
    assert result.num_unscored == 1 and np.isfinite(result.estimate).all()
    with pytest.raises(ValueError, match="at least one trial"):
        paired.paired_differences(unit, x1 * 0, n * 0, x2, n)
    with pytest.raises(ValueError, match="without clusters"):
        paired.shrink_paired_difference(unit, x1, n, x2, n, key=key(13), num_units=5)


def test_shrink_difference_asks_for_the_design():
    rng = np.random.default_rng(seed(14))
    n1, n2 = rng.integers(2, 8, 30), rng.integers(2, 8, 30)
    x1, x2 = rng.binomial(n1, 0.3), rng.binomial(n2, 0.4)
    with pytest.warns(UserWarning, match="design='independent'"):
        eb.shrink_difference(x1, n1, x2, n2, key=key(14))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = eb.shrink_difference(x1, n1, x2, n2, key=key(14), design="independent")
    assert np.isfinite(result.lower).all() and np.all(result.lower <= result.upper)
    with pytest.raises(ValueError, match="shrink_paired_difference"):
        eb.shrink_difference(x1, n1, x2, n2, key=key(14), design="paired")


def test_robust_intervals_for_differences_keep_average_coverage():
    """Average coverage over units of the 90% robust EBCIs (the guarantee of
    Armstrong-Kolesar-Plagborg-Moller; per-unit coverage is not guaranteed) for
    independent arms at n 2..10 and for the paired design, >= 0.9 - 4 SE, SE the sd of the
    per-replication average coverage / sqrt(replications)."""
    rng = np.random.default_rng(seed(15))
    m, replications = 300, 60
    n1, n2 = rng.integers(2, 11, m), rng.integers(2, 11, m)
    p1, p2 = rng.beta(2, 6, m), rng.beta(2, 6, m)
    independent = []
    for r in range(replications):
        x1, x2 = rng.binomial(n1, p1), rng.binomial(n2, p2)
        result = eb.shrink_difference(x1, n1, x2, n2, key=key(r), design="independent")
        independent.append(np.mean((p1 - p2 >= result.lower) & (p1 - p2 <= result.upper)))
    unit, base, gap = audit_design(rng, m=100, jobs=(4, 12))
    n = np.full(len(unit), TRIALS)
    clustered = []
    for r in range(replications):
        x1, x2 = (v[0] for v in simulate(rng, unit, base, gap, 1))
        result = paired.shrink_paired_difference(unit, x1, n, x2, n, key=key(r))
        clustered.append(np.mean((gap >= result.lower) & (gap <= result.upper)))
    for coverage in (np.asarray(independent), np.asarray(clustered)):
        assert coverage.mean() >= 0.9 - 4 * coverage.std() / np.sqrt(replications), coverage.mean()
