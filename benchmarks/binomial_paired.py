"""Paired audit study and robust EB intervals for binomial rates (issue 18, items 3-4).

1. Paired audit study (simulated; the public firm-discrimination data carry no licence):
   ``m`` firms, ``J_i`` jobs per firm, ``TRIALS`` applications per arm per job. A job's
   callback propensity ``c_i + s e_ij`` (``e_ij = +-1``) is shared by both arms, which
   differ by the firm's gap ``theta_i``: ``p_ij1 = c_i + s e_ij + theta_i / 2``,
   ``p_ij2 = c_i + s e_ij - theta_i / 2``. Firms (``c_i``, ``theta_i``, ``J_i``) are fixed;
   job effects and callbacks are drawn afresh in every replication. Compared:
   ``eb.shrink_difference(design="independent")`` on the pooled counts against
   ``paired.shrink_paired_difference`` on the job-level counts: each one's risk estimate
   (mean URE at its tuned lam) against its realised compound squared error, and the
   coverage of the robust EBCIs (average over firms, and the per-firm distribution), with
   the normal interval without bias correction (``z w sigma``) as the broken reference.
2. One-sample coverage at ``n_i`` in 2..10, mean rates 0.02 and 0.25: one fixed
   configuration of rates (drawn once from Beta(0.4, 19.6) or Beta(2, 6), or all at the
   mean rate: "homogeneous"), ``R`` replications of the counts. Shrinkage toward the
   2-fold cross-fitted pooled rate with URE-tuned ``w_i = n_i / (n_i + lam)``; intervals:
   robust (estimated kappa), robust with the second moment only (kappa = inf), the
   beta-quantile intervals of ``eb.shrink`` (``Beta(X + lam mu, n - X + lam (1 - mu))``),
   and ``z w sigma`` (no bias correction). Per-unit coverage: fraction of replications
   covering each unit; its MC standard error at 0.9 is sqrt(0.09 / R).

    python benchmarks/binomial_paired.py [--quick]
"""

import argparse
import json
import os
import time
import warnings

import jax
import numpy as np
from scipy import stats

from ppl.eb import binomial as eb
from ppl.eb import paired, robust

LEVEL = 0.9
TRIALS = 4
Z = stats.norm.ppf(0.5 + LEVEL / 2)


def summary(values):
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "ci95": float(1.96 * values.std(ddof=1) / np.sqrt(len(values)))}


def per_unit(coverage, replications):
    return {
        "average": float(coverage.mean()),
        "min": float(coverage.min()),
        "q01": float(np.quantile(coverage, 0.01)),
        "q05": float(np.quantile(coverage, 0.05)),
        "q10": float(np.quantile(coverage, 0.10)),
        "median": float(np.median(coverage)),
        "share_below_nominal_minus_3se": float(np.mean(coverage < LEVEL - 3 * np.sqrt(0.09 / replications))),
    }


# ------------------------------------------------------------------ 1. audit study


def audit_study(replications, m=200, jobs=(10, 60), spread=0.35, seed=0):
    rng = np.random.default_rng(seed)
    clusters = rng.integers(jobs[0], jobs[1] + 1, m)
    unit = np.repeat(np.arange(m), clusters)
    base = rng.uniform(0.43, 0.5, m)
    gap = np.clip(rng.normal(0.02, 0.06, m), -0.15, 0.15)
    trials = np.full(len(unit), TRIALS)
    rows = {name: {"risk": [], "loss": [], "lam": []} for name in ("independent", "paired")}
    raw_loss, variance_ratio = [], []
    covered = {name: np.zeros(m) for name in ("independent_robust", "paired_robust", "paired_normal")}
    width = {name: [] for name in covered}
    for r in range(replications):
        job = base[unit] + spread * rng.choice([-1.0, 1.0], len(unit))
        x1, x2 = rng.binomial(TRIALS, job + gap[unit] / 2), rng.binomial(TRIALS, job - gap[unit] / 2)
        key = jax.random.key(r)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pair = paired.shrink_paired_difference(unit, x1, trials, x2, trials, key=key, level=LEVEL)
            indep = eb.shrink_difference(
                np.bincount(unit, x1, m),
                np.bincount(unit, trials, m),
                np.bincount(unit, x2, m),
                np.bincount(unit, trials, m),
                key=key,
                level=LEVEL,
                design="independent",
            )
        summ = paired.paired_differences(unit, x1, trials, x2, trials)
        valid = summ.independent_variance > 0
        variance_ratio.append(np.median(summ.variance[valid] / summ.independent_variance[valid]))
        raw_loss.append(np.mean((pair.raw - gap) ** 2))
        for name, result in (("independent", indep), ("paired", pair)):
            rows[name]["risk"].append(result.risk)
            rows[name]["loss"].append(np.mean((result.estimate - gap) ** 2))
            rows[name]["lam"].append(result.lam)
        scale = summ.variance.sum() / summ.design_variance.sum()
        half = Z * pair.weight * np.sqrt(scale * summ.design_variance)
        intervals = {
            "independent_robust": (indep.lower, indep.upper),
            "paired_robust": (pair.lower, pair.upper),
            "paired_normal": (pair.estimate - half, pair.estimate + half),
        }
        for name, (lower, upper) in intervals.items():
            covered[name] += (gap >= lower) & (gap <= upper)
            width[name].append(np.mean(upper - lower))
    out = {
        "design": {
            "firms": m,
            "jobs_per_firm": list(jobs),
            "applications_per_arm_per_job": TRIALS,
            "job_effect": f"+-{spread}",
            "gap": "N(0.02, 0.06) clipped to +-0.15",
            "replications": replications,
        },
        "median_paired_over_independent_variance": summary(variance_ratio),
        "raw_loss": summary(raw_loss),
    }
    for name, row in rows.items():
        risk, loss = np.asarray(row["risk"]), np.asarray(row["loss"])
        out[name] = {
            "risk_estimate": summary(risk),
            "realised_loss": summary(loss),
            "estimate_minus_loss": summary(risk - loss),
            "loss_over_raw_loss": summary(loss / np.asarray(raw_loss)),
            "lam": summary(row["lam"]),
        }
    out["coverage"] = {
        name: {
            **per_unit(covered[name] / replications, replications),
            "mean_length": float(np.mean(width[name])),
        }
        for name in covered
    }
    return out


