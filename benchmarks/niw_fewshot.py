"""Hierarchical NIW meta-learning (``ppl.meta.niw``) against MAML, pretrain + fine-tune and
ProtoNet on few-shot regression and classification, in one harness.

Sections (all run; fixed keys; every method of a task uses the same network and the
same training episodes, drawn by ``ppl.meta.train`` from the same key):

* ``regression``: ``sinusoid`` and ``sine_line``, 5 and 10 shots, 10 query points per
  training episode, 25 episodes per meta-step, ``mlp([1, 40, 40, 1])``. Methods: ``niw``
  (the paper's form: every weight per-episode, diagonal, Gauss-Newton, 2 inner steps),
  ``niw_head`` (the last layer per-episode with a full local precision and the fit
  differentiated in the shared features, ``init_precision=1``), ``maml`` (second order,
  1 inner step, inner lr 0.01),
  ``pretrain_finetune`` (10 steps, lr 0.01), and the NIW ablations ``niw_frozen_prior``
  (``train_prior=False``) and ``niw_constant_curvature`` (``curvature=c``). Adam's
  learning rate (and ``c``) per method is chosen by the query MSE on 500 validation
  tasks (key distinct from the test key) after short runs on sinusoid 5-shot, then kept
  for every regression task. Test: 1000 tasks with 100 query points each.
* ``digits``: 4-way 1- and 5-shot on scikit-learn's digits (train classes 0-5, test
  classes 6-9), 15 queries per class, 16 episodes per meta-step, ``mlp([64, 64, 64, 4])``
  for NIW, NIW head, MAML (5 inner steps, inner lr 0.1) and ProtoNet (the 4-dim output is the
  embedding). Test: 1000 episodes of the test split.
* ``scaling``: one jitted meta-step of NIW (Gauss-Newton) and MAML (second order) on
  sinusoid 5-shot, 25 episodes, for 1, 5, 10, 20 inner steps (NIW also with SGLD): run
  time (median of repeated calls, compile separate) and XLA's compiled temp size.
* ``devices``: NIW meta-training episodes/s on 1 vs 4 host devices (a subprocess with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=4``), and the largest difference of
  the final parameters.

    .venv/bin/python benchmarks/niw_fewshot.py [--quick] [--steps N (default 4000)] [--table]

``--quick`` (about 1 minute) is a smoke run; ``--table`` prints the README tables of the
saved results.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("PPL_COMPILATION_CACHE", "0")  # before ppl is imported

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from timing import timed, write_results  # noqa: E402  (benchmarks/timing.py, beside this script)

from ppl import meta  # noqa: E402
from ppl.meta import episodes, niw  # noqa: E402
from ppl.meta.predictive import expected_calibration_error, mean_interval  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TRAIN_KEY, VALIDATION_KEY, TEST_KEY, PREDICT_KEY = 0, 1001, 2002, 3003
LEARNING_RATES = (1e-3, 3e-3, 1e-2)
CURVATURES = (10.0, 100.0, 1000.0)
EVAL_CHUNK = 100  # test episodes per predict call (bounds NIW's predictive memory)


def log(*args):
    print(*args, flush=True)


# --- Methods ---------------------------------------------------------------------------


def regression_learner(method: str, lr: float, curvature: float | None = None):
    net = meta.networks.mlp([1, 40, 40, 1])
    optimizer = optax.adam(lr)
    if method == "niw":
        return niw.learner(net, optimizer=optimizer)
    if method == "niw_head":
        return niw.learner(net, optimizer=optimizer, **HEAD)
    if method == "niw_frozen_prior":
        return niw.learner(net, optimizer=optimizer, train_prior=False)
    if method == "niw_constant_curvature":
        return niw.learner(net, optimizer=optimizer, curvature=curvature)
    if method == "maml":
        return meta.maml(net, optimizer=optimizer, inner_steps=1, inner_lr=0.01)
    if method == "pretrain_finetune":
        return meta.pretrain_finetune(net, optimizer=optimizer, finetune_steps=10, finetune_lr=0.01)
    raise ValueError(method)


# NIW over the last layer only, with a full local precision and the fit differentiated in
# the shared features (ppl's extension; "niw" is the paper's all-weights diagonal form).
HEAD = {"local": niw.last_layer, "covariance": "full", "differentiable_fit": True, "init_precision": 1.0}
REGRESSION_METHODS = (
    "niw",
    "niw_head",
    "maml",
    "pretrain_finetune",
    "niw_frozen_prior",
    "niw_constant_curvature",
)


def digits_learner(method: str, lr: float = 1e-3):
    net = meta.networks.mlp([64, 64, 64, 4])
    optimizer = optax.adam(lr)
    if method == "niw":
        return niw.learner(net, "categorical", num_classes=4, optimizer=optimizer)
    if method == "niw_head":
        return niw.learner(net, "categorical", num_classes=4, optimizer=optimizer, **HEAD)
    if method == "maml":
        return meta.maml(net, "categorical", num_classes=4, optimizer=optimizer, inner_steps=5, inner_lr=0.1)
    if method == "protonet":
        return meta.protonet(net, num_classes=4, optimizer=optimizer)
    raise ValueError(method)


# --- Evaluation ------------------------------------------------------------------------


def test_episodes(source, key, count):
    return jax.block_until_ready(episodes.sample_episodes(source, jax.random.key(key), count))


def predict_chunks(result, batch):
    count = batch.support_x.shape[0]
    chunk = min(EVAL_CHUNK, count)
    out = []
    for start in range(0, count, chunk):
        part = jax.tree.map(lambda leaf, s=start: leaf[s : s + chunk], batch)
        out.append((part, result.predict(jax.random.fold_in(jax.random.key(PREDICT_KEY), start), part)))
    return out


def regression_metrics(result, batch):
    per = {"mse": [], "nll": [], "coverage": []}
    for part, prediction in predict_chunks(result, batch):
        for name, value in prediction.metrics(part.query_y, level=0.9).items():
            per[name].append(np.asarray(value))
    out = {}
    for name, values in per.items():
        mean, half = mean_interval(np.concatenate(values))
        out[name], out[name + "_ci"] = mean, half
    return out


def class_metrics(result, batch):
    per = {"accuracy": [], "nll": []}
    probabilities, labels = [], []
    for part, prediction in predict_chunks(result, batch):
        for name, value in prediction.metrics(part.query_y).items():
            per[name].append(np.asarray(value))
        probabilities.append(np.asarray(prediction.probabilities))
        labels.append(np.asarray(part.query_y))
    out = {}
    for name, values in per.items():
        mean, half = mean_interval(np.concatenate(values))
        out[name], out[name + "_ci"] = mean, half
    out["ece"] = expected_calibration_error(np.concatenate(probabilities), np.concatenate(labels))
    return out


def learned_noise(result):
    params = result.params
    log_noise = params.log_noise if hasattr(params, "log_noise") else params.get("log_noise")
    return None if log_noise is None else float(np.exp(log_noise))


def train(learner, source, steps, num_episodes, key=TRAIN_KEY):
    """(TrainResult or None, wall seconds, compile seconds, error)."""
    start = time.perf_counter()
    try:
        result, wall, compile_s = timed(
            lambda: meta.train(
                learner,
                source,
                steps=steps,
                num_episodes=num_episodes,
                key=jax.random.key(key),
                progress_bar=False,
            )
        )
    except FloatingPointError as error:
        return None, time.perf_counter() - start, None, str(error)
    return result, wall, compile_s, None


def curve(losses, points=10):
    losses = np.asarray(losses, dtype=float)
    size = max(1, len(losses) // points)
    return [float(np.mean(losses[i : i + size])) for i in range(0, len(losses), size)][:points]


# --- Sections --------------------------------------------------------------------------


def validate(settings):
    """Adam's learning rate per method (and NIW's constant curvature) by validation MSE."""
    source = episodes.sinusoid(5, 10)
    batch = test_episodes(episodes.sinusoid(5, 100), VALIDATION_KEY, settings["validation_tasks"])
    runs, chosen = [], {}
    for method in REGRESSION_METHODS:
        if method not in settings["validated_methods"]:
            chosen[method] = {"lr": 1e-3, "curvature": 100.0 if "curvature" in method else None}
            continue
        grid = [(lr, c) for lr in settings["learning_rates"] for c in settings["curvatures"]]
        if method != "niw_constant_curvature":
            grid = [(lr, None) for lr in settings["learning_rates"]]
        best = None
        for lr, c in grid:
            result, wall, _, error = train(
                regression_learner(method, lr, c), source, settings["validation_steps"], 25
            )
            mse = float("inf") if result is None else regression_metrics(result, batch)["mse"]
            runs.append(
                {"method": method, "lr": lr, "curvature": c, "mse": mse, "seconds": wall, "error": error}
            )
            log(f"  validate {method:24s} lr={lr:g} c={c} mse={mse:.4f} ({wall:.1f}s)")
            if best is None or mse < best[0]:
                best = (mse, lr, c)
        chosen[method] = {"lr": best[1], "curvature": best[2], "validation_mse": best[0]}
    return {"runs": runs, "chosen": chosen}


def regression(settings, chosen):
    rows = []
    for task, make in (("sinusoid", episodes.sinusoid), ("sine_line", episodes.sine_line)):
        if task not in settings["tasks"]:
            continue
        for shots in settings["shots"]:
            source = make(shots, 10)
            batch = test_episodes(make(shots, 100), TEST_KEY, settings["test_tasks"])
            for method in REGRESSION_METHODS:
                pick = chosen[method]
                result, wall, compile_s, error = train(
                    regression_learner(method, pick["lr"], pick["curvature"]), source, settings["steps"], 25
                )
                row = {"task": task, "shots": shots, "method": method, **pick, "train_seconds": wall}
                row["compile_seconds"], row["error"] = compile_s, error
                if result is not None:
                    row.update(regression_metrics(result, batch))
                    row["noise"] = learned_noise(result)
                    if hasattr(result.params, "log_gam0"):  # NIW: the learned prior's precision
                        precision = np.exp(np.asarray(result.params.log_gam0) + float(result.params.log_n0))
                        row["prior_precision_quantiles_10_50_90"] = np.quantile(
                            precision, [0.1, 0.5, 0.9]
                        ).tolist()
                        row["n0"], row["l0"] = (
                            float(np.exp(result.params.log_n0)),
                            float(np.exp(result.params.log_l0)),
                        )
                    row["loss_curve"] = curve(result.losses)
                    log(
                        f"  {task} {shots}-shot {method:24s} mse {row['mse']:.4f} +- {row['mse_ci']:.4f} "
                        f"nll {row['nll']:.3f} +- {row['nll_ci']:.3f} cov {row['coverage']:.3f} "
                        f"noise {row['noise']:.4f} ({wall:.1f}s)"
                    )
                else:
                    log(f"  {task} {shots}-shot {method}: {error}")
                rows.append(row)
    return rows


def digits(settings):
    rows = []
    for shots in settings["digits_shots"]:
        source = episodes.digits(4, shots, 15, "train")
        batch = test_episodes(episodes.digits(4, shots, 15, "test"), TEST_KEY, settings["test_tasks"])
        for method in ("niw", "niw_head", "maml", "protonet"):
            result, wall, compile_s, error = train(
                digits_learner(method), source, settings["digits_steps"], 16
            )
            row = {"shots": shots, "method": method, "lr": 1e-3, "train_seconds": wall}
            row["compile_seconds"], row["error"] = compile_s, error
            if result is not None:
                row.update(class_metrics(result, batch))
                row["loss_curve"] = curve(result.losses)
                log(
                    f"  digits 4-way {shots}-shot {method:10s} acc {row['accuracy']:.4f} +- "
                    f"{row['accuracy_ci']:.4f} nll {row['nll']:.3f} ece {row['ece']:.4f} ({wall:.1f}s)"
                )
            else:
                log(f"  digits {shots}-shot {method}: {error}")
            rows.append(row)
    return rows


def scaling(settings):
    net = meta.networks.mlp([1, 40, 40, 1])
    batch = test_episodes(episodes.sinusoid(5, 10), TRAIN_KEY, 25)
    key = jax.random.key(0)
    rows = []
    makers = {
        "niw_gauss_newton": lambda k: niw.learner(net, optimizer=optax.adam(1e-3), inner_steps=k),
        "maml_second_order": lambda k: meta.maml(
            net, optimizer=optax.adam(1e-3), inner_steps=k, inner_lr=0.01
        ),
        "niw_sgld": lambda k: niw.learner(net, optimizer=optax.adam(1e-3), fit="sgld", inner_steps=k),
    }
    for method, make in makers.items():
        for inner in settings["inner_steps"]:
            learner = make(inner)
            state = learner.init(jax.random.key(1))
            update = jax.jit(learner.update)
            begin = time.perf_counter()
            memory = update.lower(key, state, batch).compile().memory_analysis()
            compile_s = time.perf_counter() - begin  # trace + lower + XLA compile
            _, first_wall, _ = timed(update, key, state, batch)
            times = []
            for i in range(settings["timing_repeats"]):
                _, wall, _ = timed(update, jax.random.fold_in(key, i), state, batch)
                times.append(wall)
            row = {
                "method": method,
                "inner_steps": inner,
                "compile_seconds": compile_s,
                "first_call_seconds": first_wall,
                "run_ms_median": 1e3 * float(np.median(times)),
                "temp_bytes": int(memory.temp_size_in_bytes),
                "argument_bytes": int(memory.argument_size_in_bytes),
                "output_bytes": int(memory.output_size_in_bytes),
            }
            log(
                f"  {method:18s} inner {inner:2d}: {row['run_ms_median']:.2f} ms, "
                f"temp {row['temp_bytes'] / 2**20:.2f} MiB (compile {compile_s:.2f}s)"
            )
            rows.append(row)
    return rows


DEVICE_SCRIPT = r"""
import json, sys, time
sys.path.insert(0, "benchmarks")
import jax, numpy as np, optax
from timing import timed
from ppl import meta
from ppl.meta import episodes, niw
steps = int(sys.argv[1])
learner = niw.learner(meta.networks.mlp([1, 40, 40, 1]), optimizer=optax.adam(1e-3))
source = episodes.sinusoid(5, 10)
out = {"devices_seen": len(jax.devices())}
params = {}
for devices in (1, 4):
    run = lambda: meta.train(learner, source, steps=steps, num_episodes=32, key=jax.random.key(0),
                             devices=devices, progress_bar=False)
    first, first_wall, first_compile = timed(run)
    result, wall, compile_s = timed(run)  # cached: run time only
    params[devices] = np.concatenate([np.ravel(np.asarray(leaf)) for leaf in jax.tree.leaves(result.params)])
    out[str(devices)] = {"first_call_seconds": first_wall, "compile_seconds": first_compile,
                         "run_seconds": wall, "compile_in_second_call": compile_s,
                         "episodes_per_second": steps * 32 / wall, "num_devices": result.num_devices}
