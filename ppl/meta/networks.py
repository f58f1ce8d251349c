"""Plain-JAX networks and the two likelihoods of few-shot episodes.

A :class:`Network` is an ``(init, apply)`` pair: ``init(key) -> params`` (any pytree an
Optax optimiser can train) and ``apply(params, x) -> outputs`` for one input ``x`` of
shape ``x_shape`` (batch with ``jax.vmap``). Every method of :mod:`ppl.meta` works on the
flattened parameter vector (:func:`jax.flatten_util.ravel_pytree`), so any network built
this way works, not only :func:`mlp`.

A :class:`Likelihood` scores an output against a label: :data:`GAUSSIAN` (regression,
``y ~ N(f(x), noise^2)``, outputs and labels of shape ``(1,)``) and :data:`CATEGORICAL`
(classification, outputs are logits ``(C,)``, labels integers).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ppl.meta import networks
    >>> net = networks.mlp([1, 40, 40, 1])
    >>> params = net.init(jax.random.key(0))
    >>> net.apply(params, jnp.ones(1)).shape
    (1,)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["CATEGORICAL", "GAUSSIAN", "Likelihood", "Network", "likelihood", "mlp"]


class Network(NamedTuple):
    """``init(key) -> params`` and ``apply(params, x) -> outputs`` for one input ``x``."""

    init: Callable
    apply: Callable


def mlp(sizes: Sequence[int], activation: Callable = jax.nn.relu) -> Network:
    """A fully connected network with layer widths ``sizes`` (input first, output last).

    Weights and biases start ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (PyTorch's default);
    ``activation`` follows every layer but the last. ``mlp([1, 40, 40, 1])`` is the
    MAML sinusoid network.
    """
    sizes = [int(size) for size in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"mlp: sizes must list at least two widths >= 1, got {sizes}")

    def init(key):
        params = []
        for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            weight_key, bias_key = jax.random.split(jax.random.fold_in(key, index))
            bound = 1.0 / math.sqrt(fan_in)
            params.append(
                {
                    "w": jax.random.uniform(weight_key, (fan_in, fan_out), minval=-bound, maxval=bound),
                    "b": jax.random.uniform(bias_key, (fan_out,), minval=-bound, maxval=bound),
                }
            )
        return params

    def apply(params, x):
        h = jnp.reshape(x, (-1,))
        for layer in params[:-1]:
            h = activation(h @ layer["w"] + layer["b"])
        return h @ params[-1]["w"] + params[-1]["b"]

    return Network(init, apply)


class Likelihood(NamedTuple):
    """How an output scores a label.

    Attributes:
        name: ``"gaussian"`` or ``"categorical"``.
        log_prob: ``(output, y, noise) -> ()``, the log-density of one label.
        hessian_factor: ``(output, noise) -> B`` ``(outputs, outputs)`` with ``B B^T = H``,
            the Hessian of ``-log_prob`` in the output (the same for every label): with
            the output's Jacobian ``J`` in the weights, ``(J^T B)(J^T B)^T`` is the point's
            generalised Gauss-Newton matrix.
        classification: whether labels are classes.
    """

    name: str
    log_prob: Callable
    hessian_factor: Callable
    classification: bool


def _gaussian_log_prob(output, y, noise):
    return jnp.sum(-0.5 * jnp.square((y - output) / noise) - jnp.log(noise) - 0.5 * math.log(2 * math.pi))


def _gaussian_hessian_factor(output, noise):
    return jnp.eye(output.shape[-1], dtype=output.dtype) / noise


def _categorical_log_prob(logits, y, noise):
    del noise
    return jax.nn.log_softmax(logits)[y]


def _categorical_hessian_factor(logits, noise):
    # (diag(sqrt p) - p sqrt(p)^T)(...)^T = diag(p) - p p^T, as sum(p) = 1.
    del noise
    p = jax.nn.softmax(logits)
    root = jnp.sqrt(p)
    return jnp.diag(root) - jnp.outer(p, root)


GAUSSIAN = Likelihood("gaussian", _gaussian_log_prob, _gaussian_hessian_factor, classification=False)
CATEGORICAL = Likelihood(
    "categorical", _categorical_log_prob, _categorical_hessian_factor, classification=True
)


def likelihood(name: str | Likelihood) -> Likelihood:
    """:data:`GAUSSIAN` or :data:`CATEGORICAL` by name (a :class:`Likelihood` passes through)."""
    if isinstance(name, Likelihood):
        return name
    table = {"gaussian": GAUSSIAN, "categorical": CATEGORICAL}
    if name not in table:
        raise ValueError(f"likelihood must be one of {sorted(table)}, got {name!r}")
    return table[name]