# ------------------------------------------------------ 2. one-sample coverage grid


def one_sample(prior, replications, m=1000, homogeneous=False, seed=1):
    rng = np.random.default_rng(seed)
    n = rng.integers(2, 11, m).astype(float)
    p = np.full(m, prior[0] / sum(prior)) if homogeneous else rng.beta(*prior, m)
    x = rng.binomial(n.astype(int), p, (replications, m)).astype(float)
    fold = np.arange(m) % 2
    target = np.empty_like(x)
    for k in (0, 1):
        other = fold != k
        target[:, ~other] = (x[:, other].sum(1) / n[other].sum())[:, None]
    target = np.clip(target, 1e-6, 1 - 1e-6)
    raw = x / n
    variance = raw * (1 - raw) / (n - 1)
    lams = np.geomspace(1e-2, 1e5, 200)
    chosen = np.empty(replications)
    for r in range(replications):
        weights = n[:, None] / (n[:, None] + lams)
        ure = (
            (1 - weights) ** 2 * ((raw[r] - target[r]) ** 2)[:, None]
            + (2 * weights - 1) * variance[r][:, None]
        ).mean(0)
        chosen[r] = lams[np.argmin(ure)]
    covered = {name: np.zeros(m) for name in ("robust", "robust_kappa_inf", "beta", "normal")}
    length = {name: [] for name in covered}
    seconds = 0.0
    for r in range(replications):
        lam, mu = chosen[r], target[r]
        weight = n / (n + lam)
        estimate = mu + weight * (raw[r] - mu)
        noise = mu * (1 - mu) / n
        second, fourth = robust.rate_moments(x[r], n, mu)
        start = time.perf_counter()
        inputs = (raw[r], variance[r], mu, weight, LEVEL)
        common = dict(noise_variance=noise, second=second, bounds=(0.0, 1.0))
        rob = robust.robust_intervals(*inputs, fourth=fourth, **common)
        seconds += time.perf_counter() - start
        inf = robust.robust_intervals(*inputs, kappa=np.inf, **common)
        a, b = x[r] + lam * mu, n - x[r] + lam * (1 - mu)
        beta = (stats.beta.ppf((1 - LEVEL) / 2, a, b), stats.beta.ppf((1 + LEVEL) / 2, a, b))
        half = Z * weight * np.sqrt(noise)  # intervals on [0, 1], as the robust ones
        for name, (lower, upper) in (
            ("robust", rob),
            ("robust_kappa_inf", inf),
            ("beta", beta),
            ("normal", (np.maximum(estimate - half, 0.0), np.minimum(estimate + half, 1.0))),
        ):
            covered[name] += (p >= lower) & (p <= upper)
            length[name].append(np.mean(upper - lower))
    return {
        name: {
            **per_unit(covered[name] / replications, replications),
            "mean_length": float(np.mean(length[name])),
        }
        for name in covered
    } | {"robust_seconds_per_call": seconds / replications, "units": m, "replications": replications}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    replications = 40 if args.quick else 400
    start = time.time()
    results = {"level": LEVEL, "audit_study": audit_study(replications // 2)}
    print(json.dumps(results["audit_study"], indent=1))
    results["one_sample"] = {}
    for label, prior in (("rate 0.02", (0.4, 19.6)), ("rate 0.25", (2.0, 6.0))):
        for homogeneous in (False, True):
            name = f"{label}, {'homogeneous' if homogeneous else 'beta-distributed'}"
            results["one_sample"][name] = one_sample(prior, replications, homogeneous=homogeneous)
            print(name, json.dumps(results["one_sample"][name]))
    results["seconds"] = time.time() - start
    path = os.path.join(
        os.path.dirname(__file__), "results", f"binomial_paired{'_quick' if args.quick else ''}.json"
    )
    with open(path, "w") as handle:
        json.dump(results, handle, indent=2)
    print("wrote", path, f"{results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
