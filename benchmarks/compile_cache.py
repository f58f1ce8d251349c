"""The first call in a fresh Python process, with and without the persistent compilation cache.

For each workload (NUTS on eight schools, ``ppl.vi.fit`` of an ELBO, TDS on a Gaussian
mixture) three fresh processes run the same first call:

* ``off``: ``PPL_COMPILATION_CACHE=0`` (every executable compiled by XLA);
* ``cold``: an empty cache directory (compiled, then written);
* ``warm``: the same directory again (executables read back from disk).

Reported: the wall seconds of the first call inside the process (the import of ``ppl`` is
separate), and JAX's own compile events in it (tracing + lowering + XLA backend compile).
Tracing and lowering still happen with a warm cache; XLA's backend compile is what it saves.

    python benchmarks/compile_cache.py [--quick]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKLOADS = {
    "nuts_eight_schools": """
        from tests.models import SIGMA, Y, eight_schools
        run = lambda: ppl.nuts(eight_schools, SIGMA, y=Y, key=jax.random.key(0), chains=4,
                               warmup=500, draws=500)
    """,
    "vi_fit_elbo": """
        import optax
        from tests.vi.models import NORMAL_PARAMS, Y, normal_guide, normal_model
        elbo = ppl.vi.objectives.elbo(normal_model, normal_guide())
        run = lambda: ppl.vi.fit(elbo, NORMAL_PARAMS, Y, optimizer=optax.adam(0.02), steps=1000,
                                 key=jax.random.key(0), num_samples=8)
    """,
    "tds_mixture_d8": """
        from ppl.smc import diffusion as D
        mixture, observation, _ = D.grid_mixture_problem(1, 8, 2)
        prior = mixture.diffusion_prior(D.vp())
        run = lambda: D.tds(prior, observation, key=jax.random.key(0), num_particles=1000, num_steps=100)
    """,
}

HARNESS = """
import time, warnings
warnings.simplefilter("ignore")
start = time.perf_counter()
import jax, ppl
imported = time.perf_counter() - start
COMPILE = {"/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
           "/jax/core/compile/backend_compile_duration"}
seconds = {name: 0.0 for name in COMPILE}
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **_: event in COMPILE and seconds.__setitem__(event, seconds[event] + duration)
)
"""

REPORT = """
start = time.perf_counter()
result = run()  # every driver returns host arrays: the call has finished
first = time.perf_counter() - start
print(json.dumps({"import_s": imported, "first_call_s": first,
                  "backend_compile_s": seconds["/jax/core/compile/backend_compile_duration"],
                  "trace_and_lower_s": seconds["/jax/core/compile/jaxpr_trace_duration"]
                  + seconds["/jax/core/compile/jaxpr_to_mlir_module_duration"],
                  "cache_dir": jax.config.jax_compilation_cache_dir}))
"""


def script(workload: str) -> str:
    return "import json\n" + HARNESS + textwrap.dedent(WORKLOADS[workload]) + REPORT


def fresh_process(workload: str, env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", script(workload)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(quick: bool) -> None:
    base = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    base.pop("PPL_COMPILATION_CACHE", None)
    rows = []
    workloads = ["nuts_eight_schools"] if quick else list(WORKLOADS)
    for workload in workloads:
        with tempfile.TemporaryDirectory() as directory:
            runs = {
                "off": fresh_process(workload, dict(base, PPL_COMPILATION_CACHE="0")),
                "cold": fresh_process(workload, dict(base, PPL_COMPILATION_CACHE_DIR=directory)),
                "warm": fresh_process(workload, dict(base, PPL_COMPILATION_CACHE_DIR=directory)),
            }
        row = {"workload": workload, **{name: run for name, run in runs.items()}}
        row["warm_vs_off_first_call"] = runs["warm"]["first_call_s"] / runs["off"]["first_call_s"]
        rows.append(row)
        off, cold, warm = runs["off"], runs["cold"], runs["warm"]
        print(
            f"{workload}: first call off {off['first_call_s']:.2f} s (XLA {off['backend_compile_s']:.2f} s), "
            f"cold {cold['first_call_s']:.2f} s, warm {warm['first_call_s']:.2f} s "
            f"(XLA {warm['backend_compile_s']:.2f} s, trace+lower {warm['trace_and_lower_s']:.2f} s); "
            f"import {warm['import_s']:.2f} s",
            flush=True,
        )
    results = {
        "environment": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            **{pkg: version(pkg) for pkg in ("jax", "numpyro", "blackjax", "ppl")},
        },
        "rows": rows,
    }
    name = "compile_cache_quick" if quick else "compile_cache"
    path = ROOT / "benchmarks" / "results" / f"{name}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="NUTS only")
    main(parser.parse_args().quick)
