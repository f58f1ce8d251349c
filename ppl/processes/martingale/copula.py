"""The bivariate Gaussian-copula predictive rule of Fong, Holmes & Walker (2023), one
update at a time: pure functions on one point's state, with no data loops.

State of a point ``y`` (``d`` features) under the current predictive ``P_i``: the log of
its conditional CDFs ``log P_i(y_j | y_<j)`` ``(d,)`` and the log of its joint density
``log p_i(y)`` (scalar). Observing a new point whose conditional CDFs are ``v`` ``(d,)``
moves every state with weight ``alpha``:

* ``p_i(y) = [1 - alpha + alpha prod_j c_rho(u_j, v_j)] p_{i-1}(y)``
* ``P_i(y_j | y_<j) = [(1 - alpha) u_j + alpha C_<j H_rho(u_j | v_j)] / [1 - alpha + alpha C_<j]``
  with ``C_<j = prod_{k<j} c_rho(u_k, v_k)`` (the factorised multivariate form),

where ``c_rho`` is the bivariate Gaussian copula density, ``H_rho`` its conditional
distribution and ``alpha_i = (2 - 1/i) / (i + 1)`` (:func:`log_alpha`). If ``v`` is
uniform (the next point drawn from ``P_{i-1}``), ``E[c_rho(u, V)] = 1`` and
``E[H_rho(u | V)] = u``: the density and the CDFs are martingales, which is what
predictive resampling needs. Binary outcomes use the Bernoulli form
(:func:`bernoulli_update`); regression makes ``alpha`` depend on covariates
(:func:`log_covariate_alpha`).

Clipping follows the authors' code (``edfong/MP``): CDFs to ``[1e-6, 1 - 1e-6]`` before
``Phi^-1``, covariate weights to ``[1e-5, 1 - 1e-5]``, probabilities to
``[5e-5, 1 - 5e-5]``.

Example:
    >>> import jax.numpy as jnp
    >>> from ppl.processes.martingale import copula
    >>> log_cdf, log_pdf = copula.standard_normal_state(jnp.array([0.3]))
    >>> log_cdf, log_pdf = copula.update(log_cdf, log_pdf, jnp.array([0.5]), copula.log_alpha(0), 0.9)
    >>> log_cdf.shape, log_pdf.shape
    ((1,), ())
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr, ndtri
from jax.scipy.stats import norm

__all__ = [
    "bernoulli_update",
    "copula_terms",
    "log_alpha",
    "log_covariate_alpha",
    "log_covariate_alphas",
    "standard_normal_state",
    "update",
]

CDF_CLIP = 1e-6
ALPHA_CLIP = 1e-5
PROBABILITY_CLIP = 5e-5


def log_alpha(i):
    """``log alpha`` for the ``i``-th update, ``i`` counted from 0:
    ``alpha = (2 - 1/(i + 1)) / (i + 2)`` (1/2, 1/2, 5/12, ...), the authors' sequence."""
    i = jnp.asarray(i)
    return jnp.log(2.0 - 1.0 / (i + 1.0)) - jnp.log(i + 2.0)


def standard_normal_state(y):
    """The state of the point ``y`` ``(d,)`` under ``P_0 = N(0, I)``: ``(log_cdf (d,), log_pdf ())``.
    CDFs are clipped to ``[1e-6, 1 - 1e-6]`` and log-densities floored at ``log 1e-6`` per
    feature, as in the authors' code."""
    log_cdf = jnp.clip(norm.logcdf(y), jnp.log(CDF_CLIP), jnp.log1p(-CDF_CLIP))
    log_pdf = jnp.maximum(norm.logpdf(y), jnp.log(CDF_CLIP))
    return log_cdf, jnp.sum(log_pdf)


def copula_terms(u, v, rho):
    """``(log H_rho(u | v), log c_rho(u, v))`` of the bivariate Gaussian copula, elementwise.

    ``c_rho(u, v) = (1 - rho^2)^-1/2 exp(-[rho^2 (a^2 + b^2) - 2 rho a b] / (2 (1 - rho^2)))``
    and ``H_rho(u | v) = Phi((a - rho b) / sqrt(1 - rho^2))`` with ``a = Phi^-1(u)``,
    ``b = Phi^-1(v)``.
    """
    u = jnp.clip(u, CDF_CLIP, 1 - CDF_CLIP)
    v = jnp.clip(v, CDF_CLIP, 1 - CDF_CLIP)
    a, b = ndtri(u), ndtri(v)
    one_minus = 1.0 - rho**2
    log_h = log_ndtr((a - rho * b) / jnp.sqrt(one_minus))
    log_h = jnp.clip(log_h, jnp.log(CDF_CLIP), jnp.log1p(-CDF_CLIP))
    log_c = -0.5 * jnp.log(one_minus) - (rho**2 * (a**2 + b**2) - 2 * rho * a * b) / (2 * one_minus)
    return log_h, log_c


