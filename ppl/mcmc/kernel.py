"""One NUTS or HMC transition with Stan's window adaptation, as a pure kernel.

The transition is BlackJAX's (``blackjax.nuts.build_kernel`` / ``blackjax.hmc.build_kernel``)
and so is the adaptation (``window_adaptation.base``: dual averaging of the step size,
Welford estimates of the inverse mass matrix over Stan's windows). This module only puts
them in one ``init`` / ``step`` pair with a ``NamedTuple`` state, so that warmup and
sampling are the same compiled program: each step carries a phase code, and only
warmup steps update the adaptation.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ppl.mcmc import kernel
    >>> settings = kernel.Settings()
    >>> logdensity = lambda u: -0.5 * jnp.sum(u**2)
    >>> state = kernel.init(jnp.zeros(2), logdensity, settings)
    >>> state, info = kernel.step(jax.random.key(0), state, logdensity, kernel.SAMPLING, (0, False), settings)
    >>> info.tree_depth.shape
    ()
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.window_adaptation import base as window_adaptation_base
from blackjax.adaptation.window_adaptation import build_schedule

from ppl.runtime.loop import strongly_typed

__all__ = [
    "LAST_WARMUP",
    "SAMPLING",
    "WARMUP",
    "Info",
    "Settings",
    "State",
    "init",
    "schedule",
    "step",
]

# Phase codes of a step (data, not configuration: one program serves every phase).
#: A sampling step: the adaptation is left alone.
SAMPLING = 0
#: A warmup step: the adaptation is updated.
WARMUP = 1
#: The last warmup step: the adapted step size and mass matrix are fixed after it.
LAST_WARMUP = 2


class Settings(NamedTuple):
    """Static configuration of the kernel and its driver (hashed by value)."""

    algorithm: str = "nuts"  # "nuts" or "hmc"
    target_accept: float = 0.8
    max_tree_depth: int = 10
    num_integration_steps: int = 16
    dense_mass: bool = False
    initial_step_size: float = 1.0
    init_radius: float = 2.0
    init_attempts: int = 100
    chain_method: str = "vectorized"


class State(NamedTuple):
    """One chain: BlackJAX's ``HMCState`` (position, log density, gradient), the window
    adaptation state, and the step size and inverse mass matrix in use."""

    hmc: Any
    adaptation: Any
    step_size: jax.Array
    inverse_mass_matrix: jax.Array


class Info(NamedTuple):
    """Statistics of one transition, under ArviZ's ``sample_stats`` names
    (``tree_depth`` is ``-1`` for HMC)."""

    lp: jax.Array
    diverging: jax.Array
    energy: jax.Array
    acceptance_rate: jax.Array
    n_steps: jax.Array
    tree_depth: jax.Array


def _adaptation(settings: Settings):
    with warnings.catch_warnings():
        # blackjax 1.7 marks base() deprecated in favour of staged_adaptation, whose
        # per-step pieces are private; base() is still the public init/update/final
        # triple that lets warmup share one compiled program with sampling.
        warnings.simplefilter("ignore", DeprecationWarning)
        return window_adaptation_base(
            is_mass_matrix_diagonal=not settings.dense_mass, target_acceptance_rate=settings.target_accept
        )


def init(
    position: jax.Array,
    logdensity_fn: Callable,
    settings: Settings,
    step_size: jax.Array | None = None,
    inverse_mass_matrix: jax.Array | None = None,
) -> State:
    """The state of a chain at ``position`` (shape ``(dim,)``), before any adaptation.

    ``step_size`` (default ``settings.initial_step_size``) and ``inverse_mass_matrix``
    (``(dim,)``, or ``(dim, dim)`` with ``dense_mass``; default the identity) are where
    the adaptation starts, and what sampling uses if there is no warmup.
    """
    adapt_init, _, _ = _adaptation(settings)
    adaptation = adapt_init(position, settings.initial_step_size if step_size is None else step_size)
    if inverse_mass_matrix is not None:
        adaptation = adaptation._replace(inverse_mass_matrix=jnp.asarray(inverse_mass_matrix))
    state = State(
        blackjax.hmc.init(position, logdensity_fn),
        adaptation,
        adaptation.step_size,
        adaptation.inverse_mass_matrix,
    )
    return strongly_typed(state)


def step(
    rng_key: jax.Array,
    state: State,
    logdensity_fn: Callable,
    phase: jax.Array,
    window: tuple,
    settings: Settings,
) -> tuple[State, Info]:
    """One transition; warmup phases also update the adaptation.

    Args:
        rng_key: the transition's key.
        state: the chain's :class:`State`.
        logdensity_fn: ``u (dim,) -> log density``.
        phase: :data:`SAMPLING`, :data:`WARMUP` or :data:`LAST_WARMUP` (the last warmup
            step, after which the adapted step size and mass matrix are fixed).
        window: ``(stage, is_window_end)`` of Stan's schedule for warmup steps (see
            :func:`schedule`); ignored while sampling.
        settings: the static :class:`Settings`.
    """
    _, adapt_update, adapt_final = _adaptation(settings)
    if settings.algorithm == "nuts":
        hmc_state, info = blackjax.nuts.build_kernel()(
            rng_key,
            state.hmc,
            logdensity_fn,
            state.step_size,
            state.inverse_mass_matrix,
            max_num_doublings=settings.max_tree_depth,
        )
        tree_depth = info.num_trajectory_expansions
    else:
        hmc_state, info = blackjax.hmc.build_kernel()(
            rng_key,
            state.hmc,
            logdensity_fn,
            state.step_size,
            state.inverse_mass_matrix,
            num_integration_steps=settings.num_integration_steps,
        )
        tree_depth = jnp.array(-1, jnp.int32)

    def adapt(state: State) -> State:
        adaptation = adapt_update(
            state.adaptation, (window[0], window[1]), hmc_state.position, info.acceptance_rate
        )
        final_step_size, final_inverse_mass_matrix = adapt_final(adaptation)
        last = phase == LAST_WARMUP
        return State(
            hmc_state,
            adaptation,
            jnp.where(last, final_step_size, adaptation.step_size),
            jnp.where(last, final_inverse_mass_matrix, adaptation.inverse_mass_matrix),
        )

    state = jax.lax.cond(phase == SAMPLING, lambda s: s._replace(hmc=hmc_state), adapt, state)
    return state, Info(
        lp=hmc_state.logdensity,
        diverging=info.is_divergent,
        energy=info.energy,
        acceptance_rate=info.acceptance_rate,
        n_steps=info.num_integration_steps,
        tree_depth=tree_depth,
    )


@functools.lru_cache(maxsize=16)  # a pure function of two integers (BlackJAX's takes ~10 ms)
def schedule(num_warmup: int, num_draws: int) -> tuple[np.ndarray, np.ndarray]:
    """Phase code ``(T,)`` and window ``(T, 2)`` of every step, warmup then draws
    (``T = num_warmup + num_draws``), from BlackJAX's ``build_schedule``; read-only."""
    phases = np.full(num_warmup + num_draws, SAMPLING, np.int32)
    windows = np.zeros((num_warmup + num_draws, 2), np.int32)
    if num_warmup:
        phases[:num_warmup] = WARMUP
        phases[num_warmup - 1] = LAST_WARMUP
        windows[:num_warmup] = np.asarray(build_schedule(num_warmup))
    phases.flags.writeable = windows.flags.writeable = False
    return phases, windows
