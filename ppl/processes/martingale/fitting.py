"""Data orderings and bandwidth fitting by prequential log-likelihood.

The copula predictive depends on the order of the data, so the estimators average over
``num_permutations`` random orderings (as the authors do): the prequential
log-likelihood ``(1/n) sum_i log p_{i-1}(y_i)`` is averaged over orderings, and the
bandwidths maximise it. Bandwidths live in ``(0, 1)`` as ``rho = sigmoid(theta)``;
:func:`maximise` runs Optax's L-BFGS (with its zoom line search) in one jitted
``while_loop``, with the exact gradient through the whole ``lax.scan`` over the data.
The authors use SciPy's SLSQP with the same gradient; any ascent method reaches the
same optimum of this smooth low-dimensional objective.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ppl.processes.martingale import fitting
    >>> fitting.orderings(jax.random.key(0), 5, 3).shape
    (3, 5)
    >>> theta = fitting.maximise(lambda t: -jnp.sum((t - 1.0) ** 2), jnp.zeros(2))
    >>> bool(jnp.allclose(theta, 1.0, atol=1e-4))
    True
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["covariate_theta", "initial_rho", "logit", "maximise", "orderings"]


def orderings(key, num_rows: int, num_permutations: int) -> jax.Array:
    """``(num_permutations, num_rows)`` random orderings, the ``p``-th from ``fold_in(key, p)``."""
    return jax.vmap(lambda p: jax.random.permutation(jax.random.fold_in(key, p), num_rows))(
        jnp.arange(num_permutations)
    )


def initial_rho(rho, shape: tuple, *, default: float) -> jax.Array:
    """The starting bandwidth: ``default`` everywhere if ``rho`` is ``None``, else ``rho``
    checked: shape ``shape`` and values in ``(0, 1)``, or a ``ValueError`` saying which."""
    value = np.full(shape, default) if rho is None else np.asarray(rho, dtype=float)
    if value.shape != shape:
        raise ValueError(f"rho must have shape {shape}, got {value.shape}")
    if not np.all((value > 0) & (value < 1)):
        raise ValueError(f"rho must lie in (0, 1), got {value}")
    return jnp.asarray(value, jnp.result_type(float))


def covariate_theta(rho, rho_x, num_features: int, *, per_feature: bool) -> jax.Array:
    """The starting ``theta = logit([rho, *rho_x])`` of a regression or classifier: 0.8
    everywhere (the authors' start) when both are ``None``; ``rho_x`` has one entry per
    feature with ``per_feature``, else one shared entry.

    Raises:
        ValueError: if only one of ``rho``, ``rho_x`` is given, or on a bad value.
    """
    if (rho is None) != (rho_x is None):
        raise ValueError("give both rho and rho_x (fixed bandwidths) or neither (fit both)")
    shape = (num_features,) if per_feature else ()
    rho_x = jnp.reshape(initial_rho(rho_x, shape, default=0.8), (-1,))
    return logit(jnp.concatenate([initial_rho(rho, (), default=0.8)[None], rho_x]))


def logit(rho) -> jax.Array:
    """``theta`` with ``sigmoid(theta) = rho``."""
    rho = jnp.asarray(rho)
    return jnp.log(rho) - jnp.log1p(-rho)


def maximise(objective: Callable, theta, *, max_steps: int = 100, tolerance: float = 1e-6):
    """Maximise a smooth ``objective(theta) -> ()`` from ``theta`` with L-BFGS; returns the
    maximiser. Stops after ``max_steps`` iterations or when the
    gradient's norm falls below ``tolerance``. Call it inside ``jax.jit``."""

    def loss(params):
        return -objective(params)

    optimizer = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry):
        params, state, count, _ = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = optimizer.update(grad, state, params, value=value, grad=grad, value_fn=loss)
        return optax.apply_updates(params, updates), state, count + 1, optax.tree.norm(grad)

    def keep_going(carry):
        _, _, count, grad_norm = carry
        return (count < max_steps) & (grad_norm > tolerance)

    theta = jnp.asarray(theta)
    start = (theta, optimizer.init(theta), jnp.asarray(0), jnp.asarray(jnp.inf, theta.dtype))
    theta, *_ = jax.lax.while_loop(keep_going, step, start)
    return theta
