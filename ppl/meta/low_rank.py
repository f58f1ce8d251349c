"""A precision ``F F^T + diag(D)`` with few columns in ``F``: NIW's full local posterior.

The full local precision of :mod:`ppl.meta.niw` is the Gauss-Newton matrix of the support
loss, of rank (support points x outputs), plus the prior's diagonal. Solves, the
log-determinant and the diagonal of the inverse go through the Woodbury identity and the
small ``(r, r)`` matrix ``I + F^T D^-1 F``, whose Cholesky factor is computed in plain
``jnp``.

Example:
    >>> import jax.numpy as jnp
    >>> from ppl.meta.low_rank import LowRankPrecision
    >>> precision = LowRankPrecision(jnp.ones((3, 1)), jnp.ones(3))
    >>> bool(jnp.allclose(precision.dense() @ precision.solve(jnp.arange(3.0)), jnp.arange(3.0), atol=1e-5))
    True
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["LowRankPrecision"]


class LowRankPrecision(NamedTuple):
    """The precision ``F F^T + diag(D)`` of a full local posterior, ``F`` ``(d_l, r)``,
    ``D`` ``(d_l,)``, with ``r`` small: solves, the log-determinant and the diagonal of the
    inverse by the Woodbury identity through the ``(r, r)`` matrix ``I + F^T D^-1 F``.

    Its Cholesky factor is computed in plain ``jnp`` (a loop over ``r`` columns), not by
    LAPACK: on XLA CPU (jaxlib 0.10.2) LAPACK factorisations inside a jitted training
    loop hung (seen with Cholesky, eigh and LU solves in the same program).
    """

    factor: jax.Array
    diagonal: jax.Array

    def _core(self):
        scaled = self.factor / self.diagonal[:, None]
        core = jnp.eye(self.factor.shape[1], dtype=self.factor.dtype) + self.factor.T @ scaled
        return scaled, _cholesky(core)

    def solve(self, v: jax.Array) -> jax.Array:
        """``(F F^T + D)^-1 v`` for ``v`` ``(d_l,)`` or ``(d_l, n)``."""
        scaled, cholesky = self._core()
        inner = _cholesky_solve(cholesky, scaled.T @ v)
        divided = v / (self.diagonal if v.ndim == 1 else self.diagonal[:, None])
        return divided - scaled @ inner

    def log_det(self) -> jax.Array:
        _, cholesky = self._core()
        return jnp.sum(jnp.log(self.diagonal)) + 2.0 * jnp.sum(jnp.log(jnp.diag(cholesky)))

    def inverse_diagonal(self) -> jax.Array:
        """``diag((F F^T + D)^-1)``, ``(d_l,)``."""
        scaled, cholesky = self._core()
        # D^-1 - D^-1 F C^-1 F^T D^-1 with C = L L^T: subtract the squared rows of D^-1 F L^-T.
        rows = _lower_solve(cholesky, scaled.T).T
        return 1.0 / self.diagonal - jnp.sum(jnp.square(rows), axis=1)

    def dense(self) -> jax.Array:
        """The ``(d_l, d_l)`` matrix."""
        return self.factor @ self.factor.T + jnp.diag(self.diagonal)


def _cholesky(a: jax.Array) -> jax.Array:
    """Lower Cholesky factor of a small SPD matrix, column by column in plain ``jnp``."""
    size = a.shape[0]
    rows = jnp.arange(size)

    def column(j, lower):
        residual = a[:, j] - lower @ lower[j, :]
        pivot = jnp.sqrt(residual[j])
        return lower.at[:, j].set(jnp.where(rows > j, residual / pivot, jnp.where(rows == j, pivot, 0.0)))

    return jax.lax.fori_loop(0, size, column, jnp.zeros_like(a))


def _lower_solve(lower: jax.Array, b: jax.Array) -> jax.Array:
    """``lower^-1 b`` by forward substitution, ``b`` ``(r,)`` or ``(r, n)``."""

    def row(i, x):
        return x.at[i].set((b[i] - lower[i] @ x) / lower[i, i])

    return jax.lax.fori_loop(0, lower.shape[0], row, jnp.zeros_like(b))


def _cholesky_solve(lower: jax.Array, b: jax.Array) -> jax.Array:
    """``(lower lower^T)^-1 b``."""
    y = _lower_solve(lower, b)
    upper = lower.T

    def row(k, x):
        i = upper.shape[0] - 1 - k
        return x.at[i].set((y[i] - upper[i] @ x) / upper[i, i])

    return jax.lax.fori_loop(0, upper.shape[0], row, jnp.zeros_like(y))
