"""Fit an objective by stochastic gradient ascent with an Optax optimiser.

The kernel is an Optax-style pair: :func:`init` builds a :class:`FitState` from the
parameters, :func:`update` takes one step (``num_samples`` gradient estimates averaged,
one optimiser update, non-finite steps never applied) and is pure and jit-able, so a
user or another family can own the loop; :func:`fitter` binds the configuration once.
:func:`fit` is the thin driver: devices, the chunked loop with its progress bar,
snapshots of the parameters, and a :class:`VIResult`.

Example:
    >>> import jax, optax, ppl
    >>> from ppl import dist
    >>> def model(params):
    ...     ppl.sample("x", dist.Normal(3.0, 1.0))
    >>> def guide(params):
    ...     ppl.sample("x", dist.Normal(params["loc"], 1.0))
    >>> pair = ppl.vi.fitter(ppl.vi.objectives.elbo(model, guide), optax.adam(0.1))
    >>> state = pair.init({"loc": jax.numpy.array(0.0)})
    >>> state, info = jax.jit(pair.update)(jax.random.key(0), state)
    >>> int(state.step), bool(info.finite)
    (1, True)
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro import handlers

from ppl.model.compile import compile
from ppl.runtime.cache import ByValue, by_value
from ppl.runtime.devices import DevicePlan, map_replicas, plan_devices, to_host
from ppl.runtime.keys import replica_keys, validate_key
from ppl.runtime.loop import NUM_UPDATES, scan_in_chunks, strongly_typed
from ppl.runtime.results import Draws
from ppl.vi.language import Expectation, sample_guide
from ppl.vi.params import initial_params, param_site_values
from ppl.vi.sites import ParamsNeeded

__all__ = ["FitInfo", "FitSettings", "FitState", "Fitter", "VIResult", "fit", "fitter", "init", "update"]

NONFINITE_MODES = ("skip", "stop", "raise")
# fold_in indices of the keys for initial_params and for VIResult's default draws;
# step t uses fold_in(key, t), t < 2**31.
INIT_STREAM = 2**32 - 1
DRAWS_STREAM = 2**32 - 2
DEFAULT_DRAWS = 1000


class FitSettings(NamedTuple):
    """Static configuration of :func:`update` (hashed by value).

    Attributes:
        num_samples: gradient estimates averaged per step.
        batch_size: rows drawn without replacement per step from the arguments in
            ``batch_argnums`` (``None``: no minibatching).
        batch_argnums: indices of the data arguments that carry the rows.
        on_nonfinite: ``"skip"``, ``"stop"`` or ``"raise"`` (the driver raises; the
            kernel treats it as ``"stop"``).
    """

    num_samples: int = 1
    batch_size: int | None = None
    batch_argnums: tuple[int, ...] = (0,)
    on_nonfinite: str = "skip"


DEFAULT_SETTINGS = FitSettings()


class FitState(NamedTuple):
    """Parameters, optimiser state, the step count, and the non-finite bookkeeping."""

    params: Any
    opt_state: Any
    step: jax.Array
    num_nonfinite: jax.Array
    first_nonfinite_step: jax.Array  # -1 while every step was finite
    stopped: jax.Array


class FitInfo(NamedTuple):
    """One step: the mean objective estimate and whether the step was finite (applied)."""

    objective: jax.Array
    finite: jax.Array


class Fitter(NamedTuple):
    """The pair :func:`fitter` returns: ``init(params)`` and ``update(rng_key, state, *args)``."""

    init: Callable
    update: Callable


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _minibatch(rng_key, args, batch_size, batch_argnums):
    if batch_size is None:
        return args
    size = jnp.shape(jax.tree.leaves(args[batch_argnums[0]])[0])[0]
    indices = jax.random.choice(rng_key, size, (batch_size,), replace=False)
    return tuple(
        jax.tree.map(lambda leaf: jnp.take(leaf, indices, axis=0), arg) if i in batch_argnums else arg
        for i, arg in enumerate(args)
    )


def init(params, optimizer: optax.GradientTransformation) -> FitState:
    """The state before the first step."""
    params = jax.tree.map(jnp.asarray, params)
    state = FitState(
        params=params,
        opt_state=optimizer.init(params),
        step=jnp.zeros((), jnp.int32),
        num_nonfinite=jnp.zeros((), jnp.int32),
        first_nonfinite_step=jnp.full((), -1, jnp.int32),
        stopped=jnp.array(False),
    )
    return strongly_typed(state)


def update(
    rng_key: jax.Array,
    state: FitState,
    *args: Any,
    objective: Expectation,
    optimizer: optax.GradientTransformation,
    settings: FitSettings = DEFAULT_SETTINGS,
    plan: DevicePlan | None = None,
) -> tuple[FitState, FitInfo]:
    """One step of stochastic gradient ascent on ``objective(params, *args)``.

    Estimate ``j`` of the step uses ``fold_in(estimate_key, j)``; with a ``plan`` the
    estimates are spread over its devices (``None``: ``vmap`` on one device), which
    changes only the order of the final average.
    """
    batch_key, estimate_key = jax.random.split(rng_key)
    batch = _minibatch(batch_key, args, settings.batch_size, settings.batch_argnums)
    num = settings.num_samples

    def one(key, shared):
        params, batch = shared
        return objective.value_and_grad_estimate(key, params, *batch)

    shared = (state.params, batch)
    if plan is None:
        values, grads = jax.vmap(one, in_axes=(0, None))(replica_keys(estimate_key, num), shared)
    else:
        keys = replica_keys(estimate_key, plan.padded_replicas)
        values, grads = map_replicas(one, plan, "vectorized")(keys, shared)
    value = jnp.mean(values[:num])
    grads = jax.tree.map(lambda g: jnp.mean(g[:num], axis=0), grads)
    # Optax minimises; the objective is maximised.
    updates, opt_state = optimizer.update(jax.tree.map(jnp.negative, grads), state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(value) & _all_finite(grads) & _all_finite(params)
    apply = finite & ~state.stopped
    keep = functools.partial(jax.tree.map, lambda new, old: jnp.where(apply, new, old))
    new_state = FitState(
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        step=state.step + 1,
        num_nonfinite=state.num_nonfinite + (~finite).astype(jnp.int32),
        first_nonfinite_step=jnp.where(
            ~finite & (state.first_nonfinite_step < 0), state.step, state.first_nonfinite_step
        ),
        stopped=state.stopped | (~finite & (settings.on_nonfinite != "skip")),
    )
    return new_state, FitInfo(value, finite)


def fitter(objective: Expectation, optimizer: optax.GradientTransformation, **settings: Any) -> Fitter:
    """Bind ``objective``, ``optimizer`` and :class:`FitSettings` into an ``(init, update)`` pair.

    ``update(rng_key, state, *args) -> (state, info)`` is pure: ``jax.jit`` it, ``scan``
    it, ``vmap`` it over problems. With ``param`` sites (an autoguide), start from
    ``init(ppl.vi.initial_params(objective, params, *args, key=key))``.
    """
    config = FitSettings(**settings)
    return Fitter(
        init=functools.partial(init, optimizer=optimizer),
        update=functools.partial(update, objective=objective, optimizer=optimizer, settings=config),
    )


@functools.partial(jax.jit, static_argnames=("objective", "optimizer", "settings", "plan"))
def _advance(state, steps, key, args, *, objective, optimizer: ByValue, settings, plan):
    """Steps ``steps`` of one chunk; step ``t`` uses ``fold_in(key, t)``."""

    def body(state, t):
        return update(
            jax.random.fold_in(key, t),
            state,
            *args,
            objective=objective,
            optimizer=optimizer.value,
            settings=settings,
            plan=plan,
        )

    return jax.lax.scan(body, state, steps)


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
        num_devices: devices the gradient estimates were spread over.
        guide: the guide the objective was built from (objectives of
            :mod:`ppl.vi.objectives`), ``None`` for a hand-written objective.
        args: the data ``fit`` was given.
        draws_key: the default key of :meth:`draws`, ``fold_in(fit key, DRAWS_STREAM)``.
    """

    params: Any
    objective: np.ndarray
    trajectory_steps: np.ndarray
    trajectory: Any
    num_nonfinite: int
    first_nonfinite_step: int | None
    num_devices: int = 1
    guide: Callable | None = None
    args: tuple = ()
    draws_key: jax.Array | None = None

    def sample_guide(self, guide: Callable, rng_key: jax.Array, num_samples: int, *args) -> dict:
        """``num_samples`` draws of ``guide(params, *args)``, each ``(num_samples, ...)``."""
        return sample_guide(guide, rng_key, num_samples, self.params, *args)

    def _draw_inputs(self, guide, rng_key, args):
        """``(guide, rng_key, args)`` with the fit's guide and data, and the draws key, as defaults."""
        if guide is None:
            if self.guide is None:
                raise ValueError(
                    "VIResult: the guide is not known (a hand-written objective or a Family); "
                    "pass it: result.to_arviz(guide, key, num_samples, *data)"
                )
            guide, args = self.guide, self.args
        if rng_key is None:
            if self.draws_key is None:
                raise ValueError("VIResult: no default key (not made by ppl.vi.fit); pass rng_key")
            rng_key = self.draws_key
        return guide, rng_key, args

    def draws(
        self,
        guide: Callable | None = None,
        rng_key: jax.Array | None = None,
        num_samples: int = DEFAULT_DRAWS,
        *args,
        model=None,
    ) -> Draws:
        """The guide's draws as :class:`~ppl.runtime.results.Draws` (one chain).

        ``sample_stats`` holds the objective trace (dims ``chain``, ``fit_step``). With
        ``model`` (called as ``model(params, *args)``), the pointwise log-likelihood of
        its observed sites at each draw fills ``log_likelihood``, with ``observed_data``
        and plate dims.

        Defaults: without ``guide``, the guide the objective was built from, called with
        the data ``fit`` was given (``args`` are then ignored); without ``rng_key``,
        :attr:`draws_key` (``fold_in(key, DRAWS_STREAM)`` of the key given to ``fit``),
        so the same fit gives the same draws.

        Example::

            result = ppl.vi.fit(ppl.vi.objectives.elbo(model, guide), params, y, ...)
            result.draws()                               # 1000 draws of guide(params, y)
            result.draws(guide, key, 500, y, model=model)
        """
        guide, rng_key, args = self._draw_inputs(guide, rng_key, args)
        values = to_host(self.sample_guide(guide, rng_key, num_samples, *args))
        stats = {"objective": np.asarray(self.objective)[None]}
        extra: dict = {}
        if model is not None:
            # The model's own param sites (if any) at their fitted values, not their initial ones.
            fitted = param_site_values(model, self.params, *args)
            compiled = compile(
                handlers.substitute(model, data=fitted) if fitted else model, self.params, *args
            )
            latent = {name: values[name] for name, _ in compiled.layout}
            flat = jax.vmap(compiled.unconstrain)(latent)
            loglik = to_host(jax.jit(jax.vmap(compiled.pointwise_log_likelihood))(flat))
            extra = {
                "log_likelihood": {name: value[None] for name, value in loglik.items()},
                "observed_data": compiled.observed_data,
                "dims": compiled.dims,
                "log_likelihood_dims": compiled.log_likelihood_dims,
                "coords": compiled.coords,
            }
        return Draws(
            samples={name: value[None] for name, value in values.items()},
            sample_stats=stats,
            stats_dims={"objective": ("chain", "fit_step")},
            attrs={"inference": "variational", "final_objective": float(self.objective[-1])},
            **extra,
        )

    def to_arviz(
        self,
        guide: Callable | None = None,
        rng_key: jax.Array | None = None,
        num_samples: int = DEFAULT_DRAWS,
        *args,
        model=None,
        dims=None,
        coords=None,
    ):
        """ArviZ data of :meth:`draws` (same defaults): ``posterior`` (one chain of
        ``num_samples`` guide draws), ``sample_stats`` (the objective trace, ``objective``
        with dims ``chain``, ``fit_step``) and, with ``model``, ``log_likelihood`` and
        ``observed_data``.

        Example::

            idata = ppl.vi.fit(ppl.vi.objectives.elbo(model, guide), params, y, ...).to_arviz()
            idata.posterior["z"].shape        # (1, 1000)
            idata.sample_stats["objective"]   # (1, steps)
        """
        draws = self.draws(guide, rng_key, num_samples, *args, model=model)
        return draws.to_arviz(dims=dims, coords=coords)


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
    devices: int | None = None,
    progress_bar: bool | None = None,
) -> VIResult:
    """Maximise ``objective(params, *args)`` by stochastic gradient ascent.

    Each step averages ``num_samples`` independent gradient estimates and applies one
    ``optimizer`` update (:func:`update`). The estimates are spread over ``devices``
    (default: all, at most ``num_samples``); one jitted ``lax.scan`` runs each of
    ~20 blocks of steps, and the parameters are recorded at the end of each block.

    The optimiser is compared by what it computes (:func:`ppl.runtime.cache.by_value`),
    so ``optimizer=optax.adam(1e-3)`` written anew in each call does not recompile.

    Args:
        objective: an :class:`~ppl.vi.Expectation` over ``(params, *args)``.
        init_params: pytree of initial parameters. ``param`` sites of the model and
            guide (an autoguide's ``mu_auto_loc``, ...) take their values from it by
            name, unconstrained; those it lacks (``{}`` for an autoguide alone) start at
            their initial values (:func:`ppl.vi.initial_params`, one eager run when the
            first trace finds one missing).
        *args: data passed to the objective after the parameters.
        optimizer: any Optax transformation (it minimises ``-objective``).
        steps: number of optimisation steps.
        key: ``jax.random`` key; step ``i`` uses ``fold_in(key, i)``.
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
        devices: number of devices to spread the estimates over (``None``: all). The
            result agrees with a one-device run to float rounding (the average of the
            estimates is summed in another order).
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
    key = validate_key(key)
    plan = plan_devices(int(num_samples), devices, replicas="num_samples")
    batch_argnums = tuple(batch_argnums)
    if batch_size is not None:
        _check_batch(args, batch_size, batch_argnums)
    if not _all_finite(init_params):
        raise ValueError("fit: init_params contain NaN or inf")

    settings = FitSettings(int(num_samples), batch_size, batch_argnums, on_nonfinite)
    nan_note = _nan_in_data(args)

    def run(init_params):
        state = init(init_params, optimizer)
        if nan_note:
            _check_first_step(
                state, key, args, nan_note, objective=objective, optimizer=optimizer, settings=settings
            )
        advance = functools.partial(
            _advance,
            key=key,
            args=tuple(args),
            objective=objective,
            optimizer=by_value(optimizer, state.params),
            settings=settings,
            plan=plan,
        )
        snapshots, snapshot_steps = [], []

        def record(state, outputs, stop):
            snapshots.append(to_host(state.params))
            snapshot_steps.append(stop)
            if on_nonfinite == "raise" and not outputs.finite.all():
                first = stop - len(outputs.finite) + int(np.argmin(outputs.finite))
                raise FloatingPointError(
                    f"fit: the objective estimate or its gradient is not finite at step {first}; "
                    "parameters before that step are the last finite ones"
                )

        state, info = scan_in_chunks(
            advance,
            state,
            np.arange(steps, dtype=np.int32),
            progress_bar=progress_bar,
            description="fit",
            num_chunks=NUM_UPDATES,
            on_chunk=record,
        )
        return state, info, snapshots, snapshot_steps

    try:
        state, info, snapshots, snapshot_steps = run(init_params)
    except ParamsNeeded:
        # A param site missing from init_params, or an autoguide not set up yet (its first
        # trace raises before any step): one eager run adds their initial values, as
        # NumPyro's SVI.init does, and the loop starts again.
        init_params = initial_params(objective, init_params, *args, key=jax.random.fold_in(key, INIT_STREAM))
        state, info, snapshots, snapshot_steps = run(init_params)
    final = to_host(state)
    num_bad, first_bad = int(final.num_nonfinite), int(final.first_nonfinite_step)
    if num_bad:
        action = "skipped" if on_nonfinite == "skip" else "stopped the fit at"
        data_note = f"; the data contain NaN: {nan_note}" if nan_note else ""
        warnings.warn(
            f"fit: {num_bad} of {steps} steps had a non-finite objective estimate or gradient; "
            f"{action} them (first at step {first_bad}){data_note}",
            RuntimeWarning,
            stacklevel=2,
        )
    return VIResult(
        params=final.params,
        objective=info.objective,
        trajectory_steps=np.asarray(snapshot_steps),
        trajectory=jax.tree.map(lambda *leaves: np.stack(leaves), *snapshots),
        num_nonfinite=num_bad,
        first_nonfinite_step=first_bad if first_bad >= 0 else None,
        num_devices=plan.num_devices,
        guide=objective.guide,
        args=tuple(args),
        draws_key=jax.random.fold_in(key, DRAWS_STREAM),
    )


def _nan_in_data(args) -> str | None:
    """Each concrete data leaf with NaN: which argument, its shape, the count and the first
    index, as one sentence; ``None`` when there is none.

    Example:
        >>> _nan_in_data((np.array([1.0, np.nan]),))
        'data argument 0 (shape (2,)) has 1 NaN, the first at index (1,)'
    """
    found = []
    for i, arg in enumerate(args):
        for path, leaf in jax.tree_util.tree_flatten_with_path(arg)[0]:
            if isinstance(leaf, jax.core.Tracer) or np.asarray(leaf).dtype.kind not in "fc":
                continue
            nan = np.isnan(np.asarray(leaf))
            if nan.any():
                first = tuple(int(j) for j in np.argwhere(nan)[0])
                found.append(
                    f"data argument {i}{jax.tree_util.keystr(path)} (shape {nan.shape}) has "
                    f"{int(nan.sum())} NaN, the first at index {first}"
                )
    return "; ".join(found) or None


def _check_first_step(state, key, args, nan_note, **config):
    """Raise a ``ValueError`` naming the NaN in the data when the first step (its key, its
    minibatch) is not finite; a model that masks its missing values passes."""
    _, info = jax.jit(functools.partial(update, **config))(jax.random.fold_in(key, 0), state, *args)
    if not bool(info.finite):
        raise ValueError(
            f"fit: the data contain NaN: {nan_note}. The first step's objective estimate or "
            "gradient is not finite, so every step would be skipped: drop or impute the "
            "missing values, or keep NaN away from every log-density and gradient in the "
            "model (jnp.where(mask, y, 0.0) with a masked site)"
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
