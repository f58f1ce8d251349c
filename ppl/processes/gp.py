"""Exact Gaussian-process regression with any kernel (an NNGP / NTK :class:`~ppl.processes.nngp.Network`
or a function ``k(x1, x2)``), and the Gaussian prior as a distribution for ``ppl`` models.

Model: ``f ~ GP(0, k)``, ``y = f(x) + e``, ``e ~ N(0, noise_variance)``; ``y`` may have
``C`` columns (independent outputs sharing the kernel, e.g. one-hot labels).

Jitter policy (absolute, stated): every Cholesky factorises ``K + (noise_variance +
jitter) I`` with ``jitter`` an absolute amount (default ``1e-6``), never scaled by the
kernel (neural-tangents' ``diag_reg`` is relative: ``jitter * mean(diag K)``; pass that
value yourself to match it). If the factor is not finite the matrix is not positive
definite at that jitter: :func:`cholesky` raises a ``ValueError`` naming its size and
smallest eigenvalue (outside ``jit``).

Predictions name both variances: ``latent_variance`` of ``f(x*)`` and
``observed_variance`` of a new ``y*`` (latent plus noise).

Example:
    >>> import jax.numpy as jnp
    >>> from ppl.processes import gp, nngp
    >>> x = jnp.linspace(-1, 1, 8)[:, None]; y = jnp.sin(3 * x[:, 0])
    >>> post = gp.regression(nngp.mlp(2, "erf"), x, y, noise_variance=0.01)
    >>> post.predict(x[:2]).mean.shape
    (2,)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular
from numpyro import distributions as dist

from ppl.processes import nngp

__all__ = [
    "Conditioned",
    "GPRegression",
    "Prediction",
    "cholesky",
    "condition",
    "kernel_matrix",
    "predict",
    "prior",
    "regression",
]

DEFAULT_JITTER = 1e-6


def cholesky(matrix, jitter: float = DEFAULT_JITTER, *, name: str = "K"):
    """Lower Cholesky factor of ``matrix + jitter * I`` (``jitter`` absolute).

    Raises:
        ValueError: outside ``jit``, if the factor is not finite: names ``name``, its size
            and its smallest eigenvalue, and suggests a larger jitter.
    """
    matrix = jnp.asarray(matrix)
    n = matrix.shape[-1]
    lower = jnp.linalg.cholesky(matrix + jitter * jnp.eye(n, dtype=matrix.dtype))
    if not isinstance(lower, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(lower))):
        values = np.asarray(matrix)
        smallest = float(np.linalg.eigvalsh(values).min()) if np.all(np.isfinite(values)) else float("nan")
        raise ValueError(
            f"{name} ({n} x {n}) plus jitter {jitter:g} * I is not positive definite: its smallest "
            f"eigenvalue is {smallest:.3g}. Pass a larger jitter= (absolute) or noise_variance=, "
            "or compute the kernel in float64."
        )
    return lower


def kernel_matrix(kernel, x1, x2=None, *, diagonal: bool = False):
    """``k(x1, x2)`` ``(n1, n2)`` (``x2=None``: the Gram of ``x1``), or with ``diagonal``
    ``k(x1[i], x1[i])`` ``(n1,)``, for a :class:`~ppl.processes.nngp.Network` (its NNGP)
    or a function ``kernel(x1, x2) -> (n1, n2)``.

    Raises:
        ValueError: on mismatched feature shapes (naming both).
    """
    if isinstance(kernel, nngp.Network):
        return kernel.kernel(x1, diagonal=True) if diagonal else kernel.kernel(x1, x2)
    if not callable(kernel):
        raise TypeError(f"kernel must be a Network or a function k(x1, x2), got {type(kernel).__name__}")
    x1 = jnp.asarray(x1)
    if diagonal:
        return jax.vmap(lambda x: kernel(x[None], x[None])[0, 0])(x1)
    x2 = x1 if x2 is None else jnp.asarray(x2)
    if x1.shape[1:] != x2.shape[1:]:
        raise ValueError(f"x1 {tuple(x1.shape)} and x2 {tuple(x2.shape)} must have the same feature shape")
    return kernel(x1, x2)


class Conditioned(NamedTuple):
    """Training data factorised once.

    Attributes:
        lower: Cholesky factor of ``K + (noise_variance + jitter) I``, ``(n, n)``.
        alpha: ``(K + ...)^{-1} y``, ``(n, C)``.
        quadratic: ``sum over columns of y^T (K + ...)^{-1} y`` (a scalar).
        log_det: ``log |K + ...|``.
        noise_variance: as given.
    """

    lower: Any
    alpha: Any
    quadratic: Any
    log_det: Any
    noise_variance: Any

    @property
    def num_points(self) -> int:
        return self.alpha.shape[0]

    @property
    def num_outputs(self) -> int:
        return self.alpha.shape[1]

    def gaussian_log_marginal(self):
        """``log N(y; 0, K + noise I)`` summed over the ``C`` columns."""
        n, c = self.alpha.shape
        return -0.5 * self.quadratic - 0.5 * c * self.log_det - 0.5 * n * c * jnp.log(2 * jnp.pi)


def _as_targets(y, n: int):
    y = jnp.asarray(y)
    if y.ndim not in (1, 2) or y.shape[0] != n:
        raise ValueError(
            f"y must have shape ({n},) or ({n}, C) to match the {n} training inputs, got {tuple(y.shape)}"
        )
    if not isinstance(y, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(y))):
        raise ValueError(f"y has {int(jnp.sum(~jnp.isfinite(y)))} non-finite entries; shape {tuple(y.shape)}")
    return y.reshape(n, -1)


def _check_variance(name: str, value):
    if not isinstance(value, jax.core.Tracer):
        array = np.asarray(value)
        if array.shape != () or not np.isfinite(array) or array < 0:
            raise ValueError(f"{name} must be a finite scalar >= 0, got {value!r}")


@jax.jit
def _factorise(k_train, targets, noise_variance, jitter):
    n = k_train.shape[0]
    diagonal = jnp.diagonal(k_train) + noise_variance + jitter
    lower = jnp.linalg.cholesky(k_train.at[jnp.arange(n), jnp.arange(n)].set(diagonal))
    alpha = cho_solve((lower, True), targets)
    return lower, alpha, jnp.sum(targets * alpha), 2 * jnp.sum(jnp.log(jnp.diagonal(lower)))


def condition(k_train, y, noise_variance, jitter: float = DEFAULT_JITTER) -> Conditioned:
    """Factorise ``k_train + (noise_variance + jitter) I`` against targets ``y`` ``(n,)`` or ``(n, C)``.

    Raises:
        ValueError: as :func:`cholesky` (outside ``jit``) if the matrix is not positive
            definite at that jitter.
    """
    _check_variance("noise_variance", noise_variance)
    k_train = jnp.asarray(k_train)
    targets = _as_targets(y, k_train.shape[0]).astype(k_train.dtype)
    lower, alpha, quadratic, log_det = _factorise(k_train, targets, noise_variance, jitter)
    if not isinstance(log_det, jax.core.Tracer) and not bool(jnp.isfinite(log_det)):
        n = k_train.shape[0]
        cholesky(
            k_train + noise_variance * jnp.eye(n, dtype=k_train.dtype),
            jitter,
            name="the training kernel matrix",
        )
    return Conditioned(
        lower=lower, alpha=alpha, quadratic=quadratic, log_det=log_det, noise_variance=noise_variance
    )


class Prediction(NamedTuple):
    """Gaussian predictive at test inputs.

    Attributes:
        mean: ``(m,)`` or ``(m, C)``: the posterior mean of ``f(x*)`` (and of ``y*``).
        latent_variance: ``(m,)``: variance of ``f(x*)`` given the data.
        observed_variance: ``(m,)``: variance of a new observation ``y* = f(x*) + e``.
    """

    mean: Any
    latent_variance: Any
    observed_variance: Any

    def log_density(self, y, *, observed: bool = True):
        """Pointwise ``log N(y; mean, variance)`` ``(m,)`` or ``(m, C)``; the observed
        variance by default (held-out targets), the latent one with ``observed=False``."""
        variance = self.observed_variance if observed else self.latent_variance
        y = jnp.asarray(y)
        scale = jnp.sqrt(variance if y.ndim == 1 else variance[:, None])
        return dist.Normal(self.mean, scale).log_prob(y)


def predict(conditioned: Conditioned, k_cross, k_test_diag):
    """``(mean (m, C), latent_variance (m,))`` from the factorised data and the test
    kernels ``k_cross (m, n)`` and ``k_test_diag (m,)``."""
    mean = k_cross @ conditioned.alpha
    half = solve_triangular(conditioned.lower, k_cross.T, lower=True)
    latent = jnp.maximum(k_test_diag - jnp.sum(half * half, axis=0), 0.0)
    return mean, latent


class GPRegression(NamedTuple):
    """An exact GP posterior (from :func:`regression`)."""

    kernel: Any
    x_train: Any
    conditioned: Conditioned
    squeeze: bool

    @property
    def log_marginal_likelihood(self):
        """``log p(y | x)`` (all ``C`` columns)."""
        return self.conditioned.gaussian_log_marginal()

    def predict(self, x_test) -> Prediction:
        """Predictive mean and both variances at ``x_test`` ``(m, ...)``."""
        k_cross = kernel_matrix(self.kernel, x_test, self.x_train)
        mean, latent = predict(self.conditioned, k_cross, kernel_matrix(self.kernel, x_test, diagonal=True))
        return Prediction(
            mean[:, 0] if self.squeeze else mean, latent, latent + self.conditioned.noise_variance
        )


def regression(kernel, x_train, y_train, *, noise_variance, jitter: float = DEFAULT_JITTER) -> GPRegression:
    """Condition ``GP(0, kernel)`` on ``y_train = f(x_train) + N(0, noise_variance)``.

    Args:
        kernel: a :class:`~ppl.processes.nngp.Network` (its NNGP) or ``k(x1, x2)``.
        x_train: ``(n, ...)`` inputs.
        y_train: ``(n,)`` or ``(n, C)`` targets.
        noise_variance: observation noise variance (``>= 0``).
        jitter: absolute diagonal jitter (see the module docstring).
    """
    k_train = kernel_matrix(kernel, x_train)
    conditioned = condition(k_train, y_train, noise_variance, jitter)
    return GPRegression(kernel, jnp.asarray(x_train), conditioned, jnp.ndim(y_train) == 1)


def prior(kernel, x, *, noise_variance=0.0, scale=1.0, jitter: float = DEFAULT_JITTER, devices: int = 1):
    """``MultivariateNormal(0, scale * (K(x, x) + noise_variance I))``: the process at ``x``
    as a NumPyro distribution, for ``ppl.sample("f", gp.prior(net, x))`` or an observed
    ``ppl.sample("y", gp.prior(net, x, noise_variance=s2), obs=y)``.

    Kernel hyperparameters (``W_std`` / ``b_std`` of the layers), ``noise_variance`` and
    ``scale`` (a last-layer variance, e.g. drawn from an inverse gamma) may be sampled
    sites: NUTS differentiates through the kernel recursion. For ``C`` outputs use
    ``.expand([C])`` and observe ``y.T``.
    """
    k = (
        nngp.kernel(kernel, x, devices=devices)
        if isinstance(kernel, nngp.Network)
        else kernel_matrix(kernel, x)
    )
    n = k.shape[0]
    lower = jnp.linalg.cholesky(k + (noise_variance + jitter) * jnp.eye(n, dtype=k.dtype))
    return dist.MultivariateNormal(jnp.zeros(n, k.dtype), scale_tril=jnp.sqrt(scale) * lower)
