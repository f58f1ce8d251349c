"""Robust empirical-Bayes confidence intervals (Armstrong, Kolesar and Plagborg-Moller).

The critical value is checked against a linear program, the binomial moment estimates
against exact expectations, and the intervals by simulation at n_i in 2..10 and mean
rates 0.02 and 0.25, with one fixed configuration of true rates per setting and R
replications of the counts. Monte Carlo error: a per-unit coverage estimate has
SE = sqrt(c (1 - c) / R) (sqrt(0.9 * 0.1 / R) at the nominal 0.9); the average coverage
over units has SE = sd over replications of the per-replication average / sqrt(R).
"""

import numpy as np
import pytest
from scipy import optimize, special, stats

from ppl.eb import robust
from tests.seeds import seed

LEVEL = 0.9


def linear_program_noncoverage(m2, kappa, chi):
    """max E r_0(t, chi) over distributions of t = b^2 >= 0 on a fine grid with
    E t = m2 and E t^2 <= kappa m2^2."""
    top = 3.0 * chi**2 + 5.0 * (kappa if np.isfinite(kappa) else 1.0) * m2 + 10.0
    xs = np.unique(np.concatenate([[m2], np.linspace(0.0, top, 4000)]))
    r0 = special.ndtr(-np.sqrt(xs) - chi) + special.ndtr(np.sqrt(xs) - chi)
    constrained = np.isfinite(kappa)
    result = optimize.linprog(
        -r0,
        A_ub=xs[None] ** 2 if constrained else None,
        b_ub=[kappa * m2**2] if constrained else None,
        A_eq=np.vstack([np.ones_like(xs), xs]),
        b_eq=[1.0, m2],
        bounds=(0, None),
        method="highs",
    )
    return -result.fun


@pytest.mark.parametrize(
    "m2, kappa, chi",
    [
        (0.5, 3.0, 2.0),
        (0.1, 3.0, 2.5),
        (0.1, np.inf, 2.5),
        (1.0, 2.0, 2.2),
        (4.0, 3.0, 3.5),
        (0.05, 50.0, 2.0),
    ],
)
def test_max_noncoverage_solves_the_linear_program(m2, kappa, chi):
    assert robust.max_noncoverage(m2, kappa, chi) == pytest.approx(
        linear_program_noncoverage(m2, kappa, chi), abs=1e-6
    )


def test_critical_value_limits():
    alpha = 1 - LEVEL
    assert robust.critical_value(0.0, np.inf, alpha)[0] == pytest.approx(
        stats.norm.ppf(1 - alpha / 2), abs=1e-6
    )
    m2 = np.array([0.1, 1.0, 4.0])
    fixed_bias = np.sqrt(stats.ncx2.ppf(1 - alpha, 1, m2))
    np.testing.assert_allclose(robust.critical_value(m2, 1.0, alpha), fixed_bias, atol=1e-6)
    # the fourth-moment constraint tightens the second-moment-only value
    assert np.all(robust.critical_value(m2, 3.0, alpha) <= robust.critical_value(m2, np.inf, alpha) + 1e-9)
    assert np.all(robust.critical_value(m2, 3.0, alpha) >= fixed_bias - 1e-9)


@pytest.mark.parametrize("n, p, mu", [(4, 0.3, 0.2), (7, 0.05, 0.1), (10, 0.9, 0.5)])
def test_binomial_moments_are_exactly_unbiased(n, p, mu):
    x = np.arange(n + 1)
    pmf = stats.binom.pmf(x, n, p)
    second, fourth = robust.rate_moments(x, np.full(n + 1, n), np.full(n + 1, mu))
    assert pmf @ second == pytest.approx((p - mu) ** 2, abs=1e-12)
    assert pmf @ fourth == pytest.approx((p - mu) ** 4, abs=1e-12)
    n1, n2, p1, p2 = n, 5, p, 0.4
    x1, x2 = np.meshgrid(np.arange(n1 + 1), np.arange(n2 + 1), indexing="ij")
    joint = stats.binom.pmf(x1, n1, p1) * stats.binom.pmf(x2, n2, p2)
    second, fourth = robust.difference_moments(x1, np.full(x1.shape, n1), x2, np.full(x2.shape, n2), mu)
    assert np.sum(joint * second) == pytest.approx((p1 - p2 - mu) ** 2, abs=1e-12)
    assert np.sum(joint * fourth) == pytest.approx((p1 - p2 - mu) ** 4, abs=1e-12)


