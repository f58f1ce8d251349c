"""Wall time and JAX compile time of one call, and the results file, shared by the benchmarks.

Compile time is the sum of JAX's compile events (tracing, lowering, backend compile)
during the call, read from ``jax.monitoring``.
"""

import json
import os
import time

import jax
from jax import monitoring

COMPILE_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
}
_compile_seconds = [0.0]


def _on_event(event, duration, **_):
    if event in COMPILE_EVENTS:
        _compile_seconds[0] += duration


monitoring.register_event_duration_secs_listener(_on_event)


def compile_seconds() -> float:
    """Compile seconds recorded so far in this process."""
    return _compile_seconds[0]


def timed(fn, *args):
    """(result, wall seconds, compile seconds) of fn(*args), results on the host."""
    compile_before, start = _compile_seconds[0], time.perf_counter()
    result = jax.block_until_ready(fn(*args))
    return result, time.perf_counter() - start, _compile_seconds[0] - compile_before


def write_results(filename: str, results: dict) -> str:
    """Write ``results`` as JSON to ``$PPL_BENCH_OUT`` (default ``benchmarks/results``)/``filename``."""
    directory = os.environ.get("PPL_BENCH_OUT") or os.path.join(os.path.dirname(__file__), "results")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, filename)
    with open(path, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"\nwrote {path}")
    return path