out["max_abs_param_difference"] = float(np.max(np.abs(params[1] - params[4])))
print("RESULT " + json.dumps(out))
"""


def devices(settings):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    completed = subprocess.run(
        [sys.executable, "-c", DEVICE_SCRIPT, str(settings["device_steps"])],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if completed.returncode != 0:
        raise RuntimeError(completed.stderr[-3000:])
    line = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")][-1]
    out = json.loads(line[len("RESULT ") :])
    out["steps"], out["episodes_per_step"] = settings["device_steps"], 32
    out["speedup_4_over_1"] = out["4"]["episodes_per_second"] / out["1"]["episodes_per_second"]
    log(
        f"  1 device {out['1']['episodes_per_second']:.0f} ep/s, 4 devices "
        f"{out['4']['episodes_per_second']:.0f} ep/s (x{out['speedup_4_over_1']:.2f}), "
        f"max |param diff| {out['max_abs_param_difference']:.2e}"
    )
    return out


def fmt(mean, half, digits=3):
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def print_tables(results):
    """The README's tables, from a results file."""
    chosen = results["validation"]["chosen"]
    print("| method | Adam lr | c | validation MSE |\n|---|---|---|---|")
    for method, pick in chosen.items():
        c = "" if pick["curvature"] is None else f"{pick['curvature']:g}"
        print(f"| {method} | {pick['lr']:g} | {c} | {pick.get('validation_mse', float('nan')):.3f} |")
    print("\n| task | shots | method | query MSE | NLL | 90% coverage | noise σ | train (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in results["regression"]:
        if row.get("error"):
            print(f"| {row['task']} | {row['shots']} | {row['method']} | failed | | | | |")
            continue
        print(
            f"| {row['task']} | {row['shots']} | {row['method']} | {fmt(row['mse'], row['mse_ci'])} | "
            f"{fmt(row['nll'], row['nll_ci'])} | {row['coverage']:.3f} ± {row['coverage_ci']:.3f} | "
            f"{row['noise']:.3f} | {row['train_seconds']:.0f} |"
        )
    print("\n| shots | method | accuracy | NLL | ECE | train (s) |\n|---|---|---|---|---|---|")
    for row in results.get("digits", []):
        print(
            f"| {row['shots']} | {row['method']} | {fmt(row['accuracy'], row['accuracy_ci'])} | "
            f"{fmt(row['nll'], row['nll_ci'])} | {row['ece']:.3f} | {row['train_seconds']:.0f} |"
        )
    print(
        "\n| method | inner steps | run (ms / meta-step) | compile (s) | XLA temp (MiB) "
        "| arguments + outputs (MiB) |"
    )
    print("|---|---|---|---|---|---|")
    for row in results.get("scaling", []):
        print(
            f"| {row['method']} | {row['inner_steps']} | {row['run_ms_median']:.2f} | "
            f"{row['compile_seconds']:.2f} | {row['temp_bytes'] / 2**20:.2f} | "
            f"{(row['argument_bytes'] + row['output_bytes']) / 2**20:.2f} |"
        )
    if "devices" in results:
        d = results["devices"]
        print("\n| devices | episodes/s (run only) | run (s) | compile (s) |\n|---|---|---|---|")
        for n in ("1", "4"):
            print(
                f"| {n} | {d[n]['episodes_per_second']:.0f} | {d[n]['run_seconds']:.2f} "
                f"| {d[n]['compile_seconds']:.2f} |"
            )
        print(f"\nratio {d['speedup_4_over_1']:.2f}, max |param diff| {d['max_abs_param_difference']:.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny steps and task counts: a smoke run")
    parser.add_argument("--steps", type=int, default=None, help="regression meta-steps (default 4000)")
    parser.add_argument("--table", action="store_true", help="print the README tables of the saved results")
    args = parser.parse_args()
    name = "niw_fewshot_quick.json" if args.quick else "niw_fewshot.json"
    if args.table:
        directory = os.environ.get("PPL_BENCH_OUT") or os.path.join(HERE, "results")
        with open(os.path.join(directory, name)) as handle:
            return print_tables(json.load(handle))
    if args.quick:
        settings = {
            "steps": args.steps or 50,
            "tasks": ("sinusoid",),
            "shots": (5,),
            "validated_methods": ("maml",),
            "validation_steps": 20,
            "validation_tasks": 50,
            "learning_rates": (1e-3,),
            "curvatures": (100.0,),
            "test_tasks": 50,
            "digits_steps": 10,
            "digits_shots": (1,),
            "inner_steps": (1, 5),
            "timing_repeats": 3,
            "device_steps": 10,
        }
    else:
        settings = {
            "steps": args.steps or 4000,
            "tasks": ("sinusoid", "sine_line"),
            "shots": (5, 10),
            "validated_methods": REGRESSION_METHODS,
            "validation_steps": 2000,
            "validation_tasks": 500,
            "learning_rates": LEARNING_RATES,
            "curvatures": CURVATURES,
            "test_tasks": 1000,
            "digits_steps": 1000,
            "digits_shots": (1, 5),
            "inner_steps": (1, 5, 10, 20),
            "timing_repeats": 20,
            "device_steps": 300,
        }
    start = time.perf_counter()
    results = {
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        "quick": args.quick,
        "keys": {"train": TRAIN_KEY, "validation": VALIDATION_KEY, "test": TEST_KEY, "predict": PREDICT_KEY},
        "environment": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()],
            "load_average_at_start": os.getloadavg(),
        },
    }
    log("validation (sinusoid 5-shot)")
    results["validation"] = validate(settings)
    log(f"  chosen: {results['validation']['chosen']}")
    log("regression")
    results["regression"] = regression(settings, results["validation"]["chosen"])
    write_results(name, results)
    log("digits")
    results["digits"] = digits(settings)
    write_results(name, results)
    log("scaling in inner steps")
    results["scaling"] = scaling(settings)
    log("devices")
    results["devices"] = devices(settings)
    results["total_seconds"] = time.perf_counter() - start
    log(f"total {results['total_seconds']:.0f}s")
    write_results(name, results)


if __name__ == "__main__":
    main()
