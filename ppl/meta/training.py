"""Meta-training: the kernel pieces every method shares and the one driver.

A method of :mod:`ppl.meta` is a :class:`MetaLearner`, an Optax-style kernel:
``init(key) -> state`` (a :class:`ppl.vi.FitState`, so ``state.params`` holds what is
meta-learned), ``update(key, state, episodes, plan=None) -> (state, StepInfo)`` (one
meta-step on a batch of episodes, pure and jit-able) and
``predict(key, params, episodes) -> prediction`` (a
:class:`~ppl.meta.predictive.RegressionPrediction` or
:class:`~ppl.meta.predictive.ClassPrediction`).

Inside ``update`` the episodes of the batch are independent: :func:`episode_mean` maps a
per-episode ``(loss, gradient)`` over them, spread over the devices of a runtime
:class:`~ppl.runtime.devices.DevicePlan` (episode ``i`` always gets ``fold_in(key, i)``,
so the meta-gradient is the same on any number of devices up to float rounding), and
:func:`apply_gradient` takes one Optax step that is never applied when anything is
NaN/inf. :func:`train` is the thin driver: episodes from an
:class:`~ppl.meta.episodes.EpisodeSource` (drawn on the devices, step ``t`` from
``fold_in(key, t)``) or from a user iterable, the runtime's chunked loop with its
progress bar, and a ``FloatingPointError`` naming the first non-finite step.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ppl.meta.episodes import Episodes, EpisodeSource, check_episodes, from_iterator, sample_episodes
from ppl.runtime.devices import DevicePlan, map_replicas, plan_devices, to_host
from ppl.runtime.keys import replica_keys, validate_key
from ppl.runtime.loop import NUM_UPDATES, progress_enabled, scan_in_chunks
from ppl.vi import FitState
from ppl.vi.fit import init as fit_init

__all__ = ["MetaLearner", "StepInfo", "TrainResult", "apply_gradient", "episode_mean", "init_state", "train"]

# Batches pulled from a user iterable per jitted call (bounds the host memory they use).
ITERATOR_CHUNK = 50


class StepInfo(NamedTuple):
    """One meta-step: the mean loss over the batch and whether the step was applied."""

    loss: jax.Array
    finite: jax.Array


class MetaLearner(NamedTuple):
    """A meta-learning method as a kernel (see the module docstring).

    Attributes:
        name: the method (``"niw"``, ``"maml"``, ...).
        init: ``key -> FitState``.
        update: ``(key, state, episodes, plan=None) -> (FitState, StepInfo)``.
        predict: ``(key, params, episodes) -> RegressionPrediction | ClassPrediction``.
        classification: whether labels are classes.
        num_classes: classes per episode (``None`` for regression).
        config: what else the method keeps (NIW: its network and settings), or ``None``.
    """

    name: str
    init: Callable
    update: Callable
    predict: Callable
    classification: bool
    num_classes: int | None = None
    config: Any = None


def init_state(params, optimizer: optax.GradientTransformation) -> FitState:
    """The state before the first meta-step (``ppl.vi``'s :class:`~ppl.vi.FitState`)."""
    return fit_init(params, optimizer)


def episode_mean(
    fn: Callable, key: jax.Array, episodes: Episodes, shared: Any, plan: DevicePlan | None = None
) -> tuple[jax.Array, Any]:
    """Mean over the episodes of ``fn(key_i, episode_i, shared) -> (loss, grads)``.

    ``key_i = fold_in(key, i)``. With a ``plan`` the episodes are spread over its devices
    (the batch is padded with copies of its last episode, which are dropped); ``None``:
    ``vmap`` on one device.
    """
    num = jax.tree.leaves(episodes)[0].shape[0]

    def one(per_episode, shared):
        episode_key, episode = per_episode
        return fn(episode_key, episode, shared)

    if plan is None:
        losses, grads = jax.vmap(one, in_axes=(0, None))((replica_keys(key, num), episodes), shared)
    else:
        padding = plan.padded_replicas - num
        padded = jax.tree.map(
            lambda leaf: jnp.concatenate([leaf, jnp.repeat(leaf[-1:], padding, 0)]), episodes
        )
        keys = replica_keys(key, plan.padded_replicas)
        losses, grads = map_replicas(one, plan, "vectorized")((keys, padded), shared)
    return jnp.mean(losses[:num]), jax.tree.map(lambda g: jnp.mean(g[:num], axis=0), grads)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def apply_gradient(
    state: FitState, loss: jax.Array, grads, optimizer: optax.GradientTransformation
) -> tuple[FitState, StepInfo]:
    """One Optax step minimising ``loss``; not applied (and the state stops) when the
    loss, the gradient or the new parameters are not finite."""
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(params)
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
        stopped=state.stopped | ~finite,
    )
    return new_state, StepInfo(loss, finite)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        learner: the method trained.
        state: the final :class:`~ppl.vi.FitState` (its ``params`` are the last finite ones).
        losses: ``(steps,)`` mean loss of each meta-step's batch.
        num_devices: devices the episodes of each step were spread over.
    """

    learner: MetaLearner
    state: FitState
    losses: np.ndarray
    num_devices: int

    @property
    def params(self):
        """The meta-learned parameters."""
        return self.state.params

    def predict(self, key: jax.Array, episodes: Episodes):
        """The learner's prediction on the query points of ``episodes`` (a batch)."""
        episodes = check_episodes(
            episodes, classification=self.learner.classification, num_classes=self.learner.num_classes
        )
        return _predict(self.learner, validate_key(key), self.state.params, episodes)


