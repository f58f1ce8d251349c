"""Neural processes on 1-D GP regression: CNP, latent NP and MPNP against the oracle GP.

One model of each kind is trained per noise kind (Gaussian, Student-t) on *mixed* tasks
(the kernel drawn per task from RBF / Matern-5/2 / Periodic) with the generator of
``ppl.processes.neural_process`` (MPNP's data pipeline), then evaluated on fixed test tasks
of each kernel with the same noise kind (test key ``jax.random.key(43)``, NPF's seed;
kernel ``i``, noise ``j`` from ``fold_in(fold_in(key, i), j)``). Reported: context and target
log-likelihood per point (per-point marginal predictive; targets exclude the context),
mean and standard error over tasks, and the oracle GP with the true hyperparameters
(exact under Gaussian noise; under t-noise the *Gaussian-noise oracle*, sigma_eps = 0.02,
which a model can beat). Models run in float32; the oracle in float64.

The training budget is a CPU budget (``--steps`` x ``--batch-size`` tasks per model, Adam 5e-4,
hidden 64, r_dim 64, MPNP with K = 5 draws of 16 pseudo representations), far below the
paper's 25.6M tasks: the numbers are relative orderings at this budget, not a reproduction.
Compile time is reported apart from run time.

    python benchmarks/neural_process.py [--quick] [--steps 4000] [--batch-size 32] [--num-test 2000]
"""

import argparse
import os
import platform
import time
from importlib.metadata import version

os.environ.setdefault("PPL_COMPILATION_CACHE", "0")  # before ppl is imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from timing import compile_seconds, write_results  # noqa: E402  (benchmarks/timing.py, beside this script)

from ppl.processes import neural_process as npr  # noqa: E402

TEST_SEED = 43
EVAL_CHUNK = 250
NUM_EVAL_SAMPLES = 16


def models():
    return {
        "CNP": npr.cnp(hidden=64, r_dim=64),
        "NP": npr.latent_np(hidden=64, r_dim=64),
        "MPNP": npr.mpnp(hidden=64, r_dim=64, num_samples=5, num_pseudo=16),
    }


def test_tasks(kernel: str, noise: str, num_tasks: int) -> npr.TaskBatch:
    key = jax.random.fold_in(
        jax.random.fold_in(jax.random.key(TEST_SEED), npr.KERNELS.index(kernel)), npr.NOISES.index(noise)
    )
    return npr.sample_tasks(npr.gp_tasks(kernel, noise), key, num_tasks)


def oracle(batch: npr.TaskBatch):
    """The oracle's log-likelihoods in float64 on the (float32) test tasks."""
    jax.config.update("jax_enable_x64", True)
    try:
        wide = npr.TaskBatch(
            *(
                jnp.asarray(
                    np.asarray(a, np.float64)
                    if np.issubdtype(np.asarray(a).dtype, np.floating)
                    else np.asarray(a)
                )
                for a in batch
            )
        )
        result = npr.oracle_log_likelihood(wide)
        return {name: np.asarray(value) for name, value in result._asdict().items()}
    finally:
        jax.config.update("jax_enable_x64", False)


def evaluate(model, params, batch: npr.TaskBatch):
    context, target = [], []
    for start in range(0, batch.x_target.shape[0], EVAL_CHUNK):
        chunk = npr.TaskBatch(*(a[start : start + EVAL_CHUNK] for a in batch))
        c, t = model.log_likelihood(params, jax.random.key(start), chunk, NUM_EVAL_SAMPLES)
        context.append(np.asarray(c))
        target.append(np.asarray(t))
    return {"context_ll": np.concatenate(context), "target_ll": np.concatenate(target)}


def summary(values):
    values = np.asarray(values, np.float64)
    return {"mean": float(values.mean()), "se": float(values.std(ddof=1) / np.sqrt(len(values)))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-test", type=int, default=2000)
    args = parser.parse_args()
    steps, batch_size, num_test = (60, 8, 100) if args.quick else (args.steps, args.batch_size, args.num_test)
    start = time.perf_counter()
    results = {
        "settings": {
            "quick": args.quick,
            "steps": steps,
            "batch_size": batch_size,
            "num_test_tasks_per_kernel": num_test,
            "training_tasks": "mixed kernels, one model per noise kind",
            "optimizer": "adam 5e-4",
            "eval_samples": NUM_EVAL_SAMPLES,
            "test_seed": TEST_SEED,
            "dtype": "float32 models, float64 oracle",
            "models": {name: model._asdict() for name, model in models().items()},
        },
        "environment": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "devices": [str(d) for d in jax.devices()],
            "jax": jax.__version__,
            "optax": version("optax"),
            "ppl": version("ppl"),
        },
        "training": {},
        "evaluation": {},
    }
    for noise in npr.NOISES:
        tests = {kernel: test_tasks(kernel, noise, num_test) for kernel in npr.KERNELS}
        for kernel, batch in tests.items():
            entry = results["evaluation"].setdefault(f"{kernel}/{noise}", {})
            entry["oracle"] = {name: summary(value) for name, value in oracle(batch).items()}
        for name, model in models().items():
            compile_before, begin = compile_seconds(), time.perf_counter()
            params, losses = npr.fit(
                model,
                npr.gp_tasks("mixed", noise),
                key=jax.random.key(0),
                steps=steps,
                batch_size=batch_size,
                progress_bar=False,
            )
            wall, compiled = time.perf_counter() - begin, compile_seconds() - compile_before
            results["training"][f"{name}/{noise}"] = {
                "wall_s": wall,
                "compile_s": compiled,
                "run_s": wall - compiled,
                "final_loss_mean_last_100": float(np.mean(losses[-100:])),
            }
            print(
                f"{name:5s} {noise:9s} trained in {wall:6.1f} s (compile {compiled:.1f} s), "
                f"final loss {np.mean(losses[-100:]):.3f}"
            )
            for kernel, batch in tests.items():
                begin = time.perf_counter()
                lls = evaluate(model, params, batch)
                entry = results["evaluation"][f"{kernel}/{noise}"]
                entry[name] = {key: summary(value) for key, value in lls.items()}
                entry[name]["eval_s"] = time.perf_counter() - begin
    results["total_s"] = time.perf_counter() - start
    print_table(results)
    print(f"total {results['total_s']:.1f} s")
    write_results("neural_process_quick.json" if args.quick else "neural_process.json", results)


def print_table(results):
    names = ["oracle", *models()]
    print("\n| kernel | noise | " + " | ".join(f"{n} ctx | {n} tar" for n in names) + " |")
    print("|---|---|" + "---|---|" * len(names))
    for label, entry in results["evaluation"].items():
        kernel, noise = label.split("/")
        cells = []
        for name in names:
            for key in ("context_ll", "target_ll"):
                value = entry[name][key]
                cells.append(f"{value['mean']:.3f} ± {value['se']:.3f}")
        print(f"| {kernel} | {noise} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
