"""Predictive resampling: ``num_paths`` independent paths of ``num_steps`` imputed
observations, spread over the runtime's device plan, and the draws they leave.

A path starts from the fitted predictive ``P_n`` (the same state for every path, plus
whatever :func:`run_paths`'s ``start`` adds per path, e.g. Bayesian-bootstrap weights on
the covariates) and applies ``step(state, path_key, t, data)`` for ``t = 0 ..
num_steps - 1``. Path ``b`` has the key ``k_b = fold_in(key, b)``; its start uses
``fold_in(k_b, 0)`` and its step ``t`` ``fold_in(fold_in(k_b, 1), t)``, so the paths
do not depend on the number of devices or on how the progress bar cuts the loop: the
same key gives the same draws on 1 or N devices. The steps run as one ``lax.scan``
per chunk of the runtime's progress loop.

Convergence: the readout (e.g. the density on the grid) is also recorded
``max(1, num_steps // 10)`` steps before the end; :attr:`Resampled.change` is the mean
absolute change over that last tenth of the steps, per path.

Example:
    >>> import numpy as np
    >>> from ppl.processes.martingale.resampling import Resampled
    >>> result = Resampled(draws={"mean": np.zeros(4)}, change=np.zeros(4), num_steps=10)
    >>> result.to_arviz().posterior["mean"].dims
    ('chain', 'draw')
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ppl.runtime import devices as runtime_devices
from ppl.runtime import keys as runtime_keys
from ppl.runtime import loop
from ppl.runtime.results import Draws

__all__ = ["Resampled", "grid_mean", "grid_quantile", "run_paths"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Resampled:
    """Draws of functionals from a martingale posterior, one per path.

    Attributes:
        draws: name -> ``(num_paths, ...)`` (e.g. ``density (num_paths, grid_point)``).
        dims: name -> names of the axes after the path axis.
        coords: dim -> coordinate values.
        change: ``(num_paths,)`` mean absolute change of the path's readout over its
            last tenth of steps (small: converged).
        num_steps: imputed observations per path.
        method: recorded on the ArviZ ``posterior`` group.
    """

    draws: dict[str, np.ndarray]
    change: np.ndarray
    num_steps: int
    dims: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    coords: dict[str, Any] = dataclasses.field(default_factory=dict)
    method: str = "predictive resampling"

    def __getitem__(self, name: str) -> np.ndarray:
        return self.draws[name]

    @property
    def num_paths(self) -> int:
        return len(self.change)

    def with_functional(self, name: str, values, dims: tuple[str, ...] = ()) -> Resampled:
        """A copy with one more functional ``values (num_paths, ...)`` named ``name``.

        Raises:
            ValueError: if ``values`` does not have one row per path.
        """
        values = np.asarray(values)
        if values.shape[:1] != (self.num_paths,) or values.ndim != 1 + len(dims):
            raise ValueError(
                f"functional {name!r} must have shape (num_paths={self.num_paths}, ...) with one axis per "
                f"name in dims={dims}, got {values.shape}"
            )
        return dataclasses.replace(
            self, draws=self.draws | {name: values}, dims=self.dims | {name: tuple(dims)}
        )

    def to_arviz(self):
        """ArviZ data: every functional in ``posterior`` with one chain whose draws are the
        paths (coordinate ``path`` along ``draw``), ``change`` in ``sample_stats``."""
        draws = Draws(
            samples={name: value[None] for name, value in self.draws.items()},
            sample_stats={"change": self.change[None]},
            dims=self.dims,
            coords=self.coords,
            attrs={"inference": f"martingale posterior ({self.method})", "num_steps": self.num_steps},
        )
        data = draws.to_arviz()
        path = np.arange(self.num_paths)
        for group in ("posterior", "sample_stats"):
            node = data[group]  # a Dataset (arviz 0.x) or a DataTree node (arviz 1.x)
            dataset = node.to_dataset() if hasattr(node, "to_dataset") else node
            data[group] = dataset.assign_coords(path=("draw", path))
        return data


def grid_mean(grid, density) -> np.ndarray:
    """``int y p(y) dy`` by the trapezoid rule on a sorted 1-D ``grid (g,)``, for densities
    ``(..., g)``; accurate when the grid covers the mass."""
    density = np.asarray(density)
    grid = np.asarray(grid, dtype=density.dtype)
    return np.trapezoid(grid * density, grid, axis=-1) / np.trapezoid(density, grid, axis=-1)


def grid_quantile(grid, cdf, q: float) -> np.ndarray:
    """The ``q``-quantile by linear interpolation of CDFs ``(..., g)`` on a sorted 1-D
    ``grid (g,)`` (clamped to the grid's ends)."""
    grid = np.asarray(grid, dtype=float)
    cdf = np.maximum.accumulate(np.asarray(cdf), axis=-1)
    flat = cdf.reshape(-1, cdf.shape[-1])
    values = np.array([np.interp(q, row, grid) for row in flat])
    return values.reshape(cdf.shape[:-1])


def run_paths(
    step: Callable,
    readout: Callable,
    state,
    data,
    *,
    key,
    num_paths: int,
    num_steps: int,
    start: Callable | None = None,
    devices: int | None = None,
    progress_bar: bool | None = None,
    description: str = "resampling",
):
    """Run the paths; return ``(final states (num_paths, ...), readouts, change (num_paths,))``.

    Args:
        step: ``(state, path_key, t, data) -> state``, one imputed observation; a
            module-level function (it keys the compilation cache).
        readout: ``(state, data) -> array``, the quantity whose convergence is reported.
        state: the fitted predictive's state, shared by every path at the start.
        data: arrays every step reads (fitted data, bandwidths, ...).
        start: ``(state, start_key, data) -> state`` to make a path's own start (optional,
            module-level).
        key, num_paths, num_steps, devices, progress_bar: see the estimators' ``resample``.
    """
    key = runtime_keys.validate_key(key)
    plan = runtime_devices.plan_devices(num_paths, devices, replicas="num_paths")
    path_keys = runtime_keys.replica_keys(key, plan.padded_replicas)
    states = _start(state, path_keys, data, start=start)
    window = max(1, num_steps // 10)
    earlier = _readouts(states, data, readout=readout)
    advance = functools.partial(
        _advance, data=data, record_at=jnp.asarray(num_steps - window), step=step, readout=readout, plan=plan
    )
    (states, earlier, _), _ = loop.scan_in_chunks(
        advance,
        (states, earlier, path_keys),
        np.arange(num_steps),
        progress_bar=progress_bar,
        description=description,
        unit="path step",
        scale=num_paths,
        keep=False,
    )
    final = _readouts(states, data, readout=readout)
    states, final, earlier = runtime_devices.to_host((states, final, earlier))
    change = np.mean(np.abs(final - earlier).reshape(len(final), -1), axis=1)
    trim = functools.partial(jax.tree.map, lambda a: a[:num_paths])
    return trim(states), trim(final), change[:num_paths]


@functools.partial(jax.jit, static_argnames=("start",))
def _start(state, path_keys, data, *, start):
    states = jax.tree.map(lambda a: jnp.broadcast_to(a, (len(path_keys), *jnp.shape(a))), state)
    if start is None:
        return states
    start_keys = jax.vmap(jax.random.fold_in, (0, None))(path_keys, 0)
    return jax.vmap(start, (0, 0, None))(states, start_keys, data)


@functools.partial(jax.jit, static_argnames=("readout",))
def _readouts(states, data, *, readout):
    return jax.vmap(readout, (0, None))(states, data)


@functools.partial(jax.jit, static_argnames=("step", "readout", "plan"))
def _advance(carry, steps, *, data, record_at, step, readout, plan):
    def one_path(per_path, shared):
        (state, earlier, path_key), (steps, data) = per_path, shared

        def body(inner, t):
            state, earlier = inner
            state = step(state, jax.random.fold_in(jax.random.fold_in(path_key, 1), t), t, data)
            earlier = jax.lax.cond(t == record_at - 1, lambda: readout(state, data), lambda: earlier)
            return (state, earlier), None

        (state, earlier), _ = jax.lax.scan(body, (state, earlier), steps)
        return state, earlier, path_key

    mapped = runtime_devices.map_replicas(one_path, plan, method="vectorized")
    return mapped(carry, (steps, data)), None
