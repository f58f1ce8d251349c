"""NNGP and scale-mixture NNGP regression: Synthetic A, robustness with outliers, scale, devices.

Four sections (select with ``--sections``; all by default):

* ``synthetic``: the authors' ``syn-normal`` (Synthetic A of Lee et al., ICLR 2022, Table 2):
  the ``reg.sh`` grid selected by validation NLL on the unshuffled split, the chosen
  setting re-run on seeds 0-9 (train and validation re-permuted), test NLL on
  standardised y. Two modes, named in every number:

  - ``authors``: the released code's quirks: predictive variance of the latent f
    (no observation noise), neural-tangents' relative jitter ``eps * mean(diag K)``,
    Burr XII by importance sampling with the prior as proposal (1000 draws, one fixed key).
  - ``exact``: noise included in the predictive (observed variance), absolute noise
    ``eps`` (plus ppl's absolute jitter 1e-6), Burr XII by quadrature over log s2.

* ``robust``: statsmodels ``stackloss`` (leave-one-out), scikit-learn ``diabetes`` with
  Cauchy-corrupted test targets, and ``digits`` classification by regression on one-hot
  labels with a Conv kernel, clean and with impulse-noise test images.
* ``scale``: kernel and posterior at n = 1000, 4000, 8000 against a bare Cholesky solve
  and a NumPy kernel recursion (one subprocess per size and stage, for peak memory).
* ``devices``: the same Gram on 1 and 4 host devices (a subprocess with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=4``), bit-for-bit check.

    python benchmarks/nngp.py [--quick] [--sections synthetic,robust,scale,devices]
"""

import argparse
import functools
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from importlib.metadata import version

os.environ.setdefault("PPL_COMPILATION_CACHE", "0")  # before ppl is imported

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.scipy.linalg import cho_solve, solve_triangular  # noqa: E402
from timing import timed, write_results  # noqa: E402  (benchmarks/timing.py, beside this script)

from ppl import dist  # noqa: E402
from ppl.processes import gp, nngp, scale_mixture  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# ------------------------------------------------------------------ shared pieces


def mlp(depth, act, wv, bv, lv=1.0):
    """The authors' regression kernel from variances (their grid is in variances)."""
    return nngp.mlp(
        depth, act, W_std=float(np.sqrt(wv)), b_std=float(np.sqrt(bv)), last_W_std=float(np.sqrt(lv))
    )


def nll(log_density):
    return float(-jnp.mean(log_density))


class Fit:
    """One factorisation of a training kernel, shared by the NNGP and every scale prior.

    ``k_all`` is the kernel (last-layer variance 1) on ``[train; eval]``. ``noise`` is
    the diagonal added to the training block (absolute), ``jitter`` ppl's extra jitter.
    """

    def __init__(self, k_all, y_train, n_train, noise, jitter):
        self.k_train = k_all[:n_train, :n_train]
        self.k_cross = k_all[n_train:, :n_train]
        self.k_diag = jnp.diagonal(k_all)[n_train:]
        self.cond = gp.condition(self.k_train, y_train, noise, jitter)
        self.mean, self.unit_latent = gp.predict(self.cond, self.k_cross, self.k_diag)
        if y_train.ndim == 1:
            self.mean = self.mean[:, 0]
        self.noise = noise
        self.count = self.cond.num_points * self.cond.num_outputs

    def gaussian(self, lv):
        """NNGP with last-layer variance ``lv`` and noise ``lv * noise`` (the authors'
        relative jitter scales with the kernel; in exact mode pass noise / lv)."""
        return gp.Prediction(self.mean, lv * self.unit_latent, lv * (self.unit_latent + self.noise))

    def mixture(self, prior, method, key=None, num_samples=1000):
        post = scale_mixture.scale_posterior(
            prior, self.cond.quadratic, self.count, method=method, key=key, num_samples=num_samples
        )
        pred = scale_mixture.ScaleMixturePrediction(
            self.mean,
            post.mean() * self.unit_latent,
            post.mean() * (self.unit_latent + self.noise),
            self.unit_latent,
            self.unit_latent + self.noise,
            post,
        )
        return pred, post


# ------------------------------------------------------------------ 1. Synthetic A


def synthetic_a():
    """x, y of the authors' syn-normal, permuted with seed 10, split 80/10/10, standardised."""
    num = 100
    rs = np.random.RandomState(829)
    x = np.linspace(-num / 2, num / 2, num)[:, None]
    cov = np.exp(-0.5 * (x - x.T) ** 2)
    y = rs.multivariate_normal(mean=np.zeros(num), cov=cov, size=1).flatten() + rs.standard_normal(num) * 0.2
    idx = np.random.RandomState(10).permutation(num)
    x, y = x[idx], y[idx]
    n_train, n_valid = 80, 10
    xm, xs = x[:n_train].mean(0), x[:n_train].std(0)
    ym, ys = y[:n_train].mean(), y[:n_train].std()
    return (x - xm) / xs, (y - ym) / ys, n_train, n_valid


