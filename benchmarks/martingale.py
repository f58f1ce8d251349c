"""Martingale posteriors (copula predictives of Fong, Holmes & Walker, JRSSB 2023) against
the authors' reported numbers and baselines, and the cost of predictive resampling.

Sections (select with ``--sections``; all by default), float64 throughout:

* ``regression``: scikit-learn ``diabetes``, conditional copula regression (one
  bandwidth per feature, 10 orderings, key 200) vs sklearn GPR (``ConstantKernel*RBF +
  WhiteKernel``, 10 restarts, ``normalize_y``) and ``BayesianRidge``; mean test
  log-likelihood per point on standardised y.
* ``classification``: ``breast_cancer`` (malignant = 1), copula classifier (one
  bandwidth per feature, key 200) vs GPC (same kernel, 10 restarts) and logistic
  regression ``C = 0.1``.
* ``density``: ``breast_cancer`` features after ``drop_corr(0.98)`` (d = 26), copula
  density (one bandwidth, key 50) vs a Gaussian (train mean, ``np.cov``) and a KDE
  (10-fold CV bandwidth on ``logspace(-1, 1, 40)``); mean joint log-density per point.
* ``resampling``: 1-D predictive resampling of the authors' GMM toy (n = 50, seed 102)
  on their grid ``arange(-4, 4, 0.05)`` (160 points), T = 500 steps (time is linear in
  T; the authors use 5000, as the ``numpy`` section does): time against the number of
  paths (250, 500, 1000) on 1 and 4 host devices (a subprocess with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=4``), compile time separate.
* ``numpy``: the same resampling as a plain NumPy/SciPy loop (per path and step one
  uniform, the copula update vectorised over the grid) against ppl: time per path and
  agreement in distribution; ppl's 1000 paths also against the authors' saved draws.

Protocol (the notes' section 7 and ``edfong/MP`` ``run_expts``): 10 splits
``train_test_split(arange(N), train_size=int(N/2), random_state=100+k)``, data
standardised with the train mean and ``np.std`` (ddof 0); reported ``mean +- se`` with
``se = np.std(ddof=0)/sqrt(10)`` over splits; "within" means
``|diff| <= 2 sqrt(se_ppl^2 + se_ref^2)``.

    python benchmarks/martingale.py [--quick] [--sections regression,classification,density,resampling,numpy]

The breast density fit takes 2-5 minutes per split on a shared 2-core machine (16.6 GB
peak memory), so each split is written to the results file as it finishes, and sections
may run in separate processes (the file is merged under a lock).
"""

import argparse
import fcntl
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from importlib.metadata import version

os.environ.setdefault("PPL_COMPILATION_CACHE", "0")  # before ppl is imported

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from scipy import special, stats  # noqa: E402
from timing import timed, write_results  # noqa: E402  (benchmarks/timing.py, beside this script)

from ppl.processes import martingale  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SECTIONS = ("regression", "classification", "density", "resampling", "numpy")

