"""Measurements ``y = A(x) + noise_std * eps`` and the linear operators ``A``.

A :class:`LinearOperator` knows ``A x``, ``A^T y`` and its thin SVD
``A = U diag(S) V^T`` (``U``: ``(d_y, r)``, ``V``: ``(d, r)``) through
:meth:`~LinearOperator.to_row_space` (``V^T x``) and :meth:`~LinearOperator.from_row_space`
(``V z``), so masks never build a dense ``V``. :func:`measurement` checks shapes and the
noise level once and returns a :class:`Measurement`, which every sampler consumes:
log-likelihood, the potential ``mu(x) = -log p(y | x)``, its gradient and Laplacian.

Example:
    >>> import jax.numpy as jnp
    >>> from ppl.smc.diffusion import measurement
    >>> m = measurement(jnp.array([[1.0, 0.0, 0.0]]), jnp.array([0.5]), noise_std=0.1)
    >>> m.shape, float(m.potential_laplacian(jnp.zeros(3)))  # ||A||_F^2 / noise_std^2
    ((1, 3), 100.0...)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

_LOG_2PI = float(np.log(2 * np.pi))

__all__ = ["LinearOperator", "MaskOperator", "MatrixOperator", "Measurement", "measurement"]


def _check_finite(name: str, array) -> None:
    """``ValueError`` naming ``name``, its shape and the first non-finite entry (skipped under ``jit``)."""
    if isinstance(array, jax.core.Tracer):
        return
    values = np.asarray(array)
    bad = np.argwhere(~np.isfinite(values))
    if bad.size:
        index = tuple(int(i) for i in bad[0])
        count = f"{len(bad)} non-finite entr{'y' if len(bad) == 1 else 'ies'}"
        raise ValueError(
            f"{name} of shape {values.shape} has {count}; the first is "
            f"{name}[{', '.join(map(str, index))}] = {values[index]}"
        )


class LinearOperator:
    """Interface of a linear forward map ``A: R^d -> R^{d_y}`` with a thin SVD."""

    shape: tuple[int, int]
    singular_values: jax.Array  # (r,)
    left: jax.Array  # U, (d_y, r)

    def apply(self, x):
        """``A x``: ``(d,) -> (d_y,)``."""
        raise NotImplementedError

    def transpose(self, y):
        """``A^T y``: ``(d_y,) -> (d,)``."""
        raise NotImplementedError

    def to_row_space(self, x):
        """``V^T x``: ``(d,) -> (r,)``."""
        raise NotImplementedError

    def from_row_space(self, z):
        """``V z``: ``(r,) -> (d,)``."""
        raise NotImplementedError


@jax.tree_util.register_pytree_node_class
class MatrixOperator(LinearOperator):
    """A dense matrix ``(d_y, d)``; its SVD is computed once, rank-revealing (``S > 1e-6 max S``)."""

    def __init__(self, matrix):
        matrix = np.asarray(matrix, np.float64)
        if matrix.ndim != 2:
            raise ValueError(f"the forward matrix must be 2-D (d_y, d), got shape {matrix.shape}")
        _check_finite("A", matrix)
        _check_finite("A (as float32)", matrix.astype(np.float32))
        u, s, vt = np.linalg.svd(matrix, full_matrices=False)
        keep = s > 1e-6 * max(float(s.max(initial=0.0)), 1e-30)
        self.matrix = jnp.asarray(matrix, jnp.float32)
        self.shape = matrix.shape
        self.left, self.singular_values = (
            jnp.asarray(u[:, keep], jnp.float32),
            jnp.asarray(s[keep], jnp.float32),
        )
        self._right = jnp.asarray(vt[keep].T, jnp.float32)

    def tree_flatten(self):
        return (self.matrix, self.left, self.singular_values, self._right), self.shape

    @classmethod
    def tree_unflatten(cls, shape, children):
        operator = object.__new__(cls)
        operator.matrix, operator.left, operator.singular_values, operator._right = children
        operator.shape = shape
        return operator

    def apply(self, x):
        return self.matrix @ x

    def transpose(self, y):
        return self.matrix.T @ y

    def to_row_space(self, x):
        return self._right.T @ x

    def from_row_space(self, z):
        return self._right @ z


@jax.tree_util.register_pytree_node_class
class MaskOperator(LinearOperator):
    """Inpainting: ``A x = x[observed]`` for a boolean mask of shape ``(d,)``."""

    def __init__(self, mask):
        mask = np.asarray(mask, bool)
        if mask.ndim != 1 or not mask.any():
            raise ValueError(f"the mask must be 1-D with at least one observed entry, got shape {mask.shape}")
        self.index = jnp.asarray(np.flatnonzero(mask))
        self.shape = (int(mask.sum()), mask.size)
        self.left = jnp.eye(self.shape[0])
        self.singular_values = jnp.ones(self.shape[0])

    def tree_flatten(self):
        return (self.index, self.left, self.singular_values), self.shape

    @classmethod
    def tree_unflatten(cls, shape, children):
        operator = object.__new__(cls)
        operator.index, operator.left, operator.singular_values = children
        operator.shape = shape
        return operator

    def apply(self, x):
        return x[self.index]

    def transpose(self, y):
        return jnp.zeros(self.shape[1], y.dtype).at[self.index].set(y)

    to_row_space = apply
    from_row_space = transpose


@jax.tree_util.register_pytree_node_class
class Measurement:
    """``y = A(x) + noise_std * eps``: what every sampler conditions on. Build with :func:`measurement`.

    Attributes:
        forward: a :class:`LinearOperator`, or a function ``(d,) -> (d_y,)`` (nonlinear).
        y: observation ``(d_y,)``. noise_std: ``sigma_y > 0``. dim: ``d``.
    """

    def __init__(self, forward, y, noise_std: float, dim: int):
        self.forward, self.y, self.noise_std, self.dim = forward, y, noise_std, dim
        self.is_linear = isinstance(forward, LinearOperator)
        self.shape = (y.shape[0], dim)

    # -- pytree: the operator's arrays, y and the noise level are data (no recompiles)
    def tree_flatten(self):
        if self.is_linear:
            return (self.forward, self.y, self.noise_std), (None, self.dim)
        return (self.y, self.noise_std), (self.forward, self.dim)

    @classmethod
    def tree_unflatten(cls, static, children):
        function, dim = static
        if function is None:
            return cls(*children, dim)
        return cls(function, *children, dim)

    def apply(self, x):
        return self.forward.apply(x) if self.is_linear else self.forward(x)

    def log_likelihood(self, x):
        """``log N(y; A(x), noise_std^2 I)`` for one ``x`` of shape ``(d,)``."""
        residual = self.y - self.apply(x)
        d_y = self.y.shape[0]
        return -0.5 * jnp.sum(residual**2) / self.noise_std**2 - d_y * (
            jnp.log(self.noise_std) + 0.5 * jnp.log(2 * jnp.pi)
        )

    def pointwise_log_likelihood(self, x):
        """``log N(y_k; A(x)_k, noise_std^2)`` for each entry of ``y``: shape ``(d_y,)``."""
        residual = self.y - self.apply(x)
        return -0.5 * residual**2 / self.noise_std**2 - jnp.log(self.noise_std) - 0.5 * _LOG_2PI

    def log_likelihood_inflated(self, x0, extra_variance):
        """``log N(y; A(x0), sigma_y^2 I + extra_variance * A A^T)``: the likelihood when ``x``
        is ``x0`` plus ``N(0, extra_variance I)`` noise (exact for linear ``A``, via the SVD;
        ``sigma_y^2 + extra_variance`` per entry for a nonlinear map)."""
        noise_var = self.noise_std**2
        if not self.is_linear:
            variance = noise_var + extra_variance
            residual = self.y - self.forward(x0)
            return -0.5 * jnp.sum(residual**2 / variance + jnp.log(variance) + _LOG_2PI)
        s = self.forward.singular_values
        y_bar = self.forward.left.T @ self.y
        variance = noise_var + extra_variance * s**2  # (r,)
        in_range = -0.5 * jnp.sum(
            (y_bar - s * self.forward.to_row_space(x0)) ** 2 / variance + jnp.log(variance) + _LOG_2PI
        )
        # The part of y outside the range of A is pure noise whatever x is.
        num_outside = self.y.shape[0] - s.shape[0]
        outside = jnp.sum(self.y**2) - jnp.sum(y_bar**2)
        return in_range - 0.5 * (outside / noise_var + num_outside * (jnp.log(noise_var) + _LOG_2PI))

    def potential_grad(self, x):
        """``grad mu(x)`` with ``mu = -log p(y | x)``; ``A^T (A x - y) / sigma_y^2`` when linear."""
        if self.is_linear:
            return self.forward.transpose(self.forward.apply(x) - self.y) / self.noise_std**2
        return -jax.grad(self.log_likelihood)(x)

    def potential_laplacian(self, x):
        """``trace Hess mu(x)``: ``||A||_F^2 / sigma_y^2`` when linear, else the exact Hessian trace."""
        if self.is_linear:
            return jnp.sum(self.forward.singular_values**2) / self.noise_std**2
        return jnp.trace(jax.hessian(lambda z: -self.log_likelihood(z))(x))

    def require_linear(self, sampler: str) -> LinearOperator:
        if not self.is_linear:
            raise TypeError(
                f"{sampler} needs a linear forward map with an SVD (a matrix, a mask or a LinearOperator); "
                "got a function. Use afdps, tds or dps for nonlinear forward maps"
            )
        return self.forward


def measurement(forward, y, noise_std: float, dim: int | None = None) -> Measurement:
    """Bind a forward map, an observation and a noise level, checking shapes.

    Args:
        forward: a matrix ``(d_y, d)``, a :class:`LinearOperator` (e.g. :class:`MaskOperator`),
            or a function ``x (d,) -> (d_y,)`` (then ``dim`` is required).
        y: the observation, shape ``(d_y,)``.
        noise_std: the measurement noise standard deviation ``sigma_y > 0``.
        dim: ``d``; checked against the operator when given.

    Raises:
        ValueError: naming the shapes, if ``A``, ``x`` and ``y`` disagree or ``noise_std <= 0``;
            naming the array and its first bad index, if ``A`` or ``y`` has a NaN or inf.
    """
    _check_finite("y", y)
    y = jnp.asarray(y, jnp.float32)
    _check_finite("y (as float32)", y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (d_y,), got shape {y.shape}")
    if not (np.isfinite(noise_std) and float(noise_std) > 0):
        raise ValueError(f"noise_std must be a positive number, got {noise_std}")
    if isinstance(forward, Callable) and not isinstance(forward, LinearOperator):
        if dim is None:
            raise ValueError("a nonlinear forward function needs dim= (the length of x)")
        out = jax.eval_shape(forward, jax.ShapeDtypeStruct((dim,), jnp.float32))
        if out.shape != y.shape:
            raise ValueError(
                f"the forward function maps x of shape ({dim},) to {out.shape}, but y has shape {y.shape}"
            )
        return Measurement(forward, y, float(noise_std), dim)
    operator = forward if isinstance(forward, LinearOperator) else MatrixOperator(forward)
    d_y, d = operator.shape
    if y.shape[0] != d_y:
        raise ValueError(f"the forward map has shape {operator.shape} (d_y, d) but y has shape {y.shape}")
    if dim is not None and dim != d:
        raise ValueError(f"the forward map has shape {operator.shape} (d_y, d) but x has dimension {dim}")
    return Measurement(operator, y, float(noise_std), d)
