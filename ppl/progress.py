"""Progress bars for long jitted loops.

Drivers run a phase (warmup, sampling) as a few jitted chunks of ``lax.scan`` and
update the bar on the host between chunks. With the bar off a phase is one chunk,
so the compiled program is exactly the one a bar-less loop would run: the bar costs
nothing when it is off.
"""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm

__all__ = ["ProgressBar", "chunk_sizes", "progress_enabled"]

NUM_UPDATES = 20


def progress_enabled(requested: bool | None) -> bool:
    """``None`` means: on in an interactive terminal, off when piped or when ``CI`` is set."""
    if requested is not None:
        return bool(requested)
    return sys.stderr.isatty() and not os.environ.get("CI")


def chunk_sizes(first: int, num_steps: int, enabled: bool) -> list[tuple[int, int]]:
    """``(start, length)`` chunks covering steps ``first .. first + num_steps``.

    One chunk when the bar is off; otherwise ``NUM_UPDATES`` near-equal chunks (at
    most two distinct lengths, so at most two extra compilations).
    """
    if num_steps == 0:
        return []
    size = num_steps if not enabled else max(1, -(-num_steps // NUM_UPDATES))
    return [(first + start, min(size, num_steps - start)) for start in range(0, num_steps, size)]


class ProgressBar:
    """One bar for a whole run (``total`` = chains x steps); a no-op when disabled."""

    def __init__(self, total: int, num_chains: int, enabled: bool):
        self.num_chains = num_chains
        self._bar = tqdm(total=total, unit="draw", disable=not enabled, dynamic_ncols=True)

    def phase(self, name: str) -> None:
        self._bar.set_description(name)

    def advance(self, steps: int) -> None:
        self._bar.update(steps * self.num_chains)

    def close(self) -> None:
        self._bar.close()