# Per-split test log-likelihoods saved by the authors (edfong/MP 276ed8d,
# run_expts/plot_files/*.npy, rounded to 4 decimals); the summaries are the notes' 3.4.
REFERENCE = {
    "regression": {
        "copula": [-0.8888, -1.0435, -1.0474, -1.0451, -0.9731, -0.9860, -0.9662, -1.0270, -1.0912, -0.9632],
        "gp": [-1.0174, -1.0830, -1.0980, -1.1425, -1.0713, -1.0763, -1.0266, -1.1284, -1.1751, -1.0744],
        "bayes_linear": [
            -1.0032,
            -1.0992,
            -1.1086,
            -1.1522,
            -1.0779,
            -1.0878,
            -1.0278,
            -1.1457,
            -1.1843,
            -1.0770,
        ],
    },
    "classification": {
        "copula": [-0.0918, -0.1384, -0.1109, -0.1290, -0.1239, -0.0727, -0.0775, -0.0731, -0.0783, -0.0684],
        "gp": [-0.1020, -0.1125, -0.0905, -0.1047, -0.1301, -0.0927, -0.1384, -0.1062, -0.1002, -0.0766],
        "logistic": [
            -0.1059,
            -0.1364,
            -0.1038,
            -0.1169,
            -0.1267,
            -0.1034,
            -0.0853,
            -0.0979,
            -0.0989,
            -0.0966,
        ],
    },
    "density": {
        "copula": [
            -13.6202,
            -12.8040,
            -12.5746,
            -13.9386,
            -12.1007,
            -12.2596,
            -13.8135,
            -12.9243,
            -14.3274,
            -11.7014,
        ],
        "gaussian": [
            -18.5980,
            -18.4601,
            -19.5383,
            -18.8543,
            -18.0091,
            -16.5847,
            -16.7544,
            -15.7067,
            -21.5400,
            -14.4493,
        ],
        "kde": [
            -25.8269,
            -25.3311,
            -26.0413,
            -26.3241,
            -25.5384,
            -24.8052,
            -26.1991,
            -24.6221,
            -27.4292,
            -24.0819,
        ],
    },
}
REPORTED = {  # the notes' 3.4: mean, se
    "regression": {"copula": (-1.003, 0.018), "gp": (-1.089, 0.015), "bayes_linear": (-1.096, 0.017)},
    "classification": {"copula": (-0.096, 0.008), "gp": (-0.105, 0.005), "logistic": (-0.107, 0.005)},
    "density": {"copula": (-13.01, 0.26), "gaussian": (-17.85, 0.61), "kde": (-25.62, 0.29)},
}
# The authors' predictive resampling of the GMM toy (n = 50; copula_gmm_logpdf_pr_n50.npy,
# 1000 paths, T = 5000): density at y -> (mean, sd over paths, 2.5%, 97.5%).
GMM_REFERENCE = {
    "-0.5": (0.6386, 0.0972, 0.4647, 0.8513),
    "0.0": (0.3721, 0.0571, 0.2722, 0.4888),
    "1.0": (0.1179, 0.0277, 0.0684, 0.1750),
}
DATA_KEY, DENSITY_KEY = 200, 50
GP_RESTARTS = 10

# ------------------------------------------------------------------ data and protocol


def splits(num_rows, count):
    """The authors' 50/50 splits, ``random_state = 100 + k``."""
    from sklearn.model_selection import train_test_split

    n = int(0.5 * num_rows)
    for k in range(count):
        yield train_test_split(
            np.arange(num_rows), test_size=num_rows - n, train_size=n, random_state=100 + k
        )


def standardise(train, test):
    mean, std = np.mean(train, axis=0), np.std(train, axis=0)
    return (train - mean) / std, (test - mean) / std


def drop_corr(data, threshold=0.98):
    """The authors' ``drop_corr``: drop column j if |corr(i, j)| > threshold for some i < j."""
    upper = np.triu(np.abs(np.corrcoef(data, rowvar=False)), k=1)
    keep = ~np.any(upper > threshold, axis=0)
    return data[:, keep], np.flatnonzero(~keep)


def summary(values):
    values = np.asarray(values, dtype=float)
    return {"mean": float(np.mean(values)), "se": float(np.std(values) / np.sqrt(len(values)))}


def gmm_toy(n=50, seed=102):
    """The authors' GMM toy (``1_univariate_copula.gen_data``), standardised (ddof 0)."""
    state = np.random.RandomState(seed)  # the authors' np.random.seed(102) stream
    component = stats.bernoulli.rvs(0.2, size=n, random_state=state)
    y = state.randn(n)
    y[component == 0] += -2
    y[component == 1] += 2
    return (y - np.mean(y)) / np.std(y)


def authors_seed():
    """The stream of the authors' ``np.random.seed(200)`` before each GP fit (restarts)."""
    return np.random.RandomState(200)


def gp_kernel():
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    return ConstantKernel() * RBF() + WhiteKernel()


# ------------------------------------------------------------------ 1. benchmarks


def fit_regression(x, y):
    return martingale.regression(x, y, key=jax.random.key(DATA_KEY))


def fit_classification(x, y):
    return martingale.classification(x, y, key=jax.random.key(DATA_KEY))


def fit_density(y):
    return martingale.density(y, key=jax.random.key(DENSITY_KEY))


