"""Empirical Bayes for NNGP hyperparameters: maximise the log marginal likelihood with Optax.

As the authors do (``spax/models.py::SPR``): every hyperparameter is positive and
optimised as ``softplus(raw)``; the loss is ``-log p(y) / (n C)`` under the Gaussian
process, or under the Student-t process (inverse-gamma scale prior, ``alpha`` and
``beta`` fitted too). The kernel is rebuilt from the current values by a function of
yours, so any architecture and any subset of its variances can be fitted::

    def make_kernel(p):
        return nngp.mlp(3, "relu", W_std=p["W_std"], b_std=p["b_std"], last_W_std=p["last_W_std"])

    fit = empirical_bayes.fit(make_kernel, x, y, {"W_std": 1.0, "b_std": 0.1, "last_W_std": 1.0,
                                                  "noise_variance": 0.1}, steps=500)
    fit.params["noise_variance"]

The loop runs under ``jax.jit`` in chunks with the runtime's progress bar; it stops with
a ``FloatingPointError`` naming the step if the loss becomes non-finite. (The authors'
validation-driven learning-rate schedule is left to the optimiser you pass, e.g.
``optax.contrib.reduce_on_plateau`` chained with Adam.)
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro import distributions as dist

from ppl.processes import gp, scale_mixture
from ppl.runtime.cache import ByFunction, by_value
from ppl.runtime.loop import NUM_UPDATES, scan_in_chunks

__all__ = ["EmpiricalBayesFit", "fit", "negative_log_marginal"]

LIKELIHOODS = ("gaussian", "student_t")


class EmpiricalBayesFit(NamedTuple):
    """Attributes:
    params: the fitted positive hyperparameters (same keys as ``init``).
    loss: ``(steps,)`` the loss ``-log p(y) / (n C)`` before each step.
    """

    params: dict
    loss: Any


def negative_log_marginal(
    make_kernel, params: dict, x, y, likelihood: str = "gaussian", jitter=gp.DEFAULT_JITTER
):
    """``-log p(y | x, params) / (n C)`` (jit- and grad-able in ``params``)."""
    k = gp.kernel_matrix(make_kernel(params), x)
    conditioned = gp.condition(k, y, params["noise_variance"], jitter)
    count = conditioned.num_points * conditioned.num_outputs
    if likelihood == "gaussian":
        log_marginal = conditioned.gaussian_log_marginal()
    else:
        prior = dist.InverseGamma(params["alpha"], params["beta"])
        posterior = scale_mixture.scale_posterior(prior, conditioned.quadratic, count, method="closed_form")
        log_marginal = scale_mixture.log_marginal_likelihood(conditioned, posterior)
    return -log_marginal / count


def _inverse_softplus(value):
    value = jnp.asarray(value, dtype=float)
    return value + jnp.log(-jnp.expm1(-value))


@functools.partial(jax.jit, static_argnames=("make_kernel", "likelihood", "optimizer", "jitter"))
def _advance(carry, steps, x, y, make_kernel, likelihood, optimizer, jitter):
    def loss(raw):
        params = jax.tree.map(jax.nn.softplus, raw)
        return negative_log_marginal(make_kernel, params, x, y, likelihood, jitter)

    def one(carry, _):
        raw, state = carry
        value, grad = jax.value_and_grad(loss)(raw)
        updates, state = optimizer.value.update(grad, state, raw)
        return (optax.apply_updates(raw, updates), state), value

    return jax.lax.scan(one, carry, steps)


def fit(
    make_kernel,
    x,
    y,
    init: dict,
    *,
    likelihood: str = "gaussian",
    optimizer=None,
    steps: int = 1000,
    jitter: float = gp.DEFAULT_JITTER,
    progress_bar: bool | None = None,
) -> EmpiricalBayesFit:
    """Fit positive hyperparameters by maximising the log marginal likelihood.

    Args:
        make_kernel: ``params -> Network`` (or a kernel function ``k(x1, x2)``).
        x, y: training inputs ``(n, ...)`` and targets ``(n,)`` or ``(n, C)``.
        init: starting values, all ``> 0``; must contain ``"noise_variance"``, and
            ``"alpha"``, ``"beta"`` for ``likelihood="student_t"``.
        likelihood: ``"gaussian"`` (GP) or ``"student_t"`` (inverse-gamma scale prior).
        optimizer: an Optax transformation (default ``optax.adam(1e-2)``, the authors').
        steps: optimisation steps.
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    needed = {"noise_variance"} | ({"alpha", "beta"} if likelihood == "student_t" else set())
    if not isinstance(init, dict) or needed - set(init):
        raise ValueError(
            f"init must be a dict containing {sorted(needed)}, "
            f"got {sorted(init) if isinstance(init, dict) else init!r}"
        )
    for name, value in init.items():
        array = np.asarray(value, dtype=float)
        if not np.all(np.isfinite(array)) or np.any(array <= 0):
            raise ValueError(
                f"init[{name!r}] must be finite and > 0 (hyperparameters are positive), got {value!r}"
            )
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    x, y = jnp.asarray(x), jnp.asarray(y)
    raw = {name: _inverse_softplus(value) for name, value in init.items()}
    transformation = by_value(optimizer or optax.adam(1e-2), raw)
    carry = (raw, transformation.value.init(raw))
    static = dict(
        make_kernel=ByFunction(make_kernel),
        likelihood=likelihood,
        optimizer=transformation,
        jitter=float(jitter),
    )

    def advance(carry, chunk):
        return _advance(carry, chunk, x, y, **static)

    def check(carry, losses, stop):
        bad = np.flatnonzero(~np.isfinite(np.asarray(losses)))
        if bad.size:
            first = stop - len(losses) + int(bad[0])
            raise FloatingPointError(
                f"empirical Bayes: the loss is {float(np.asarray(losses)[bad[0]])} at step {first}; "
                "lower the learning rate, raise jitter= or start from other values"
            )

    (raw, _), losses = scan_in_chunks(
        advance,
        carry,
        np.arange(steps, dtype=np.int32),
        progress_bar=progress_bar,
        description="empirical Bayes",
        num_chunks=NUM_UPDATES,
        on_chunk=check,
    )
    return EmpiricalBayesFit({name: jax.nn.softplus(value) for name, value in raw.items()}, losses)