def resplit(x, y, n_train, n_valid, seed):
    """The authors' per-run split: train+valid re-permuted with ``seed`` (None: unshuffled)."""
    if seed is None:
        return x, y
    m = n_train + n_valid
    idx = np.random.RandomState(seed).permutation(m)
    return np.concatenate([x[:m][idx], x[m:]]), np.concatenate([y[:m][idx], y[m:]])


GRID = {
    "depth": [1, 4, 16],
    "wv": [1.0, 2.0, 4.0],
    "bv": [0.0, 0.09, 1.0],
    "lv": [1.0, 4.0],
    "act": ["erf", "relu"],
    "e": [5, 6, 7, 8, 9],
    "alpha": [0.5, 1.0, 1.5, 2.0, 4.0, 8.0],
    "beta": [0.5, 1.0, 1.5, 2.0, 4.0, 8.0],
    "c": [1.0, 2.0, 3.0],
    "d": [1.0, 2.0, 3.0],
}
QUICK_GRID = dict(GRID, depth=[1], wv=[2.0], bv=[0.09], e=[8], alpha=[2.0], beta=[2.0], c=[2.0], d=[2.0])
IS_KEY = 101  # the authors' random_state for their 1000 Burr draws, fixed across the grid


def evaluate(mode, k_all, y, n_train, n_valid, e, models):
    """Validation and test NLL of every model of ``models`` at one kernel and eps.

    ``models``: list of ``(name, params)`` with name ``nngp`` (params ``lv``), ``ig``
    (``alpha, beta``) or ``burr`` (``c, d``). Returns ``{(name, params): (valid, test)}``.
    """
    eps = 10.0 ** (-6 + e / 2)
    y_train, y_eval = jnp.asarray(y[:n_train]), jnp.asarray(y[n_train:])
    k_train_mean = float(jnp.mean(jnp.diagonal(k_all)[:n_train]))
    observed = mode == "exact"
    fits = {}

    def fit(lv):
        # authors: NT's diag_reg is relative to the kernel it regularises (last layer
        # included), so the noise is eps * mean(diag(lv K)) = lv * (eps * mean(diag K)):
        # one factorisation of K + eps mean(diag K) I serves every lv, scaled by lv.
        # exact: absolute noise eps on lv K, i.e. K + (eps / lv) I, scaled by lv.
        noise = eps * k_train_mean if mode == "authors" else eps / lv
        key = noise
        if key not in fits:
            fits[key] = Fit(k_all, y_train, n_train, noise, 0.0 if mode == "authors" else gp.DEFAULT_JITTER)
        return fits[key]

    out = {}
    for name, params in models:
        if name == "nngp":
            pred = fit(params[0]).gaussian(params[0])
            logp = pred.log_density(y_eval, observed=observed)
        else:
            # the scale mixture's kernel has last-layer variance 1 (s2 takes its place)
            f = fit(1.0)
            if name == "ig":
                prior, method, key = dist.InverseGamma(*params), "closed_form", None
            elif mode == "authors":
                prior, method, key = scale_mixture.BurrXII(*params), "importance", jax.random.key(IS_KEY)
            else:
                prior, method, key = scale_mixture.BurrXII(*params), "quadrature", None
            pred, _ = f.mixture(prior, method, key)
            logp = pred.log_density(y_eval, observed=observed)
        out[(name, params)] = (nll(logp[:n_valid]), nll(logp[n_valid:]))
    return out