def simulated_coverage(prior, critical="robust", m=300, replications=200, homogeneous=False):
    """Per-unit coverage of 90% intervals for one fixed configuration of rates.

    Shrinkage toward the 2-fold cross-fitted pooled rate with w_i = n_i / (n_i + lam),
    lam minimising the mean URE on a log grid (vectorised over replications).
    ``critical="normal"`` is the broken variant: z_{1-alpha/2} w_i sigma_i, no bias
    correction. Returns (per-unit coverage (m,), per-replication average coverage (R,)).
    """
    rng = np.random.default_rng(seed(21))
    n = rng.integers(2, 11, m).astype(float)
    p = np.full(m, prior[0] / sum(prior)) if homogeneous else rng.beta(*prior, m)
    x = rng.binomial(n.astype(int), p, (replications, m)).astype(float)
    fold = np.arange(m) % 2
    target = np.empty_like(x)
    for k in (0, 1):
        other = fold != k
        target[:, ~other] = (x[:, other].sum(1) / n[other].sum())[:, None]
    raw = x / n
    variance = raw * (1 - raw) / (n - 1)
    lams = np.geomspace(1e-2, 1e5, 120)
    weights = n[:, None] / (n[:, None] + lams)  # (m, G)
    ure = (
        (1 - weights) ** 2 * ((raw - target) ** 2)[..., None] + (2 * weights - 1) * variance[..., None]
    ).mean(1)
    weight = weights.T[np.argmin(ure, axis=1)]  # (R, m)
    noise = target * (1 - target) / n
    covered = np.zeros((replications, m), bool)
    for r in range(replications):
        if critical == "robust":
            second, fourth = robust.rate_moments(x[r], n, target[r])
            lower, upper = robust.robust_intervals(
                raw[r],
                variance[r],
                target[r],
                weight[r],
                LEVEL,
                noise_variance=noise[r],
                second=second,
                fourth=fourth,
            )
        else:
            estimate = target[r] + weight[r] * (raw[r] - target[r])
            half = stats.norm.ppf(0.5 + LEVEL / 2) * weight[r] * np.sqrt(noise[r])
            lower, upper = estimate - half, estimate + half
        covered[r] = (p >= lower) & (p <= upper)
    return covered.mean(0), covered.mean(1)


PRIORS = {"rate-0.02": (0.4, 19.6), "rate-0.25": (2.0, 6.0)}


@pytest.mark.parametrize("prior", PRIORS.values(), ids=PRIORS.keys())
def test_robust_intervals_keep_average_coverage_and_the_normal_ones_do_not(prior):
    """AKP's guarantee is average coverage over units: it holds in both settings (rates
    drawn once from a beta prior, then fixed), while the same intervals with z instead of
    the robust critical value under-cover by far more than the MC error."""
    per_unit, per_replication = simulated_coverage(prior)
    se = per_replication.std() / np.sqrt(len(per_replication))
    assert per_replication.mean() >= LEVEL - 4 * se, (per_replication.mean(), se)
    _, normal = simulated_coverage(prior, critical="normal")
    assert normal.mean() < LEVEL - 4 * normal.std() / np.sqrt(len(normal)) - 0.05, normal.mean()
    # Per-unit coverage is not guaranteed: units far from the target are covered rarely
    # (the minimum here is below 0.1); the median unit is covered at about the nominal rate.
    assert np.median(per_unit) >= LEVEL - 4 * np.sqrt(LEVEL * (1 - LEVEL) / len(per_replication))


@pytest.mark.parametrize("prior", PRIORS.values(), ids=PRIORS.keys())
def test_worst_unit_coverage_when_every_unit_sits_at_the_target(prior):
    """All units at the same rate (no bias to hide): every unit's own coverage, including
    the worst of the 300, is >= nominal minus 4.5 MC standard errors
    sqrt(0.9 * 0.1 / R) (4.5 rather than 4: the minimum of 300 estimates). In the
    beta-distributed settings no EB interval can pass this (units far from the target are
    covered rarely; the benchmark measures it), so that is where the check is made."""
    per_unit, per_replication = simulated_coverage(prior, homogeneous=True)
    replications = len(per_replication)
    threshold = LEVEL - 4.5 * np.sqrt(LEVEL * (1 - LEVEL) / replications)
    assert per_unit.min() >= threshold, np.sort(per_unit)[:5]
    # the broken variant (z instead of the robust critical value) fails the same check
    normal, _ = simulated_coverage(prior, critical="normal", homogeneous=True)
    assert normal.min() < threshold, normal.min()


@pytest.mark.parametrize("rate", [0.02, 0.25])
def test_shrink_with_robust_intervals_keeps_average_coverage(rate):
    """``shrink(..., intervals="robust")``: rates ~ Beta around ``rate`` (concentration 20),
    n 2..10, 20 data sets of 500 units; the mean per-data-set coverage of the 90% intervals
    is >= 0.9 - 4 SE (SE from the spread over data sets)."""
    import jax

    from ppl.eb.binomial import shrink

    rng = np.random.default_rng(seed(31))
    n = rng.integers(2, 11, 500)
    coverage = []
    for replication in range(20):
        p = rng.beta(20 * rate, 20 * (1 - rate), n.shape)
        result = shrink(rng.binomial(n, p), n, key=jax.random.key(replication), intervals="robust")
        coverage.append(np.mean((result.lower <= p) & (p <= result.upper)))
    coverage = np.asarray(coverage)
    assert coverage.mean() >= 0.9 - 4 * coverage.std(ddof=1) / np.sqrt(len(coverage))
    # and they are exactly robust_intervals with the documented plug-ins (the coverage
    # check alone would also pass for other wide intervals)
    x = rng.binomial(n, p)
    result = shrink(x, n, key=jax.random.key(0), intervals="robust")
    second, fourth = robust.rate_moments(x, n, result.target)
    noise = result.target * (1 - result.target) / n
    lower, upper = robust.robust_intervals(
        result.raw,
        result.raw * (1 - result.raw) / (n - 1),
        result.target,
        result.weight,
        0.9,
        noise_variance=noise,
        second=second,
        fourth=fourth,
        bounds=(0.0, 1.0),
    )
    np.testing.assert_allclose(result.lower, lower, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.upper, upper, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="intervals must be"):
        shrink(rng.binomial(n, 0.1), n, key=jax.random.key(0), intervals="normal")
