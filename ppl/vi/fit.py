"""Fit an objective by stochastic gradient ascent with an Optax optimiser."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec

from ppl import arviz as ppl_arviz
from ppl import progress
from ppl.vi.language import Expectation, sample_guide

__all__ = ["VIResult", "fit"]

NONFINITE_MODES = ("skip", "stop", "raise")
DEVICE_AXIS = "estimates"


@dataclass(frozen=True)
class VIResult:
    """What :func:`fit` returns.

    Attributes:
        params: the final parameters (the last finite ones; see ``num_nonfinite``).
        objective: ``(steps,)`` mean objective estimate at each step.
        trajectory_steps: ``(T,)`` steps at which ``trajectory`` was recorded.
        trajectory: the parameters at those steps, each leaf with a leading ``T`` axis.
        num_nonfinite: steps whose estimate or update was not finite (not applied).
        first_nonfinite_step: the first such step, or ``None``.
    """

    params: Any
    objective: np.ndarray
    trajectory_steps: np.ndarray
    trajectory: Any
    num_nonfinite: int
    first_nonfinite_step: int | None

    def sample_guide(self, guide: Callable, rng_key: jax.Array, num_samples: int, *args) -> dict:
        """``num_samples`` draws of ``guide(params, *args)``, each ``(num_samples, ...)``."""
        return sample_guide(guide, rng_key, num_samples, self.params, *args)

    def to_arviz(self, guide: Callable, rng_key: jax.Array, num_samples: int, *args, dims=None, coords=None):
        """The guide's draws as ArviZ data: a ``posterior`` group with one chain of
        ``num_samples`` draws, and the objective trace in ``sample_stats``-free attrs."""
        draws = self.sample_guide(guide, rng_key, num_samples, *args)
        draws = {name: np.asarray(value)[None] for name, value in draws.items()}
        posterior = ppl_arviz.to_dataset(draws, dims or {}, coords or {})
        posterior.attrs["inference"] = "variational"
        posterior.attrs["final_objective"] = float(self.objective[-1])
        return ppl_arviz.from_groups({"posterior": posterior})


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _minibatch(rng_key, args, batch_size, batch_argnums):
    if batch_size is None:
        return args
    size = jnp.shape(args[batch_argnums[0]])[0]
    indices = jax.random.choice(rng_key, size, (batch_size,), replace=False)
    return tuple(
        jax.tree.map(lambda leaf: jnp.take(leaf, indices, axis=0), arg) if i in batch_argnums else arg
        for i, arg in enumerate(args)
    )


@functools.lru_cache(maxsize=64)
def _chunk_program(objective, optimizer, num_samples, batch_size, batch_argnums, mode, num_devices, length):
    """A jitted run of ``length`` steps; cached so repeated fits do not recompile."""

    def local_estimates(keys, params, args):
        values, grads = jax.vmap(objective.value_and_grad_estimate, in_axes=(0, None, *([None] * len(args))))(
            keys, params, *args
        )
        return jnp.mean(values), jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)

    estimates = local_estimates
    if num_devices > 1:
        mesh = Mesh(jax.local_devices()[:num_devices], (DEVICE_AXIS,))

        def per_device(keys, params, args):
            value, grads = local_estimates(keys, params, args)
            return jax.lax.pmean((value, grads), DEVICE_AXIS)

        estimates = jax.shard_map(
            per_device,
            mesh=mesh,
            in_specs=(PartitionSpec(DEVICE_AXIS), PartitionSpec(), PartitionSpec()),
            out_specs=PartitionSpec(),
            check_vma=False,
        )

    def step(carry, step_index, rng_key, args):
        params, opt_state, num_bad, first_bad, stopped = carry
        step_key = jax.random.fold_in(rng_key, step_index)
        batch_key, estimate_key = jax.random.split(step_key)
        batch = _minibatch(batch_key, args, batch_size, batch_argnums)
        value, grads = estimates(jax.random.split(estimate_key, num_samples), params, batch)
        # Optax minimises; the objective is maximised.
        updates, new_opt_state = optimizer.update(jax.tree.map(jnp.negative, grads), opt_state, params)
        new_params = optax.apply_updates(params, updates)
        finite = jnp.isfinite(value) & _all_finite(grads) & _all_finite(new_params)
        apply = finite & ~stopped
        keep = functools.partial(jax.tree.map, lambda new, old: jnp.where(apply, new, old))
        first_bad = jnp.where(~finite & (first_bad < 0), step_index, first_bad)
        carry = (
            keep(new_params, params),
            keep(new_opt_state, opt_state),
            num_bad + (~finite).astype(jnp.int32),
            first_bad,
            stopped | (~finite & (mode != "skip")),
        )
        return carry, value

    @jax.jit
    def run(carry, first_step, rng_key, args):
        return jax.lax.scan(lambda c, i: step(c, i, rng_key, args), carry, first_step + jnp.arange(length))

    return run


def fit(
    objective: Expectation,
    init_params: Any,
    *args: Any,
    optimizer: optax.GradientTransformation,
    steps: int,
    key: jax.Array,
    num_samples: int = 1,
    batch_size: int | None = None,
    batch_argnums: Sequence[int] = (0,),
    on_nonfinite: str = "skip",
    devices: int | None = 1,
    progress_bar: bool | None = None,
) -> VIResult:
    """Maximise ``objective(params, *args)`` by stochastic gradient ascent.

    Each step averages ``num_samples`` independent gradient estimates (``vmap``-ed;
    split across ``devices`` with ``jax.shard_map`` when more than one) and applies
    one ``optimizer`` update to the parameters. One jitted ``lax.scan`` runs each
    block of steps; the parameters are recorded at the end of each of ~20 blocks.

    Args:
        objective: an :class:`~ppl.vi.Expectation` over ``(params, *args)``.
        init_params: pytree of initial parameters.
        *args: data passed to the objective after the parameters.
        optimizer: any Optax transformation (it minimises ``-objective``).
        steps: number of optimisation steps.
        key: ``jax.random`` key; step ``i`` uses ``fold_in(key, i)`` (``key=`` as in
            :func:`ppl.nuts`).
        num_samples: gradient estimates averaged per step.
        batch_size: if set, each step draws ``batch_size`` rows without replacement
            from the arguments in ``batch_argnums`` (indices into ``args``; same
            leading length). Scale the likelihood to the full data inside the model
            (e.g. ``numpyro.handlers.scale(scale=N / batch_size)``) when the objective
            is not a per-datum average.
        on_nonfinite: a step whose estimate, gradient or update is NaN/inf is never
            applied. ``"skip"`` goes on with the next step; ``"stop"`` applies no later
            step; ``"raise"`` raises ``FloatingPointError`` naming the step. Skips and
            stops warn with the count and the first step.
        devices: number of local devices to split the estimates over
            (``num_samples`` must be a multiple); ``None`` for all.
        progress_bar: ``None`` shows a bar in an interactive terminal.

    Returns:
        :class:`VIResult`.

    Example:
        >>> import jax, optax, ppl
        >>> from ppl import dist
        >>> def model(params):
        ...     ppl.sample("x", dist.Normal(3.0, 1.0))
        >>> def guide(params):
        ...     ppl.sample("x", dist.Normal(params["loc"], 1.0))
        >>> result = ppl.vi.fit(ppl.vi.objectives.elbo(model, guide), {"loc": 0.0},
        ...                     optimizer=optax.adam(0.1), steps=300, key=jax.random.key(0))
        >>> round(float(result.params["loc"]))
        3
    """
    if not isinstance(objective, Expectation):
        raise TypeError(f"fit: objective must be a ppl.vi.Expectation, got {type(objective).__name__}")
    if on_nonfinite not in NONFINITE_MODES:
        raise ValueError(f"fit: on_nonfinite must be one of {NONFINITE_MODES}, got {on_nonfinite!r}")
    if steps < 1 or num_samples < 1:
        raise ValueError(f"fit: steps and num_samples must be >= 1, got {steps} and {num_samples}")
    num_devices = jax.local_device_count() if devices is None else int(devices)
    if not 1 <= num_devices <= jax.local_device_count() or num_samples % num_devices:
        raise ValueError(
            f"fit: devices={devices} must be between 1 and {jax.local_device_count()} and divide "
            f"num_samples={num_samples}"
        )
    batch_argnums = tuple(batch_argnums)
    if batch_size is not None:
        _check_batch(args, batch_size, batch_argnums)
    if not _all_finite(init_params):
        raise ValueError("fit: init_params contain NaN or inf")

    params = jax.tree.map(jnp.asarray, init_params)
    carry = (
        params,
        optimizer.init(params),
        jnp.zeros((), jnp.int32),
        jnp.full((), -1, jnp.int32),
        jnp.array(False),
    )
    bar_on = progress.progress_enabled(progress_bar)
    bar = progress.ProgressBar(steps, 1, bar_on)
    bar.phase("fit")
    values, snapshots, snapshot_steps = [], [], []
    try:
        for first, length in progress.chunk_sizes(0, steps, enabled=True):
            run = _chunk_program(
                objective,
                optimizer,
                num_samples,
                batch_size,
                batch_argnums,
                on_nonfinite,
                num_devices,
                length,
            )
            carry, chunk_values = run(carry, jnp.asarray(first, jnp.int32), key, tuple(args))
            values.append(chunk_values)
            snapshots.append(carry[0])
            snapshot_steps.append(first + length)
            bar.advance(length)
            if on_nonfinite == "raise" and int(carry[3]) >= 0:
                raise FloatingPointError(
                    f"fit: the objective estimate or its gradient is not finite at step {int(carry[3])}; "
                    "parameters before that step are the last finite ones"
                )
    finally:
        bar.close()
    num_bad, first_bad = int(carry[2]), int(carry[3])
    if num_bad:
        action = "skipped" if on_nonfinite == "skip" else "stopped the fit at"
        warnings.warn(
            f"fit: {num_bad} of {steps} steps had a non-finite objective estimate or gradient; "
            f"{action} them (first at step {first_bad})",
            RuntimeWarning,
            stacklevel=2,
        )
    return VIResult(
        params=carry[0],
        objective=np.concatenate([np.asarray(v) for v in values]),
        trajectory_steps=np.asarray(snapshot_steps),
        trajectory=jax.tree.map(lambda *leaves: jnp.stack(leaves), *snapshots),
        num_nonfinite=num_bad,
        first_nonfinite_step=first_bad if first_bad >= 0 else None,
    )


def _check_batch(args, batch_size, batch_argnums):
    if not batch_argnums or any(not 0 <= i < len(args) for i in batch_argnums):
        raise ValueError(f"fit: batch_argnums {batch_argnums} must index the {len(args)} data arguments")
    sizes = {i: jax.tree.leaves(args[i])[0].shape[0] for i in batch_argnums}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"fit: batched arguments have different leading sizes {sizes}")
    size = next(iter(sizes.values()))
    if not 1 <= batch_size <= size:
        raise ValueError(f"fit: batch_size must be between 1 and the data size {size}, got {batch_size}")
