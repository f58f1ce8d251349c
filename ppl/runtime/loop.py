"""The jitted loop with a progress bar: one implementation for every driver.

A driver's loop body is a jitted ``advance(carry, xs) -> (carry, outputs)`` that runs
``lax.scan`` over the per-step inputs ``xs`` of a chunk of steps. :func:`scan_in_chunks`
cuts the steps into chunks, calls ``advance`` on each, brings the outputs to the host
and moves the bar between chunks. With the bar off the whole loop is one chunk, so the
compiled program is exactly the one a bar-less loop would run: the bar costs nothing
when it is off, and at most two chunk lengths (two compilations) when it is on.
:func:`loop_until` is the same for loops whose length is decided at run time
(adaptive tempering): each call advances a bounded number of steps.

Example:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from ppl.runtime import loop
    >>> advance = jax.jit(lambda total, xs: jax.lax.scan(lambda c, x: (c + x, c + x), total, xs))
    >>> total, partial_sums = loop.scan_in_chunks(advance, 0, np.arange(5), progress_bar=False)
    >>> int(total), partial_sums.tolist()
    (10, [0, 1, 3, 6, 10])
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ppl.runtime.devices import to_host

__all__ = [
    "NUM_UPDATES",
    "ProgressBar",
    "chunk_bounds",
    "loop_until",
    "progress_enabled",
    "scan_in_chunks",
    "strongly_typed",
]

#: Bar updates per loop when the bar is on.
NUM_UPDATES = 20


def progress_enabled(requested: bool | None) -> bool:
    """Whether a loop runs with a progress bar (in chunks).

    ``None`` means: on in an interactive terminal, off when piped or when ``CI`` is set,
    and off under several processes, whose terminals may differ. The answer is the same
    on every process of a run, because it decides how the loop is cut into jitted calls
    (which every process must make alike); only process 0 draws the bar.
    """
    if requested is not None:
        return bool(requested)
    return jax.process_count() == 1 and sys.stderr.isatty() and not os.environ.get("CI")


def strongly_typed(tree):
    """``tree`` with every leaf strongly typed (``jnp.asarray(0.0)`` is weakly typed).

    A loop's outputs are strongly typed; an initial carry with weakly typed leaves would
    make the loop's second chunk compile again. Build initial states through this.
    """
    return jax.tree.map(lambda x: jax.lax.convert_element_type(x, jnp.result_type(x)), tree)


def chunk_bounds(num_steps: int, num_chunks: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of at most ``num_chunks`` chunks covering ``0 .. num_steps``:
    near-equal, with at most two distinct lengths (so at most two compilations)."""
    if num_steps <= 0:
        return []
    size = math.ceil(num_steps / max(1, min(num_chunks, num_steps)))
    return [(start, min(start + size, num_steps)) for start in range(0, num_steps, size)]


class ProgressBar:
    """One bar for a whole run (``total`` units of ``unit``); a no-op when disabled."""

    def __init__(self, total: float, enabled: bool, *, unit: str = "step", description: str = ""):
        shown = enabled and jax.process_index() == 0
        self._bar = tqdm(total=total, unit=unit, disable=not shown, dynamic_ncols=True, desc=description)

    def advance(self, amount: float) -> None:
        self._bar.update(amount)

    def close(self) -> None:
        self._bar.close()


def scan_in_chunks(
    advance: Callable,
    carry,
    xs,
    *,
    progress_bar: bool | None,
    description: str = "",
    unit: str = "step",
    scale: int = 1,
    num_chunks: int | None = None,
    step_axis: int = 0,
    keep: bool = True,
    on_chunk: Callable | None = None,
):
    """Run ``advance`` over the steps of ``xs`` in chunks; return ``(carry, outputs)``.

    Args:
        advance: ``(carry, xs_chunk) -> (carry, outputs)``, jitted by the caller.
        carry: the initial loop state (it stays on the devices between chunks).
        xs: pytree of per-step inputs (NumPy arrays, leading axis = steps).
        progress_bar: see :func:`progress_enabled`.
        description, unit: the bar's label and unit; ``scale`` units per step (e.g. chains).
        num_chunks: ``None``: one chunk without a bar, :data:`NUM_UPDATES` with one.
        step_axis: the steps axis of ``outputs`` (1 when replicas come first).
        keep: bring the outputs to the host and return them concatenated along
            ``step_axis``; with ``False`` they stay on the devices and are only passed
            to ``on_chunk``, which moves what it needs (e.g. warmup divergences).
        on_chunk: ``(carry, outputs, stop) -> None`` after each chunk, with the chunk's
            outputs (on the host when ``keep``) and the index one past its last step; it
            may raise.
    """
    num_steps = len(jax.tree.leaves(xs)[0]) if jax.tree.leaves(xs) else 0
    enabled = progress_enabled(progress_bar)
    chunks = chunk_bounds(num_steps, num_chunks or (NUM_UPDATES if enabled else 1))
    bar = ProgressBar(num_steps * scale, enabled, unit=unit, description=description)
    kept = []
    try:
        for start, stop in chunks:
            carry, outputs = advance(carry, jax.tree.map(lambda x, a=start, b=stop: x[a:b], xs))
            if keep:
                outputs = to_host(outputs)
            if on_chunk is not None:
                on_chunk(carry, outputs, stop)
            if keep:
                kept.append(outputs)
            bar.advance((stop - start) * scale)
    finally:
        bar.close()
    if not keep or not kept:
        return carry, None
    return carry, jax.tree.map(lambda *parts: np.concatenate(parts, axis=step_axis), *kept)


def loop_until(
    advance: Callable,
    carry,
    *,
    status: Callable,
    progress_bar: bool | None,
    description: str = "",
    max_calls: int,
):
    """Call ``advance(carry) -> carry`` until ``status(carry)`` says it is done.

    ``status(carry) -> (done, fraction)`` reads the state once per call (on the host:
    ``done`` a bool, ``fraction`` in ``[0, 1]`` for the bar, e.g. the smallest
    temperature of all islands). ``advance`` runs a bounded number of steps per call
    (all of them when the bar is off: the caller sizes it with :func:`progress_enabled`).
    ``max_calls`` bounds the number of calls.
    """
    bar = ProgressBar(100.0, progress_enabled(progress_bar), unit="%", description=description)
    shown = 0.0
    try:
        for _ in range(max_calls):
            carry = advance(carry)
            done, fraction = status(carry)
            bar.advance(max(0.0, 100.0 * float(fraction) - shown))
            shown = max(shown, 100.0 * float(fraction))
            if done:
                break
    finally:
        bar.close()
    return carry
