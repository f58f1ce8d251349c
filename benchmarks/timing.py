"""Wall time and JAX compile time of one call, shared by the benchmarks.

Compile time is the sum of JAX's compile events (tracing, lowering, backend compile)
during the call, read from ``jax.monitoring``.
"""

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