def fit_timings(walls, compiles):
    """First fit (with compilation) vs the later fits (same shapes: cached)."""
    later = walls[1:]
    return {
        "first_s": walls[0],
        "first_compile_s": compiles[0],
        "later_median_s": float(np.median(later)) if later else None,
        "later_min_s": float(np.min(later)) if later else None,
        "later_compile_s": float(np.sum(compiles[1:])) if later else None,
        "all_s": walls,
    }


def run_regression(count, checkpoint):
    from sklearn.datasets import load_diabetes
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.linear_model import BayesianRidge

    x_all, y_all = load_diabetes(return_X_y=True)
    scores = []
    rows = {"copula": [], "gp": [], "bayes_linear": []}
    walls, compiles, predict_s, bandwidths, baseline_s = [], [], [], [], []

    def result(train, test):
        return {
            "data": {"name": "diabetes", "n_train": len(train), "n_test": len(test), "p": x_all.shape[1]},
            "per_split": rows,
            "copula_bandwidths": bandwidths,
            "copula_prequential_log_likelihood": scores,
            "copula_fit": fit_timings(walls, compiles),
            "copula_predict_s": predict_s,
            "baselines_s": baseline_s,
            "process_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }

    for k, (train, test) in enumerate(splits(len(y_all), count)):
        x, x_test = standardise(x_all[train], x_all[test])
        y, y_test = standardise(y_all[train], y_all[test])
        fit, wall, comp = timed(fit_regression, x, y)
        log_density, pred_s, _ = timed(fit.log_density, x_test, y_test)
        walls.append(wall)
        compiles.append(comp)
        predict_s.append(pred_s)
        bandwidths.append([float(fit.rho), *np.asarray(fit.rho_x).tolist()])
        scores.append(float(fit.log_score))
        rows["copula"].append(float(np.mean(log_density)))
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gpr = GaussianProcessRegressor(
                gp_kernel(), n_restarts_optimizer=GP_RESTARTS, normalize_y=True, random_state=authors_seed()
            )
            mean, std = gpr.fit(x, y).predict(x_test, return_std=True)
        rows["gp"].append(float(np.mean(stats.norm.logpdf(y_test, mean, std))))
        mean, std = BayesianRidge().fit(x, y).predict(x_test, return_std=True)
        rows["bayes_linear"].append(float(np.mean(stats.norm.logpdf(y_test, mean, std))))
        baseline_s.append(time.perf_counter() - start)
        print(
            f"  diabetes split {k}: copula {rows['copula'][-1]:.4f} (fit {wall:.1f} s, compile {comp:.1f} s)"
            f"  GP {rows['gp'][-1]:.4f}  Bayes linear {rows['bayes_linear'][-1]:.4f}  "
            f"rho {bandwidths[-1][0]:.3f}",
            flush=True,
        )
        checkpoint(result(train, test))
    return result(train, test)


def run_classification(count, checkpoint):
    from sklearn.datasets import load_breast_cancer
    from sklearn.gaussian_process import GaussianProcessClassifier
    from sklearn.linear_model import LogisticRegression

    x_all, target = load_breast_cancer(return_X_y=True)
    y_all = 1 - target  # sklearn: 0 = malignant; the authors: malignant = 1
    scores = []
    rows = {"copula": [], "gp": [], "logistic": []}
    walls, compiles, predict_s, bandwidths, baseline_s = [], [], [], [], []

    def result(train, test):
        return {
            "data": {
                "name": "breast_cancer",
                "n_train": len(train),
                "n_test": len(test),
                "p": x_all.shape[1],
            },
            "per_split": rows,
            "copula_bandwidths": bandwidths,
            "copula_prequential_log_likelihood": scores,
            "copula_fit": fit_timings(walls, compiles),
            "copula_predict_s": predict_s,
            "baselines_s": baseline_s,
            "process_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }

    for k, (train, test) in enumerate(splits(len(y_all), count)):
        x, x_test = standardise(x_all[train], x_all[test])
        y, y_test = y_all[train], y_all[test]
        fit, wall, comp = timed(fit_classification, x, y)
        log_lik, pred_s, _ = timed(fit.log_likelihood, x_test, y_test)
        walls.append(wall)
        compiles.append(comp)
        predict_s.append(pred_s)
        bandwidths.append([float(fit.rho), *np.asarray(fit.rho_x).tolist()])
        scores.append(float(fit.log_score))
        rows["copula"].append(float(np.mean(log_lik)))
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gpc = GaussianProcessClassifier(
                gp_kernel(), n_restarts_optimizer=GP_RESTARTS, random_state=authors_seed()
            ).fit(x, y)
            log_p = np.log(gpc.predict_proba(x_test))
        rows["gp"].append(float(np.mean(y_test * log_p[:, 1] + (1 - y_test) * log_p[:, 0])))
        log_p = LogisticRegression(C=0.1).fit(x, y).predict_log_proba(x_test)
        rows["logistic"].append(float(np.mean(y_test * log_p[:, 1] + (1 - y_test) * log_p[:, 0])))
        baseline_s.append(time.perf_counter() - start)
        print(
            f"  breast split {k}: copula {rows['copula'][-1]:.4f} (fit {wall:.1f} s, compile {comp:.1f} s)"
            f"  GPC {rows['gp'][-1]:.4f}  logistic {rows['logistic'][-1]:.4f}  rho {bandwidths[-1][0]:.3f}",
            flush=True,
        )
        checkpoint(result(train, test))
    return result(train, test)


def run_density(count, checkpoint):
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KernelDensity

    features, dropped = drop_corr(load_breast_cancer().data, 0.98)
    scores = []
    rows = {"copula": [], "gaussian": [], "kde": []}
    walls, compiles, predict_s, bandwidths, kde_bandwidths, baseline_s = [], [], [], [], [], []

    def result(train, test):
        return {
            "data": {
                "name": "breast_cancer features, drop_corr(0.98)",
                "dropped_columns": dropped.tolist(),
                "d": features.shape[1],
                "n_train": len(train),
                "n_test": len(test),
            },
            "per_split": rows,
            "copula_bandwidth": bandwidths,
            "kde_bandwidth": kde_bandwidths,
            "copula_prequential_log_likelihood": scores,
            "copula_fit": fit_timings(walls, compiles),
            "copula_predict_s": predict_s,
            "baselines_s": baseline_s,
            "process_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }

    for k, (train, test) in enumerate(splits(len(features), count)):
        y, y_test = standardise(features[train], features[test])
        fit, wall, comp = timed(fit_density, y)
        log_density, pred_s, _ = timed(fit.log_density, y_test)
        walls.append(wall)
        compiles.append(comp)
        predict_s.append(pred_s)
        bandwidths.append(float(fit.rho))
        scores.append(float(fit.log_score))
        rows["copula"].append(float(np.mean(log_density)))
        start = time.perf_counter()
        gaussian = stats.multivariate_normal.logpdf(y_test, np.mean(y, axis=0), np.cov(y.T))
        rows["gaussian"].append(float(np.mean(gaussian)))
        grid = GridSearchCV(KernelDensity(), {"bandwidth": np.logspace(-1, 1, 40)}, cv=10).fit(y)
        kde_bandwidths.append(float(grid.best_estimator_.bandwidth))
        rows["kde"].append(float(np.mean(grid.best_estimator_.score_samples(y_test))))
        baseline_s.append(time.perf_counter() - start)
        print(
            f"  breast density split {k}: copula {rows['copula'][-1]:.3f} (fit {wall:.1f} s, compile "
            f"{comp:.1f} s, rho {bandwidths[-1]:.4f})  Gaussian {rows['gaussian'][-1]:.3f}  "
            f"KDE {rows['kde'][-1]:.3f}",
            flush=True,
        )
        checkpoint(result(train, test))
    return result(train, test)


def compare(section, result):
    """Summaries, the reported references and the 2-SE checks: against the reported
    10-split numbers, and against the authors' saved values on the same splits (when
    fewer than 10 ran), plus the paired per-split differences."""
    table = {}
    count = len(result["per_split"]["copula"])
    for method, values in result["per_split"].items():
        ours = summary(values)
        ref_mean, ref_se = REPORTED[section][method]
        bound = 2 * np.hypot(ours["se"], ref_se)
        same = summary(REFERENCE[section][method][:count])
        bound_same = 2 * np.hypot(ours["se"], same["se"])
        paired = np.asarray(values) - np.asarray(REFERENCE[section][method][:count])
        table[method] = {
            **ours,
            "reference_mean": ref_mean,
            "reference_se": ref_se,
            "diff": ours["mean"] - ref_mean,
            "two_se_bound": float(bound),
            "within_2se": bool(abs(ours["mean"] - ref_mean) <= bound),
            "same_splits_reference_mean": same["mean"],
            "same_splits_reference_se": same["se"],
            "same_splits_diff": ours["mean"] - same["mean"],
            "same_splits_two_se_bound": float(bound_same),
            "same_splits_within_2se": bool(abs(ours["mean"] - same["mean"]) <= bound_same),
            "paired_diff_mean": float(np.mean(paired)),
            "paired_diff_se": float(np.std(paired) / np.sqrt(count)),
            "splits": count,
        }
    result["summary"] = table
    return result


# ------------------------------------------------------------------ 2. resampling cost


def gmm_fit():
    return martingale.density(gmm_toy(), key=jax.random.key(DATA_KEY))


def resample(fit, grid, paths, steps, devices, key=1):
    with warnings.catch_warnings():  # the authors' grid reaches past the data (mass ~ 0 there)
        warnings.simplefilter("ignore")
        return fit.resample(
            grid,
            key=jax.random.key(key),
            num_paths=paths,
            num_steps=steps,
            devices=devices,
            progress_bar=False,
        )


def resample_stage(steps, paths_list):
    """In a subprocess with 4 host devices: time vs paths on 1 and 4 devices; each size
    three times, the first call compiling (a new number of paths is a new shape)."""
    fit = gmm_fit()
    grid = np.arange(-4, 4, 0.05)
    out = {"device_count": jax.device_count(), "steps": steps, "grid": len(grid), "runs": {}}
    draws = {}
    for devices in (1, 4):
        for paths in paths_list:
            _, first, comp = timed(lambda d=devices, b=paths: resample(fit, grid, b, steps, d))
            result, wall, again = timed(lambda d=devices, b=paths: resample(fit, grid, b, steps, d))
            _, wall_2, again_2 = timed(lambda d=devices, b=paths: resample(fit, grid, b, steps, d))
            out["runs"][f"{devices}:{paths}"] = {
                "devices": devices,
                "paths": paths,
                "first_s": first,
                "compile_s": comp,
                "run_s": min(wall, wall_2),  # the better of two compiled calls (a shared machine)
                "runs_s": [wall, wall_2],
                "run_compile_s": again + again_2,
            }
            print(
                f"  devices={devices} paths={paths}: first {first:.1f} s, run {wall:.1f} s", file=sys.stderr
            )
        draws[devices] = result["density"]
    out["draws_bit_identical_1_vs_4"] = bool(np.array_equal(draws[1], draws[4]))
    out["draws_max_abs_diff_1_vs_4"] = float(np.max(np.abs(draws[1] - draws[4])))
    print("RESULT " + json.dumps(out))


def subprocess_json(args, env=None, timeout=3600):
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def run_resampling(steps, paths_list):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess_json(["--resample-stage", f"{steps}:{','.join(map(str, paths_list))}"], env=env)
    for devices in (1, 4):
        runs = [out["runs"][f"{devices}:{paths}"] for paths in paths_list]
        run_s = np.array([r["run_s"] for r in runs])
        slope, intercept = np.polyfit(paths_list, run_s, 1)
        out[f"devices_{devices}"] = {
            "run_s_per_1000_paths": [1000 * r / p for r, p in zip(run_s, paths_list, strict=True)],
            "linear_fit_s_per_1000_paths": 1000 * float(slope),
            "linear_fit_intercept_s": float(intercept),
            "ratio_largest_to_smallest": float(run_s[-1] / run_s[0]),
            "paths_ratio": paths_list[-1] / paths_list[0],
        }
    out["speedup_4_over_1"] = {
        str(paths): out["runs"][f"1:{paths}"]["run_s"] / out["runs"][f"4:{paths}"]["run_s"]
        for paths in paths_list
    }
    return out


# ------------------------------------------------------------------ 3. NumPy loop


def numpy_paths(cdf, pdf, rho, num_data, paths, steps, seed=0):
    """The 1-D copula update of ``ppl/processes/martingale/copula.py`` in NumPy: per path and
    step one ``v ~ U(0, 1)``; the grid's CDF and density move (vectorised over the grid only)."""
    rng = np.random.default_rng(seed)
    clip = martingale.copula.CDF_CLIP
    one_minus = 1.0 - rho**2
    scale = np.sqrt(one_minus)
    densities = np.empty((paths, len(pdf)))
    for b in range(paths):
        p_cdf, p_pdf = cdf.copy(), pdf.copy()
        for t in range(steps):
            i = num_data + t
            alpha = (2.0 - 1.0 / (i + 1.0)) / (i + 2.0)
            v = rng.uniform()
            a = special.ndtri(np.clip(p_cdf, clip, 1 - clip))
            b_ = special.ndtri(min(max(v, clip), 1 - clip))
            h = np.clip(special.ndtr((a - rho * b_) / scale), clip, 1 - clip)
            c = np.exp(-(rho**2 * (a**2 + b_**2) - 2 * rho * a * b_) / (2 * one_minus)) / scale
            p_cdf = (1 - alpha) * p_cdf + alpha * h
            p_pdf = (1 - alpha + alpha * c) * p_pdf
        densities[b] = p_pdf
    return densities


def run_numpy(steps, ppl_paths, numpy_path_count):
    fit = gmm_fit()
    grid = np.arange(-4, 4, 0.05)
    cdf = fit.conditional_cdf(grid)[:, 0]
    pdf = np.exp(fit.log_density(grid))
    rho, num_data = float(fit.rho), fit.cdfs.shape[1]
    draws, first, comp = timed(lambda: resample(fit, grid, ppl_paths, steps, 1, key=2))
    _, run, _ = timed(lambda: resample(fit, grid, ppl_paths, steps, 1, key=2))  # compiled
    ppl = draws["density"]
    start = time.perf_counter()
    numpy = numpy_paths(cdf, pdf, rho, num_data, numpy_path_count, steps)
    numpy_s = time.perf_counter() - start
    ppl_per_path = run / ppl_paths
    numpy_per_path = numpy_s / numpy_path_count
    # agreement in distribution: mean density over paths, per grid point, in MC error
    z = (ppl.mean(0) - numpy.mean(0)) / np.sqrt(
        ppl.var(0) / ppl_paths + numpy.var(0) / numpy_path_count + 1e-300
    )
    mass = pdf > 1e-3
    z_martingale = (ppl.mean(0) - pdf) / np.sqrt(ppl.var(0) / ppl_paths + 1e-300)
    z_numpy = (numpy.mean(0) - pdf) / np.sqrt(numpy.var(0) / numpy_path_count + 1e-300)
    at = {}
    for name in GMM_REFERENCE:
        j = int(np.argmin(np.abs(grid - float(name))))
        ks = stats.ks_2samp(ppl[:, j], numpy[:, j])
        at[name] = {
            "ppl": [
                float(ppl[:, j].mean()),
                float(ppl[:, j].std()),
                *np.percentile(ppl[:, j], [2.5, 97.5]).tolist(),
            ],
            "numpy": [
                float(numpy[:, j].mean()),
                float(numpy[:, j].std()),
                *np.percentile(numpy[:, j], [2.5, 97.5]).tolist(),
            ],
            "authors": list(GMM_REFERENCE[name]),
            "ks_ppl_vs_numpy_pvalue": float(ks.pvalue),
            "p_n": float(pdf[j]),
        }
    mean_density = ppl.mean(0)
    return {
        "grid": len(grid),
        "steps": steps,
        "rho": rho,
        "ppl_paths": ppl_paths,
        "numpy_paths": numpy_path_count,
        "ppl_first_s": first,
        "ppl_compile_s": comp,
        "ppl_run_s": run,
        "ppl_run_s_per_path": ppl_per_path,
        "ppl_run_s_per_1000_paths": 1000 * ppl_per_path,
        "numpy_s": numpy_s,
        "numpy_s_per_path": numpy_per_path,
        "numpy_over_ppl_per_path": numpy_per_path / ppl_per_path,
        "mean_density_z_max_abs": float(np.max(np.abs(z[mass]))),
        "mean_density_z_fraction_over_2": float(np.mean(np.abs(z[mass]) > 2)),
        "martingale_z_max_abs": float(np.max(np.abs(z_martingale[mass]))),
        "martingale_z_fraction_over_2": float(np.mean(np.abs(z_martingale[mass]) > 2)),
        "numpy_martingale_z_max_abs": float(np.max(np.abs(z_numpy[mass]))),
        "numpy_martingale_z_fraction_over_2": float(np.mean(np.abs(z_numpy[mass]) > 2)),
        "mean_density_integral": float(np.trapezoid(mean_density, grid)),
        "sd_ratio_ppl_over_numpy_median": float(np.median(ppl.std(0)[mass] / numpy.std(0)[mass])),
        "at": at,
    }


# ------------------------------------------------------------------ report


def fmt(mean, se, digits):
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def print_table(results):
    names = {
        "regression": (
            "Diabetes regression",
            {"copula": "copula", "gp": "GP", "bayes_linear": "Bayes linear"},
            3,
        ),
        "classification": (
            "Breast classification",
            {"copula": "copula", "gp": "GPC", "logistic": "logistic"},
            3,
        ),
        "density": ("Breast density (d = 26)", {"copula": "copula", "gaussian": "Gaussian", "kde": "KDE"}, 2),
    }
    print("\n| Task | Method | ppl / sklearn (mean ± se) | Reported | Diff | 2-SE bound | Within | Splits |")
    print("|---|---|---|---|---|---|---|---|")
    for section, (title, methods, digits) in names.items():
        if section not in results:
            continue
        for method, label in methods.items():
            row = results[section]["summary"][method]
            print(
                f"| {title} | {label} | {fmt(row['mean'], row['se'], digits)} | "
                f"{fmt(row['reference_mean'], row['reference_se'], digits)} | {row['diff']:+.{digits}f} | "
                f"{row['two_se_bound']:.{digits}f} | {'yes' if row['within_2se'] else 'no'} | "
                f"{row['splits']} |"
            )
    print("\n| Copula fit | First (compile) s | Later fits median s | Predict s (median) |")
    print("|---|---|---|---|")
    for section in ("regression", "classification", "density"):
        if section in results:
            fit = results[section]["copula_fit"]
            later = "-" if fit["later_median_s"] is None else f"{fit['later_median_s']:.1f}"
            predict = np.median(results[section]["copula_predict_s"])
            print(
                f"| {names[section][0]} | {fit['first_s']:.1f} ({fit['first_compile_s']:.1f}) | "
                f"{later} | {predict:.2f} |"
            )
    if "resampling" in results:
        out = results["resampling"]
        print(
            f"\nResampling, 1-D GMM toy, grid {out['grid']}, T = {out['steps']} "
            "(run = best of 2 compiled calls):"
        )
        print("| Devices | Paths | First s | Compile s | Run s | Run s / 1000 paths |")
        print("|---|---|---|---|---|---|")
        for run in out["runs"].values():
            print(
                f"| {run['devices']} | {run['paths']} | {run['first_s']:.1f} | {run['compile_s']:.1f} | "
                f"{run['run_s']:.1f} | {1000 * run['run_s'] / run['paths']:.1f} |"
            )
        speedup = {paths: round(value, 2) for paths, value in out["speedup_4_over_1"].items()}
        print(
            f"speed-up 4 vs 1 devices (run s): {speedup}; "
            f"draws bit-identical: {out['draws_bit_identical_1_vs_4']}"
        )
    if "numpy" in results:
        out = results["numpy"]
        print(
            f"\nNumPy loop vs ppl (T = {out['steps']}, grid {out['grid']}): "
            f"NumPy {out['numpy_s_per_path']:.3f} s/path ({out['numpy_paths']} paths), "
            f"ppl {out['ppl_run_s_per_path']:.4f} s/path ({out['ppl_paths']} paths, "
            f"1 device): ratio {out['numpy_over_ppl_per_path']:.1f}x; mean-density |z| max "
            f"{out['mean_density_z_max_abs']:.2f}, vs p_n |z| max ppl {out['martingale_z_max_abs']:.2f} "
            f"NumPy {out.get('numpy_martingale_z_max_abs', float('nan')):.2f}"
        )
        for name, row in out["at"].items():
            print(
                f"  y = {name}: ppl {np.round(row['ppl'], 3).tolist()}  "
                f"NumPy {np.round(row['numpy'], 3).tolist()}  "
                f"authors {row['authors']}  KS p {row['ks_ppl_vs_numpy_pvalue']:.2f}"
            )


def results_path(name):
    return os.path.join(os.environ.get("PPL_BENCH_OUT") or os.path.join(HERE, "results"), name)


def save(name, update):
    """Merge ``update`` (top-level keys) into the results file: a run of some sections (or
    a split finished in one of two processes running different sections) keeps the rest.
    A lock serialises the read-merge-write."""
    with open(os.path.join(tempfile.gettempdir(), f"ppl_{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        kept = {}
        if os.path.exists(results_path(name)):
            with open(results_path(name)) as handle:
                kept = json.load(handle)
        write_results(name, {**kept, **update})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one split, short resampling: a smoke run")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="run in the order given")
    parser.add_argument("--splits", type=int, default=None, help="splits (default 10, quick 1)")
    parser.add_argument("--steps", type=int, default=None, help="T for the scaling runs (default 500)")
    parser.add_argument("--paths", default=None, help="paths for the scaling runs (default 250,500,1000)")
    parser.add_argument(
        "--numpy-check",
        default=None,
        help="T:ppl_paths:numpy_paths (default 5000:300:150, quick 200:100:10)",
    )
    parser.add_argument("--table", action="store_true", help="print the table of the saved results and stop")
    parser.add_argument("--resample-stage", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.resample_stage:
        steps, paths = args.resample_stage.split(":")
        return resample_stage(int(steps), [int(p) for p in paths.split(",")])
    name = "martingale_quick.json" if args.quick else "martingale.json"
    if args.table:
        with open(results_path(name)) as handle:
            return print_table(json.load(handle))
    sections = args.sections.split(",")
    count = args.splits or (1 if args.quick else 10)
    steps = args.steps or (200 if args.quick else 500)
    paths = [int(p) for p in (args.paths or ("25,50,100" if args.quick else "250,500,1000")).split(",")]
    numpy_check = args.numpy_check or ("200:100:10" if args.quick else "5000:300:150")
    numpy_steps, ppl_paths, numpy_paths_count = (int(v) for v in numpy_check.split(":"))
    start = time.perf_counter()
    run = {
        "command": " ".join(sys.argv[1:]),
        "quick": args.quick,
        "sections": sections,
        "dtype": "float64 (jax_enable_x64)",
        "splits": count,
        "scaling_steps": steps,
        "scaling_paths": paths,
        "numpy_check": {"steps": numpy_steps, "ppl_paths": ppl_paths, "numpy_paths": numpy_paths_count},
        "keys": {"regression/classification": DATA_KEY, "density": DENSITY_KEY, "gmm toy fit": DATA_KEY},
        "load_average_at_start": os.getloadavg(),
    }
    environment = {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "scikit-learn": version("scikit-learn"),
        "scipy": version("scipy"),
        "ppl": version("ppl"),
    }
    results = {}

    def store(section, value, section_start):
        value["section_s"] = time.perf_counter() - section_start
        value["run"] = {**run, "load_average_now": os.getloadavg()}
        results[section] = value
        save(name, {"environment": environment, section: value})

    for section in sections:
        print(f"== {section}", flush=True)
        section_start = time.perf_counter()
        if section in ("regression", "classification", "density"):
            runner = {
                "regression": run_regression,
                "classification": run_classification,
                "density": run_density,
            }

            def checkpoint(partial, section=section, section_start=section_start):
                store(section, compare(section, partial), section_start)

            runner[section](count, checkpoint)
        elif section == "resampling":
            store(section, run_resampling(steps, paths), section_start)
        elif section == "numpy":
            store(section, run_numpy(numpy_steps, ppl_paths, numpy_paths_count), section_start)
        else:
            raise ValueError(f"unknown section {section!r}; choose from {SECTIONS}")
    print_table(results)
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