def update(log_cdf, log_pdf, v, log_weight, rho):
    """One copula update of a point's state after observing a point with conditional CDFs ``v``.

    Args:
        log_cdf: ``(d,)`` log conditional CDFs of the point under ``P_{i-1}``.
        log_pdf: ``()`` its log joint density under ``P_{i-1}``.
        v: ``(d,)`` conditional CDFs of the observed point under ``P_{i-1}``.
        log_weight: ``log alpha`` (or a covariate-dependent ``log alpha(x)``).
        rho: the bandwidth in ``(0, 1)``, scalar or ``(d,)``.

    Returns:
        ``(log_cdf, log_pdf)`` under ``P_i``.
    """
    log_h, log_c = copula_terms(jnp.exp(log_cdf), v, rho)
    log_c_upto = jnp.cumsum(log_c)
    log_c_before = jnp.concatenate([jnp.zeros(1, log_c.dtype), log_c_upto[:-1]])
    log_keep = jnp.log1p(-jnp.exp(log_weight))
    new_log_cdf = jnp.logaddexp(log_keep + log_cdf, log_weight + log_c_before + log_h) - jnp.logaddexp(
        log_keep, log_weight + log_c_before
    )
    new_log_pdf = jnp.logaddexp(log_keep, log_weight + log_c_upto[-1]) + log_pdf
    return new_log_cdf, new_log_pdf


def log_covariate_alpha(log_weight, x, x_new, rho_x):
    """The regression weight ``alpha(x) = alpha k(x, x_new) / (1 - alpha + alpha k(x, x_new))``
    on the log scale, clipped to ``[1e-5, 1 - 1e-5]``.

    ``k(x, x') = prod_j c_{rho_j}`` evaluated at standardised covariates as Gaussian
    scores: ``(1 - rho_j^2)^-1/2 exp(-[rho_j^2 (x_j^2 + x_j'^2) - 2 rho_j x_j x_j'] / (2 (1 - rho_j^2)))``.

    Args:
        log_weight: ``log alpha`` of this step.
        x: ``(p,)`` the point whose predictive moves; ``x_new``: ``(p,)`` the observed one.
        rho_x: ``(p,)`` or scalar bandwidths in ``(0, 1)``.
    """
    rho_x = jnp.broadcast_to(rho_x, x.shape)
    one_minus = 1.0 - rho_x**2
    log_k = jnp.sum(
        -0.5 * jnp.log(one_minus) - (rho_x**2 * (x**2 + x_new**2) - 2 * rho_x * x * x_new) / (2 * one_minus)
    )
    log_keep = jnp.log1p(-jnp.exp(log_weight))
    log_alpha_x = log_weight + log_k - jnp.logaddexp(log_keep, log_weight + log_k)
    return jnp.clip(log_alpha_x, jnp.log(ALPHA_CLIP), jnp.log1p(-ALPHA_CLIP))


def log_covariate_alphas(i, x_points, x_new, rho_x):
    """:func:`log_covariate_alpha` of the ``i``-th update at every row of ``x_points (m, p)``, ``(m,)``."""
    return jax.vmap(log_covariate_alpha, (None, 0, None, None))(log_alpha(i), x_points, x_new, rho_x)


def bernoulli_update(log_p, log_v, y_new, log_weight, rho):
    """One update of ``log p(y = 1 | x)`` after observing ``y_new`` in ``{0, 1}`` at a
    point where ``p(y = 1) = v``.

    ``p_i = [1 - alpha + alpha k] p_{i-1}`` with ``k = 1 - rho + rho min(u, v) / (u v)``
    if ``y_new = 1`` and ``k = 1 - rho + rho (1 / (1 - v) - min(u, v) / (u (1 - v)))``
    if ``y_new = 0`` (``u = p_{i-1}``): a Bernoulli analogue of the copula update whose
    expectation over ``y_new ~ Bernoulli(v)`` is ``p_{i-1}``.
    """
    low, high = jnp.log(PROBABILITY_CLIP), jnp.log1p(-PROBABILITY_CLIP)
    log_p = jnp.clip(log_p, low, high)
    log_v = jnp.clip(log_v, low, high)
    log_1mv = jnp.log1p(-jnp.exp(log_v))
    log_min = jnp.minimum(log_p, log_v)
    ratio_one = jnp.exp(log_min - log_p - log_v)
    ratio_zero = jnp.exp(-log_1mv) - jnp.exp(log_min - log_p - log_1mv)
    k = 1 - rho + rho * jnp.where(y_new > 0.5, ratio_one, ratio_zero)
    log_k = jnp.log(jnp.maximum(k, PROBABILITY_CLIP))
    log_keep = jnp.log1p(-jnp.exp(log_weight))
    return jnp.logaddexp(log_keep, log_weight + log_k) + log_p