@functools.partial(jax.jit, static_argnames=("learner",))
def _predict(learner, key, params, episodes):
    return learner.predict(key, params, episodes)


@functools.partial(jax.jit, static_argnames=("learner", "source", "num_episodes", "plan"))
def _advance_source(state, steps, key, *, learner, source, num_episodes, plan):
    def body(state, t):
        step_key = jax.random.fold_in(key, t)
        episodes = sample_episodes(source, jax.random.fold_in(step_key, 0), num_episodes)
        return learner.update(jax.random.fold_in(step_key, 1), state, episodes, plan)

    return jax.lax.scan(body, state, steps)


@functools.partial(jax.jit, static_argnames=("learner", "plan"))
def _advance_batches(state, xs, key, *, learner, plan):
    def body(state, x):
        t, episodes = x
        return learner.update(jax.random.fold_in(jax.random.fold_in(key, t), 1), state, episodes, plan)

    return jax.lax.scan(body, state, xs)


def train(
    learner: MetaLearner,
    episodes: EpisodeSource | Iterable[Episodes],
    *,
    steps: int,
    key: jax.Array,
    num_episodes: int | None = None,
    devices: int | None = None,
    progress_bar: bool | None = None,
) -> TrainResult:
    """Meta-train ``learner`` for ``steps`` meta-steps.

    Args:
        learner: a :class:`MetaLearner` (:func:`ppl.meta.niw.learner`, :func:`ppl.meta.maml`, ...).
        episodes: an :class:`~ppl.meta.episodes.EpisodeSource` (each step draws
            ``num_episodes`` episodes from ``fold_in(fold_in(key, t), 0)``) or an iterable
            of :class:`~ppl.meta.episodes.Episodes` batches, one per step (checked with
            :func:`~ppl.meta.episodes.check_episodes`; all of one shape).
        steps: meta-steps.
        key: ``jax.random`` key; step ``t``'s update uses ``fold_in(fold_in(key, t), 1)``.
        num_episodes: episodes per step from a source (required with a source).
        devices: devices to spread each step's episodes over (``None``: all).
        progress_bar: ``None`` shows a bar in an interactive terminal.

    Raises:
        FloatingPointError: naming the first step whose loss or gradient was not finite
            (training stops there; the state keeps the parameters before it).

    Example:
        >>> import jax, optax
        >>> from ppl import meta
        >>> source = meta.episodes.sinusoid(shots=5, queries=10)
        >>> learner = meta.niw.learner(meta.networks.mlp([1, 8, 1]), optimizer=optax.adam(1e-3))
        >>> result = meta.train(learner, source, steps=5, num_episodes=4, key=jax.random.key(0))
        >>> result.losses.shape
        (5,)
    """
    if not isinstance(learner, MetaLearner):
        raise TypeError(f"train: learner must be a ppl.meta MetaLearner, got {type(learner).__name__}")
    if not isinstance(steps, int | np.integer) or steps < 1:
        raise ValueError(f"train: steps must be an integer >= 1, got {steps!r}")
    key = validate_key(key)
    state = learner.init(jax.random.fold_in(key, 2**31 - 1))

    def stop_on_nonfinite(state, outputs, stop):
        if not outputs.finite.all():
            first = stop - len(outputs.finite) + int(np.argmin(outputs.finite))
            raise FloatingPointError(
                f"train: the {learner.name} loss or its gradient is not finite at meta-step {first} "
                f"(loss {float(outputs.loss[first - stop + len(outputs.finite)])}); the parameters "
                "before that step are kept"
            )

    if isinstance(episodes, EpisodeSource):
        if num_episodes is None or not isinstance(num_episodes, int | np.integer) or num_episodes < 1:
            raise ValueError(
                f"train: num_episodes must be an integer >= 1 with an episode source, got {num_episodes!r}"
            )
        plan = plan_devices(int(num_episodes), devices, replicas="num_episodes")
        advance = functools.partial(
            _advance_source,
            key=key,
            learner=learner,
            source=episodes,
            num_episodes=int(num_episodes),
            plan=plan,
        )
        num_chunks = None
    else:
        # A user stream, checked batch by batch (episodes.from_iterator) and pulled at most
        # ITERATOR_CHUNK batches per jitted call.
        stream = from_iterator(
            episodes, classification=learner.classification, num_classes=learner.num_classes
        )
        first = next(stream, None)
        if first is None:
            raise ValueError("train: the episode iterable is empty")
        size = first.support_x.shape[0]
        if num_episodes is not None and num_episodes != size:
            raise ValueError(f"train: num_episodes={num_episodes} but the first batch has {size} episodes")
        plan = plan_devices(int(size), devices, replicas="episodes per batch")
        batches = itertools.chain([first], stream)

        def advance(state, steps_chunk):
            chunk = [next(batches, None) for _ in steps_chunk]
            if chunk[-1] is None:
                ran_out = int(steps_chunk[0]) + chunk.index(None)
                raise ValueError(
                    f"train: the episode iterable ran out after {ran_out} batches; steps={steps}"
                )
            stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *chunk)
            return _advance_batches(
                state, (jnp.asarray(steps_chunk), stacked), key, learner=learner, plan=plan
            )

        num_chunks = max(
            NUM_UPDATES if progress_enabled(progress_bar) else 1, math.ceil(steps / ITERATOR_CHUNK)
        )

    state, info = scan_in_chunks(
        advance,
        state,
        np.arange(steps, dtype=np.int32),
        progress_bar=progress_bar,
        description=f"meta-train {learner.name}",
        num_chunks=num_chunks,
        on_chunk=stop_on_nonfinite,
    )
    return TrainResult(learner, to_host(state), info.loss, plan.num_devices)
