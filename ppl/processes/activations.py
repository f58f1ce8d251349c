"""Gaussian expectations of activations: the maps an elementwise layer applies to kernels.

For pre-activations ``(u, v) ~ N(0, [[a, c], [c, b]])`` an activation ``phi`` maps the
covariance ``c`` to ``T(a, b, c) = E[phi(u) phi(v)]`` (the NNGP) and contributes
``Tdot(a, b, c) = E[phi'(u) phi'(v)]`` to the NTK. Closed forms for ReLU (arc-cosine,
Cho & Saul 2009), Erf (Williams 1997) and the identity; 2-D Gauss-Hermite quadrature for
any other elementwise function, with derivatives in ``(a, b, c)`` by Price's theorem
(``dT/dc = E[phi' phi']``, ``dT/da = E[phi'' (u) phi(v)] / 2``) so gradients stay finite on
the diagonal ``c^2 = ab`` (empirical Bayes and NUTS over weight variances need them).

Example:
    >>> import jax.numpy as jnp
    >>> from ppl.processes.activations import relu_expectations
    >>> nngp, ntk = relu_expectations(jnp.array(1.3), jnp.array(0.7), jnp.array(0.5))
    >>> round(float(nngp), 5), round(float(ntk), 5)
    (0.2982, 0.33781)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "erf_expectations",
    "gauss_hermite_expectations",
    "identity_expectations",
    "relu_expectations",
]


def _safe_sqrt(x):
    """``sqrt(max(x, 0))`` with a zero gradient where ``x <= 0`` (never ``inf * 0``).

    The fallback inside the square root is the smallest normal number, not 1: under
    ``jit`` XLA may evaluate ``x`` twice with different rounding (FMA contraction), so the
    two masks can disagree on the diagonal ``x ~ 0``; a fallback of 1 then leaks
    ``sqrt(1)`` into the kernel (a ReLU Gram entry off by ``1 / 2 pi``).
    """
    x = jnp.maximum(x, 0.0)
    positive = x > 0
    tiny = jnp.finfo(jnp.result_type(x, float)).tiny
    return jnp.sqrt(jnp.where(positive, x, tiny)) * positive


@jax.custom_jvp
def _relu_nngp(a, b, c):
    sine = _safe_sqrt(a * b - c * c)  # sqrt(ab) sin(theta)
    theta = jnp.arctan2(sine, c)
    return (sine + (jnp.pi - theta) * c) / (2 * jnp.pi)


@_relu_nngp.defjvp
def _relu_nngp_jvp(primals, tangents):
    # Analytic partials: dT/dc = (pi - theta) / 2 pi, and
    # dT/da = sqrt(b/a) J / 4 pi - (pi - theta) c / (4 pi a), J = sin + (pi - theta) cos;
    # finite on the diagonal, where the chain rule through sqrt(ab - c^2) is not.
    a, b, c = primals
    ta, tb, tc = tangents
    value = _relu_nngp(a, b, c)
    theta = jnp.arctan2(_safe_sqrt(a * b - c * c), c)
    slope = (jnp.pi - theta) / (2 * jnp.pi)
    safe_a = jnp.where(a > 0, a, 1.0)
    safe_b = jnp.where(b > 0, b, 1.0)
    # value / a = sqrt(b/a) J / 2 pi, so sqrt(b/a) J / 4 pi = value / (2a).
    da = jnp.where(a > 0, value / (2 * safe_a) - slope * c / (2 * safe_a), 0.0)
    db = jnp.where(b > 0, value / (2 * safe_b) - slope * c / (2 * safe_b), 0.0)
    return value, da * ta + db * tb + slope * tc


def relu_expectations(a, b, c):
    """``E[relu(u) relu(v)]`` and ``E[1(u > 0) 1(v > 0)]`` (arc-cosine kernel of order 1).

    Args:
        a, b: variances of ``u`` and ``v`` (broadcastable arrays, ``>= 0``).
        c: their covariance.

    Returns:
        ``(nngp, ntk_factor)``, each of the broadcast shape.
    """
    theta = jnp.arctan2(_safe_sqrt(a * b - c * c), c)
    return _relu_nngp(a, b, c), (jnp.pi - theta) / (2 * jnp.pi)


def erf_expectations(a, b, c):
    """``E[erf(u) erf(v)] = (2/pi) arcsin(2c / sqrt((1 + 2a)(1 + 2b)))`` and
    ``E[erf'(u) erf'(v)] = (4/pi) / sqrt((1 + 2a)(1 + 2b) - 4c^2)``; same arguments as
    :func:`relu_expectations`."""
    product = (1 + 2 * a) * (1 + 2 * b)
    nngp = (2 / jnp.pi) * jnp.arcsin(2 * c / jnp.sqrt(product))
    return nngp, (4 / jnp.pi) / jnp.sqrt(product - 4 * c * c)


def identity_expectations(a, b, c):
    """The identity: ``(c, 1)``."""
    del a, b
    return c, jnp.ones_like(c)


@functools.lru_cache(maxsize=8)
def _hermite(degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss-Hermite nodes and weights for ``E[g(z)], z ~ N(0, 1)``."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(degree)
    return nodes, weights / np.sqrt(2 * np.pi)


def _pair_expectation(f, g, a, b, c, degree):
    """``E[f(u) g(v)]`` for ``(u, v) ~ N(0, [[a, c], [c, b]])`` by tensor Gauss-Hermite.

    ``u = sqrt(a) z1``, ``v = (c / sqrt(a)) z1 + sqrt(b - c^2 / a) z2``; exact for
    polynomials of degree ``< 2 * degree`` in ``(z1, z2)``.
    """
    nodes, weights = _hermite(degree)
    dtype = jnp.result_type(a, b, c, float)
    z, w = jnp.asarray(nodes, dtype), jnp.asarray(weights, dtype)
    a, b, c = (jnp.asarray(t, dtype)[..., None, None] for t in (a, b, c))
    safe_a = jnp.where(a > 0, a, 1.0)
    root_a = jnp.where(a > 0, jnp.sqrt(safe_a), 0.0)
    along = jnp.where(a > 0, c / jnp.sqrt(safe_a), 0.0)
    across = _safe_sqrt(b - along * along)
    u = root_a * z[:, None]
    v = along * z[:, None] + across * z[None, :]
    return jnp.sum(f(u) * g(v) * w[:, None] * w[None, :], axis=(-2, -1))


def _derivative(fn):
    return jnp.vectorize(jax.grad(lambda x: fn(x)))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 4))
def _quadrature_nngp(fn, a, b, c, degree):
    return _pair_expectation(fn, fn, a, b, c, degree)


@_quadrature_nngp.defjvp
def _quadrature_nngp_jvp(fn, degree, primals, tangents):
    # Price's theorem: dE/dc = E[f'(u) f'(v)], dE/da = E[f''(u) f(v)] / 2, dE/db likewise.
    a, b, c = primals
    ta, tb, tc = tangents
    first = _derivative(fn)
    second = _derivative(first)
    value = _quadrature_nngp(fn, a, b, c, degree)
    dc = _pair_expectation(first, first, a, b, c, degree)
    da = 0.5 * _pair_expectation(second, fn, a, b, c, degree)
    db = 0.5 * _pair_expectation(fn, second, a, b, c, degree)
    return value, da * ta + db * tb + dc * tc


def gauss_hermite_expectations(fn, a, b, c, degree: int = 48):
    """``E[fn(u) fn(v)]`` and ``E[fn'(u) fn'(v)]`` by ``degree x degree`` Gauss-Hermite
    quadrature, for any elementwise ``fn`` written in ``jax.numpy``.

    The quadrature is exact for polynomial ``fn`` of degree below ``degree``; for smooth
    activations (tanh, GELU, erf) at pre-activation variances of order one, 48 nodes per
    axis reach about 1e-12 (32 nodes: 1e-8; ``tests/processes`` checks it against the Erf
    closed form). Non-smooth activations converge slowly (ReLU: about 1e-3 at 48 nodes):
    use their closed forms. Gradients in ``(a, b, c)`` need ``fn`` twice differentiable.
    """
    nngp = _quadrature_nngp(fn, a, b, c, degree)
    first = _derivative(fn)
    return nngp, _pair_expectation(first, first, a, b, c, degree)