def run_synthetic(quick):
    grid = QUICK_GRID if quick else GRID
    x, y, n_train, n_valid = synthetic_a()
    models = [("nngp", (lv,)) for lv in grid["lv"]]
    models += [("ig", ab) for ab in itertools.product(grid["alpha"], grid["beta"])]
    models += [("burr", cd) for cd in itertools.product(grid["c"], grid["d"])]
    kernels = list(itertools.product(grid["depth"], grid["act"], grid["wv"], grid["bv"]))
    result = {"grid": grid, "modes": {}}
    start = time.perf_counter()
    best = {mode: {} for mode in ("authors", "exact")}  # mode -> model -> (valid, setting)
    failures = {"authors": 0, "exact": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the importance sampler warns at low ESS (reported below)
        for depth, act, wv, bv in kernels:
            k_all = mlp(depth, act, wv, bv).kernel(jnp.asarray(x))
            for mode in ("authors", "exact"):
                for e in grid["e"]:
                    try:
                        scores = evaluate(mode, k_all, y, n_train, n_valid, e, models)
                    except ValueError:  # not positive definite at this eps (the authors skip these too)
                        failures[mode] += 1
                        continue
                    for (name, params), (valid, _) in scores.items():
                        if not np.isfinite(valid):
                            continue
                        setting = {"depth": depth, "act": act, "wv": wv, "bv": bv, "e": e, "params": params}
                        if valid < best[mode].get(name, (np.inf, None))[0]:
                            best[mode][name] = (valid, setting)
    grid_s = time.perf_counter() - start
    print(f"synthetic A: grid of {len(kernels)} kernels x {len(grid['e'])} eps in {grid_s:.1f} s")
    for mode in ("authors", "exact"):
        rows = {}
        for name in ("nngp", "ig", "burr"):
            valid, setting = best[mode][name]
            tests, ess = [], []
            for seed in range(10):
                xs, ys = resplit(x, y, n_train, n_valid, seed)
                net = mlp(setting["depth"], setting["act"], setting["wv"], setting["bv"])
                k_all = net.kernel(jnp.asarray(xs))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    score = evaluate(
                        mode, k_all, ys, n_train, n_valid, setting["e"], [(name, setting["params"])]
                    )
                tests.append(score[(name, setting["params"])][1])
                if name == "burr":
                    ess.append(burr_ess(mode, k_all, ys, n_train, setting))
            rows[name] = {
                "setting": setting,
                "selection_valid_nll": valid,
                "test_nll_per_seed": tests,
                "test_nll_mean": float(np.mean(tests)),
                "test_nll_std": float(np.std(tests)),
            }
            if ess:
                rows[name]["importance_ess_per_seed"] = ess
            print(
                f"  {mode:8s} {name:5s} test NLL {np.mean(tests):.3f} +- {np.std(tests):.3f}  "
                f"(valid {valid:.3f}; {setting})"
            )
        if mode == "authors":
            # Burr by quadrature at the importance sampler's chosen setting (the reference)
            setting = rows["burr"]["setting"]
            tests = []
            for seed in range(10):
                xs, ys = resplit(x, y, n_train, n_valid, seed)
                k_all = mlp(setting["depth"], setting["act"], setting["wv"], setting["bv"]).kernel(
                    jnp.asarray(xs)
                )
                tests.append(burr_quadrature_authors(k_all, ys, n_train, n_valid, setting))
            rows["burr_quadrature_same_setting"] = {
                "test_nll_per_seed": tests,
                "test_nll_mean": float(np.mean(tests)),
                "test_nll_std": float(np.std(tests)),
            }
            print(
                f"  authors  burr by quadrature at that setting {np.mean(tests):.3f} +- {np.std(tests):.3f}"
            )
        result["modes"][mode] = {"models": rows, "failed_cholesky": failures[mode]}
    result["grid_s"] = grid_s
    result["total_s"] = time.perf_counter() - start
    return result


def burr_ess(mode, k_all, y, n_train, setting):
    if mode != "authors":
        return None
    eps = 10.0 ** (-6 + setting["e"] / 2)
    noise = eps * float(jnp.mean(jnp.diagonal(k_all)[:n_train]))
    f = Fit(k_all, jnp.asarray(y[:n_train]), n_train, noise, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, post = f.mixture(scale_mixture.BurrXII(*setting["params"]), "importance", jax.random.key(IS_KEY))
    return float(post.ess)


def burr_quadrature_authors(k_all, y, n_train, n_valid, setting):
    eps = 10.0 ** (-6 + setting["e"] / 2)
    noise = eps * float(jnp.mean(jnp.diagonal(k_all)[:n_train]))
    f = Fit(k_all, jnp.asarray(y[:n_train]), n_train, noise, 0.0)
    pred, _ = f.mixture(scale_mixture.BurrXII(*setting["params"]), "quadrature")
    return nll(pred.log_density(jnp.asarray(y[n_train:]), observed=False)[n_valid:])


# ------------------------------------------------------------------ 2. robustness

ROBUST_GRID = {
    "eps": [1e-3, 1e-2, 1e-1, 0.3, 1.0],
    "lv": [0.25, 1.0, 4.0],
    "ab": list(itertools.product([1.0, 2.0, 4.0], [1.0, 2.0, 4.0])),
    "cd": list(itertools.product([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])),
}


def candidates(grid):
    out = [("nngp", (lv,), eps) for lv in grid["lv"] for eps in grid["eps"]]
    out += [("ig", ab, eps) for ab in grid["ab"] for eps in grid["eps"]]
    out += [("burr", cd, eps) for cd in grid["cd"] for eps in grid["eps"]]
    return out


def prediction(fit, name, params):
    if name == "nngp":
        return fit.gaussian(params[0])
    prior = dist.InverseGamma(*params) if name == "ig" else scale_mixture.BurrXII(*params)
    return fit.mixture(prior, "closed_form" if name == "ig" else "quadrature")[0]


def fit_select(k_all, y_train, y_valid, n_train, grid):
    """Best (params, eps) per model by validation NLL; ``k_all`` on [train; valid; ...]."""
    best = {}
    fits = {}
    n_valid = y_valid.shape[0]
    for name, params, eps in candidates(grid):
        lv = params[0] if name == "nngp" else 1.0
        noise = eps / lv
        if noise not in fits:
            fits[noise] = Fit(k_all, y_train, n_train, noise, gp.DEFAULT_JITTER)
        pred = prediction(fits[noise], name, params)
        valid = nll(pred.log_density(y_valid, observed=True)[:n_valid])
        if np.isfinite(valid) and valid < best.get(name, (np.inf,))[0]:
            best[name] = (valid, params, eps)
    return best


def test_models(k_all, y_train, n_train, best, y_tests):
    """Pointwise test log densities per model and per target set (rows after the training ones)."""
    out = {}
    for name, (valid, params, eps) in best.items():
        lv = params[0] if name == "nngp" else 1.0
        fit = Fit(k_all, y_train, n_train, eps / lv, gp.DEFAULT_JITTER)
        pred = prediction(fit, name, params)
        out[name] = {
            "valid_nll": valid,
            "params": params,
            "eps": eps,
            "log_density": {k: np.asarray(pred.log_density(v, observed=True)) for k, v in y_tests.items()},
            "mean": np.asarray(fit.mean),
        }
        if name != "nngp":
            post = fit.mixture(
                dist.InverseGamma(*params) if name == "ig" else scale_mixture.BurrXII(*params),
                "closed_form" if name == "ig" else "quadrature",
            )[1]
            out[name]["posterior_mean_s2"] = float(post.mean())
    return out


def standardise(train, *others):
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 0, std, 1.0)
    return [(a - mean) / std for a in (train, *others)]


def run_stackloss(quick):
    from statsmodels.datasets import stackloss

    data = stackloss.load_pandas()
    x_raw, y_raw = data.exog.to_numpy(float), data.endog.to_numpy(float)
    n = len(y_raw)
    net = mlp(1, "relu", 2.0, 0.09)
    grid = dict(ROBUST_GRID, eps=[1e-2, 1e-1, 1.0]) if quick else ROBUST_GRID
    logp = {"nngp": [], "ig": [], "burr": []}
    chosen = {"nngp": [], "ig": [], "burr": []}
    folds = range(2) if quick else range(n)
    for i in folds:
        # leave point i out; choose hyperparameters by leave-one-out inside the other 20?
        # too slow on 2 cores: choose them on a fixed inner validation of 4 points instead
        rest = np.delete(np.arange(n), i)
        inner_valid = rest[np.random.RandomState(i).permutation(len(rest))[:4]]
        inner_train = np.setdiff1d(rest, inner_valid)
        xt, xv, xi = standardise(x_raw[inner_train], x_raw[inner_valid], x_raw[[i]])
        yt, yv, yi = standardise(y_raw[inner_train], y_raw[inner_valid], y_raw[[i]])
        k_all = net.kernel(jnp.asarray(np.concatenate([xt, xv, xi])))
        best = fit_select(k_all, jnp.asarray(yt), jnp.asarray(np.concatenate([yv, yi])), len(yt), grid)
        # refit on all 20 points with the chosen hyperparameters, score point i
        xt, xi = standardise(x_raw[rest], x_raw[[i]])
        yt, yi = standardise(y_raw[rest], y_raw[[i]])
        scale = y_raw[rest].std()
        k_all = net.kernel(jnp.asarray(np.concatenate([xt, xi])))
        tested = test_models(k_all, jnp.asarray(yt), len(rest), best, {"y": jnp.asarray(yi)})
        for name in logp:
            # on the original scale of stack loss (log-Jacobian of the standardisation)
            logp[name].append(float(tested[name]["log_density"]["y"][0]) - np.log(scale))
            chosen[name].append({"params": tested[name]["params"], "eps": tested[name]["eps"]})
    outliers = [0, 2, 3, 20]  # observations 1, 3, 4, 21 (1-based), the classic outliers
    idx = list(folds)
    out = {"n": n, "kernel": "mlp(1, relu, W_std^2=2, b_std^2=0.09)", "folds": len(idx), "models": {}}
    for name in logp:
        lp = np.array(logp[name])
        is_out = np.array([j in outliers for j in idx])
        out["models"][name] = {
            "loo_nll_all": float(-lp.mean()),
            "loo_nll_outliers": float(-lp[is_out].mean()) if is_out.any() else None,
            "loo_nll_rest": float(-lp[~is_out].mean()) if (~is_out).any() else None,
            "loo_log_density": lp.tolist(),
            "chosen": chosen[name],
        }
        print(
            f"  stackloss {name:5s} LOO NLL all {-lp.mean():.3f}"
            + (f"  outliers {-lp[is_out].mean():.3f}" if is_out.any() else "")
            + (f"  rest {-lp[~is_out].mean():.3f}" if (~is_out).any() else "")
        )
    return out


DIABETES_CORRUPT, DIABETES_CAUCHY_SCALE = 10, 1.0


def run_diabetes(quick):
    from sklearn.datasets import load_diabetes

    x_raw, y_raw = load_diabetes(return_X_y=True)
    net = mlp(2, "relu", 2.0, 0.09)
    grid = dict(ROBUST_GRID, eps=[1e-2, 1e-1, 1.0]) if quick else ROBUST_GRID
    splits = range(1) if quick else range(5)
    per = {
        name: {"clean": [], "corrupted": [], "corrupted_points": [], "valid": []}
        for name in ("nngp", "ig", "burr")
    }
    for s in splits:
        idx = np.random.RandomState(s).permutation(len(y_raw))
        tr, va, te = idx[:300], idx[300:371], idx[371:]
        xt, xv, xe = standardise(x_raw[tr], x_raw[va], x_raw[te])
        yt, yv, ye = standardise(y_raw[tr], y_raw[va], y_raw[te])
        rs = np.random.RandomState(1000 + s)
        bad = rs.choice(len(ye), DIABETES_CORRUPT, replace=False)
        ye_bad = ye.copy()
        ye_bad[bad] += DIABETES_CAUCHY_SCALE * rs.standard_cauchy(DIABETES_CORRUPT)
        k_all = net.kernel(jnp.asarray(np.concatenate([xt, xv, xe])))
        best = fit_select(k_all[: 300 + 71, : 300 + 71], jnp.asarray(yt), jnp.asarray(yv), 300, grid)
        k_test = jnp.asarray(
            np.asarray(k_all)[np.ix_(np.r_[0:300, 371 : len(y_raw)], np.r_[0:300, 371 : len(y_raw)])]
        )
        tested = test_models(
            k_test, jnp.asarray(yt), 300, best, {"clean": jnp.asarray(ye), "bad": jnp.asarray(ye_bad)}
        )
        for name in per:
            per[name]["clean"].append(float(-tested[name]["log_density"]["clean"].mean()))
            per[name]["corrupted"].append(float(-tested[name]["log_density"]["bad"].mean()))
            per[name]["corrupted_points"].append(float(-tested[name]["log_density"]["bad"][bad].mean()))
            per[name]["valid"].append({"params": tested[name]["params"], "eps": tested[name]["eps"]})
    out = {
        "split": "300 train / 71 valid / 71 test, RandomState(s).permutation, s = "
        + ",".join(map(str, splits)),
        "corruption": (
            f"{DIABETES_CORRUPT} of 71 standardised test targets + {DIABETES_CAUCHY_SCALE} * Cauchy"
        ),
        "kernel": "mlp(2, relu, W_std^2=2, b_std^2=0.09)",
        "models": {},
    }
    for name, d in per.items():
        out["models"][name] = {
            **{f"{k}_nll_mean": float(np.mean(v)) for k, v in d.items() if k != "valid"},
            **{f"{k}_nll_std": float(np.std(v)) for k, v in d.items() if k != "valid"},
            "per_split": d,
        }
        print(
            f"  diabetes {name:5s} clean {np.mean(d['clean']):.3f} +- {np.std(d['clean']):.3f}  "
            f"corrupted {np.mean(d['corrupted']):.3f} +- {np.std(d['corrupted']):.3f}  "
            f"(corrupted points {np.mean(d['corrupted_points']):.2f})"
        )
    return out


DIGITS_SIZES = {"train": 600, "valid": 200, "test": 500}
IMPULSE_FRACTION = 0.2


def conv_net(depth=2, wv=2.0, bv=0.01):
    layers = []
    for _ in range(depth):
        layers += [
            nngp.Conv(1, (3, 3), "SAME", W_std=float(np.sqrt(wv)), b_std=float(np.sqrt(bv))),
            nngp.Relu(),
        ]
    return nngp.serial(*layers, nngp.Flatten(), nngp.Dense(1, W_std=1.0))


def run_digits(quick):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images.astype(float), digits.target
    sizes = {"train": 100, "valid": 50, "test": 100} if quick else DIGITS_SIZES
    idx = np.random.RandomState(0).permutation(len(labels))
    tr = idx[: sizes["train"]]
    va = idx[sizes["train"] : sizes["train"] + sizes["valid"]]
    te = idx[sizes["train"] + sizes["valid"] : sizes["train"] + sizes["valid"] + sizes["test"]]
    rs = np.random.RandomState(7)
    noisy = images[te].copy()
    hit = rs.uniform(size=noisy.shape) < IMPULSE_FRACTION
    noisy[hit] = np.where(rs.uniform(size=hit.sum()) < 0.5, 0.0, 16.0)  # salt and pepper
    mean, std = images[tr].mean(), images[tr].std()  # the authors' global standardisation

    def prep(a):
        return jnp.asarray(((a - mean) / std)[..., None])

    onehot = np.eye(10)[labels]
    net = conv_net()
    start = time.perf_counter()
    x_sel = jnp.concatenate([prep(images[tr]), prep(images[va])])
    k_sel = net.kernel(x_sel)
    grid = {
        "eps": [1e-3, 1e-2, 1e-1, 1.0],
        "lv": [0.1, 1.0, 10.0],
        "ab": ROBUST_GRID["ab"],
        "cd": ROBUST_GRID["cd"],
    }
    if quick:
        grid = dict(grid, eps=[1e-2, 1e-1], ab=[(2.0, 2.0)], cd=[(2.0, 2.0)])
    best = fit_select(k_sel, jnp.asarray(onehot[tr]), jnp.asarray(onehot[va]), len(tr), grid)
    out = {
        "sizes": sizes,
        "impulse_fraction": IMPULSE_FRACTION,
        "kernel": "2 x [Conv(3x3, SAME, W_std^2=2, b_std^2=0.01), Relu], Flatten, Dense(1)",
        "tests": {},
    }
    for test_name, test_images in (("clean", images[te]), ("impulse", noisy)):
        x_all = jnp.concatenate([prep(images[tr]), prep(test_images)])
        k_all = net.kernel(x_all)
        tested = test_models(k_all, jnp.asarray(onehot[tr]), len(tr), best, {"y": jnp.asarray(onehot[te])})
        rows = {}
        for name, t in tested.items():
            acc = float(np.mean(np.argmax(t["mean"], axis=1) == labels[te]))
            # per-entry NLL (mean over the n x 10 one-hot entries), as the authors report
            rows[name] = {
                "nll_per_entry": float(-t["log_density"]["y"].mean()),
                "accuracy": acc,
                "params": t["params"],
                "eps": t["eps"],
            }
            if "posterior_mean_s2" in t:
                rows[name]["posterior_mean_s2"] = t["posterior_mean_s2"]
            print(
                f"  digits {test_name:7s} {name:5s} NLL/entry {rows[name]['nll_per_entry']:.3f}  "
                f"acc {acc:.3f}  ({t['params']}, eps {t['eps']})"
            )
        out["tests"][test_name] = rows
    out["seconds"] = time.perf_counter() - start
    return out


def run_robust(quick):
    start = time.perf_counter()
    out = {"stackloss": run_stackloss(quick), "diabetes": run_diabetes(quick), "digits": run_digits(quick)}
    out["seconds"] = time.perf_counter() - start
    return out


# ------------------------------------------------------------------ 3. scale

SCALE_DEPTH, SCALE_D, SCALE_TEST = 3, 10, 100


def numpy_relu_kernel(x, depth, wv, bv, lv):
    """The same NNGP recursion in NumPy (float64, whole matrix at once)."""
    k = x @ x.T / x.shape[1]
    k = wv * k + bv
    for layer in range(depth):
        diag = np.diagonal(k).copy()
        norms = np.sqrt(np.outer(diag, diag))
        cos = np.clip(k / norms, -1.0, 1.0)
        theta = np.arccos(cos)
        k = norms / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * cos)
        k = (wv if layer < depth - 1 else lv) * k + (bv if layer < depth - 1 else 0.0)
    return k


@functools.partial(jax.jit, static_argnames="noise")
def bare_posterior(k, yj, k_cross, k_diag, noise):
    """The peer: Cholesky, solves and log det written directly, in one ``jax.jit``."""
    lower = jnp.linalg.cholesky(k + (noise + gp.DEFAULT_JITTER) * jnp.eye(k.shape[0], dtype=k.dtype))
    alpha = cho_solve((lower, True), yj[:, None])
    half = solve_triangular(lower, k_cross.T, lower=True)
    mean = k_cross @ alpha
    latent = k_diag - jnp.sum(half * half, axis=0)
    return (mean, latent), 2 * jnp.sum(jnp.log(jnp.diagonal(lower)))


def scale_stage(n, stage):
    """One stage at one size, in this process: prints a JSON line with times and max RSS."""
    rs = np.random.RandomState(0)
    x = rs.standard_normal((n, SCALE_D))
    x_test = rs.standard_normal((SCALE_TEST, SCALE_D))
    y = np.sin(x[:, 0]) + 0.1 * rs.standard_normal(n)
    net = nngp.mlp(SCALE_DEPTH, "relu", W_std=float(np.sqrt(2.0)), b_std=0.1, last_W_std=1.0)
    noise = 0.01
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"n": n, "stage": stage}
    if stage == "numpy_kernel":
        start = time.perf_counter()
        k = numpy_relu_kernel(x, SCALE_DEPTH, 2.0, 0.01, 1.0)
        out["run_s"] = time.perf_counter() - start
        reference = np.asarray(net.kernel(jnp.asarray(x[:200])))
        out["max_abs_diff_vs_ppl_200"] = float(np.max(np.abs(k[:200, :200] - reference)))
    elif stage == "ppl_kernel":
        xj = jnp.asarray(x)
        _, first, comp = timed(lambda a: net.kernel(a), xj)
        _, run, _ = timed(lambda a: net.kernel(a), xj)
        out.update(first_s=first, compile_s=comp, run_s=run)
        # The NumPy peer in the same process, after the memory figure (the ratio's source).
        out["max_rss_delta_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
        start = time.perf_counter()
        numpy_relu_kernel(x, SCALE_DEPTH, 2.0, 0.01, 1.0)
        out["same_process_numpy_run_s"] = time.perf_counter() - start
    elif stage in ("ppl_posterior", "ppl_posterior_jit", "bare_posterior"):
        k = net.kernel(jnp.asarray(x))
        k_cross = net.kernel(jnp.asarray(x_test), jnp.asarray(x))
        k_diag = net.kernel(jnp.asarray(x_test), diagonal=True)
        yj = jnp.asarray(y)
        jax.block_until_ready((k, k_cross, k_diag))
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the kernels are inputs here

        if stage.startswith("ppl_posterior"):

            def solve(k, yj, k_cross, k_diag):
                cond = gp.condition(k, yj, noise)
                return gp.predict(cond, k_cross, k_diag), cond.log_det

            if stage == "ppl_posterior_jit":  # the same calls under jax.jit (no finite-factor check)
                solve = jax.jit(solve)
        else:
            solve = functools.partial(bare_posterior, noise=noise)

        _, first, comp = timed(solve, k, yj, k_cross, k_diag)
        runs = [timed(solve, k, yj, k_cross, k_diag)[1] for _ in range(2)]
        out.update(first_s=first, compile_s=comp, run_s=min(runs))
        if stage.startswith("ppl_posterior"):
            # The peer in the same process, back to back (after the memory figure above):
            # the ratio in the table comes from these two timings.
            peer = functools.partial(bare_posterior, noise=noise)
            timed(peer, k, yj, k_cross, k_diag)
            out["same_process_bare_run_s"] = min(timed(peer, k, yj, k_cross, k_diag)[1] for _ in range(2))
    elif stage == "ppl_end_to_end":
        xj, xt, yj = jnp.asarray(x), jnp.asarray(x_test), jnp.asarray(y)

        def end_to_end(xj, yj, xt):
            post = gp.regression(net, xj, yj, noise_variance=noise)
            pred = post.predict(xt)
            return pred.mean, pred.observed_variance

        _, first, comp = timed(end_to_end, xj, yj, xt)
        _, run, _ = timed(end_to_end, xj, yj, xt)
        out.update(first_s=first, compile_s=comp, run_s=run)
    out.setdefault("max_rss_delta_mb", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


# One BLAS thread in the timed subprocesses: this 2-core VM is shared (load average 8-9
# from other jobs), and multithreaded OpenBLAS under that contention made a 1000 x 1000
# Cholesky 30x slower (3.1 s vs 0.10 s); ppl, the bare solve and NumPy all use it.
BLAS_THREADS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def subprocess_json(args, env=None, timeout=1800):
    env = dict(os.environ if env is None else env, **BLAS_THREADS)
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def run_scale(quick, sizes):
    sizes = [500] if quick else sizes
    out = {"depth": SCALE_DEPTH, "d": SCALE_D, "m_test": SCALE_TEST, "sizes": {}}
    for n in sizes:
        row = {}
        stages = (
            "ppl_kernel",
            "numpy_kernel",
            "ppl_posterior",
            "ppl_posterior_jit",
            "bare_posterior",
            "ppl_end_to_end",
        )
        for stage in stages:
            row[stage] = subprocess_json(["--scale-stage", f"{n}:{stage}"])
            print(f"  n={n} {stage}: {row[stage]}")
        # Ratios from timings taken in one process, back to back.
        ppl_kernel, posterior, posterior_jit = (
            row["ppl_kernel"],
            row["ppl_posterior"],
            row["ppl_posterior_jit"],
        )
        row["kernel_numpy_over_ppl"] = ppl_kernel["same_process_numpy_run_s"] / ppl_kernel["run_s"]
        row["posterior_ppl_over_bare"] = posterior["run_s"] / posterior["same_process_bare_run_s"]
        row["posterior_ppl_jit_over_bare"] = posterior_jit["run_s"] / posterior_jit["same_process_bare_run_s"]
        out["sizes"][str(n)] = row
    return out


# ------------------------------------------------------------------ 4. devices


def devices_stage(n):
    rs = np.random.RandomState(0)
    x = jnp.asarray(rs.standard_normal((n, SCALE_D)))
    net = nngp.mlp(SCALE_DEPTH, "relu", W_std=float(np.sqrt(2.0)), b_std=0.1)
    out = {"n": n, "block_size": 256, "device_count": jax.device_count()}
    mats = {}
    for devices in (1, 4):
        k, first, comp = timed(lambda a, d=devices: net.kernel(a, block_size=256, devices=d), x)
        runs = [timed(lambda a, d=devices: net.kernel(a, block_size=256, devices=d), x)[1] for _ in range(3)]
        mats[devices] = np.asarray(k)
        out[f"devices_{devices}"] = {"first_s": first, "compile_s": comp, "run_s": min(runs)}
    out["bit_identical"] = bool(np.array_equal(mats[1], mats[4]))
    out["max_abs_diff"] = float(np.max(np.abs(mats[1] - mats[4])))
    print("RESULT " + json.dumps(out))


def run_devices(quick):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    out = subprocess_json(["--devices-stage", "1000" if quick else "4000"], env=env)
    print(f"  devices: {out}")
    return out


# ------------------------------------------------------------------ main


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--sections", default="synthetic,robust,scale,devices")
    parser.add_argument("--sizes", default="1000,4000,8000")
    parser.add_argument("--scale-stage", help=argparse.SUPPRESS)
    parser.add_argument("--devices-stage", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scale_stage:
        n, stage = args.scale_stage.split(":")
        return scale_stage(int(n), stage)
    if args.devices_stage:
        return devices_stage(int(args.devices_stage))
    sections = args.sections.split(",")
    start = time.perf_counter()
    results = {
        "settings": {"quick": args.quick, "sections": sections, "dtype": "float64"},
        "environment": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "devices": [str(d) for d in jax.devices()],
            "jax": jax.__version__,
            "numpyro": version("numpyro"),
            "scikit-learn": version("scikit-learn"),
            "statsmodels": version("statsmodels"),
            "ppl": version("ppl"),
        },
    }
    if "synthetic" in sections:
        print("== Synthetic A")
        results["synthetic_a"] = run_synthetic(args.quick)
    if "robust" in sections:
        print("== robustness")
        results["robust"] = run_robust(args.quick)
    if "scale" in sections:
        print("== scale")
        results["scale"] = run_scale(args.quick, [int(s) for s in args.sizes.split(",")])
    if "devices" in sections:
        print("== devices")
        results["devices"] = run_devices(args.quick)
    results["total_s"] = time.perf_counter() - start
    print(f"total {results['total_s']:.1f} s")
    name = "nngp_quick.json" if args.quick else "nngp.json"
    previous = os.path.join(os.environ.get("PPL_BENCH_OUT") or os.path.join(HERE, "results"), name)
    if os.path.exists(previous):  # a run of some sections keeps the others' results
        with open(previous) as handle:
            kept = json.load(handle)
        kept.setdefault("section_runs", {})
        results = {**kept, **results, "section_runs": kept["section_runs"]}
    results.setdefault("section_runs", {})[",".join(sections)] = {
        "total_s": results["total_s"],
        "settings": results["settings"],
    }
    write_results(name, results)


if __name__ == "__main__":
    main()
