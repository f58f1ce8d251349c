"""Sparse variational Student-t and Gaussian process classifiers (SVTP, SVGP), fitted with ``ppl.vi``.

The categorical-likelihood model of Lee, Yun, Yang & Lee (ICLR 2022; the authors'
``spax/models.py::SVSP``), over any kernel (an NNGP :class:`~ppl.processes.nngp.Network`
or a function ``k(x1, x2)``). ``C`` latent functions, one per class, share the kernel
and ``M`` inducing inputs ``Z``; ``u_c = f_c(Z)``::

    SVGP  u_c ~ N(0, K_ZZ)                         q(u_c) = N(m_c, S_c)
    SVTP  s2 ~ IG(alpha, beta), u_c | s2 ~ N(0, s2 K_ZZ)
          q(s2) = IG(a, b),     q(u_c | s2) = N(m_c, s2 S_c)
    y_i | f(x_i) ~ Categorical(softmax(f_1(x_i), ..., f_C(x_i)))

Given ``s2`` (``s2 = 1`` for SVGP), ``q(f_c(x) | s2) = N(A m_c, s2 (k_xx - A K_ZX + A S_c A^T))``
with ``A = K_xZ K_ZZ^{-1}``; marginally SVTP's ``q(f_c(x))`` is a Student-t with ``2a``
degrees of freedom and scale ``(b / a)`` times that variance (the mean is not scaled).

Objective (maximised; :func:`objective`, a :class:`ppl.vi.Expectation` over
``(params, x, y)``): ``mean_i E_q[log softmax(f(x_i))_{y_i}] - KL / N``, one Monte Carlo draw
of ``f`` per datum, reparameterised (``s2`` by implicit reparameterisation of the
inverse gamma, one draw per datum: each term needs only the marginal ``q(s2, f(x_i))``,
and independent draws lower the variance). ``KL = KL(q(u, s2) || p(u, s2))`` is exact
(:func:`kl_divergence`)::

    KL = 1/2 [C log|K_ZZ| - sum_c log|S_c| - M C + sum_c tr(K_ZZ^{-1} S_c)
              + E_q[1/s2] sum_c m_c^T K_ZZ^{-1} m_c] + KL(IG(a, b) || IG(alpha, beta)),
    E_q[1/s2] = a / b,
    KL_IG = alpha ln(b / beta) - lnGamma(a) + lnGamma(alpha) + (a - alpha) psi(a) + (beta - b) a / b

(the note's formula, derived in :func:`kl_divergence` and checked against Monte Carlo in
the tests). :func:`fit` minibatches with :func:`ppl.vi.fit` (``batch_size``; the KL is
divided by the full ``N``); ``num_particles`` draws of ``f`` per datum are averaged in each
estimate (the authors' ``S``). Prediction (:func:`log_predictive`) averages ``softmax(f)``
over draws of ``q`` with one ``s2`` per draw and point, shared by its ``C`` classes (the
authors' test code draws independent Student-t marginals per class instead).

Parameters (:class:`VariationalParams`): ``m_c``, ``S_c`` (``"diagonal"`` as the authors,
or ``"full"``: a Cholesky factor), ``Z`` (trained by default as the authors; fixed with
``train_inducing=False``), and for SVTP ``log a``, ``log b``. The kernel's own
hyperparameters are fixed (choose them beforehand): SVGP depends on the readout variance
(``last_W_std``) through the logits' scale, while SVTP learns that scale as ``s2``, so
keep SVTP's readout variance at 1 as the authors do. Jitter: an absolute ``jitter * I`` on ``K_ZZ``
(:func:`ppl.processes.gp.cholesky`).

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from ppl.processes import nngp, svtp
    >>> x = jnp.concatenate([jnp.full((4, 2), -1.0), jnp.full((4, 2), 1.0)])
    >>> y = jnp.array([0] * 4 + [1] * 4)
    >>> model = svtp.svtp(nngp.mlp(1, "relu", b_std=1.0), num_classes=2)
    >>> result = svtp.fit(model, x, y, num_inducing=2, steps=50, key=jax.random.key(0))
    >>> log_probs = svtp.log_predictive(model, result.params, x, key=jax.random.key(1))
    >>> log_probs.shape
    (8, 2)
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import digamma, gammaln, logsumexp
from numpyro import distributions as dist

from ppl.model.dsl import sample
from ppl.processes import gp
from ppl.processes import nngp as nngp_module
from ppl.vi import Expectation, VIResult, expectation, implicit, reparam, sim
from ppl.vi import fit as vi_fit

__all__ = [
    "COVARIANCES",
    "PROCESSES",
    "SparseClassifier",
    "VariationalParams",
    "accuracy",
    "fit",
    "init_params",
    "inducing_inputs",
    "inverse_gamma_kl",
    "kl_divergence",
    "latent_guide",
    "log_predictive",
    "negative_log_likelihood",
    "objective",
    "predictive_moments",
    "svgp",
    "svtp",
]

PROCESSES = ("gp", "tp")
COVARIANCES = ("diagonal", "full")


class SparseClassifier(NamedTuple):
    """The static description of an SVGP / SVTP classifier (build it with :func:`svgp` or :func:`svtp`).

    Attributes:
        kernel: a :class:`~ppl.processes.nngp.Network` (its NNGP) or ``k(x1, x2) -> (n1, n2)``.
        num_classes: ``C``.
        process: ``"gp"`` (SVGP) or ``"tp"`` (SVTP).
        prior_concentration, prior_rate: ``alpha``, ``beta`` of the prior ``s2 ~ IG(alpha, beta)`` (SVTP).
        covariance: ``"diagonal"`` (``S_c = diag(s_c)``) or ``"full"`` (``S_c = L_c L_c^T``).
        train_inducing: whether ``Z`` is a trained parameter.
        jitter: absolute jitter added to ``K_ZZ``.
    """

    kernel: Any
    num_classes: int
    process: str = "tp"
    prior_concentration: float = 2.0
    prior_rate: float = 2.0
    covariance: str = "diagonal"
    train_inducing: bool = True
    jitter: float = 1e-5


def _check_classifier(num_classes, process, covariance, prior_concentration, prior_rate, jitter, kernel):
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if process not in PROCESSES:
        raise ValueError(f"process must be one of {PROCESSES}, got {process!r}")
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
    for name, value in (("prior_concentration", prior_concentration), ("prior_rate", prior_rate)):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if not np.isfinite(jitter) or jitter < 0:
        raise ValueError(f"jitter must be a finite number >= 0, got {jitter!r}")
    if not (isinstance(kernel, nngp_module.Network) or callable(kernel)):
        raise TypeError(f"kernel must be a Network or a function k(x1, x2), got {type(kernel).__name__}")
    try:
        hash(kernel)
    except TypeError:
        raise TypeError(
            "kernel must be hashable (it is static configuration of compiled programs): a Network with "
            "float W_std / b_std, or a function"
        ) from None


def svtp(
    kernel,
    num_classes: int,
    *,
    prior_concentration: float = 2.0,
    prior_rate: float = 2.0,
    covariance: str = "diagonal",
    train_inducing: bool = True,
    jitter: float = 1e-5,
) -> SparseClassifier:
    """A sparse variational Student-t process classifier (inverse-gamma scale ``s2``)."""
    _check_classifier(num_classes, "tp", covariance, prior_concentration, prior_rate, jitter, kernel)
    return SparseClassifier(
        kernel,
        int(num_classes),
        "tp",
        float(prior_concentration),
        float(prior_rate),
        covariance,
        bool(train_inducing),
        float(jitter),
    )


def svgp(
    kernel,
    num_classes: int,
    *,
    covariance: str = "diagonal",
    train_inducing: bool = True,
    jitter: float = 1e-5,
) -> SparseClassifier:
    """A sparse variational Gaussian process classifier (the baseline: ``s2 = 1``)."""
    _check_classifier(num_classes, "gp", covariance, 1.0, 1.0, jitter, kernel)
    return SparseClassifier(
        kernel, int(num_classes), "gp", 1.0, 1.0, covariance, bool(train_inducing), float(jitter)
    )


class VariationalParams(NamedTuple):
    """The trained parameters (a pytree; all unconstrained).

    Attributes:
        mean: ``m``, ``(C, M)``.
        scale: ``(C, M)`` log standard deviations (``S_c = diag(exp(2 scale_c))``) for
            ``"diagonal"``; ``(C, M, M)`` for ``"full"``: ``L_c`` is its lower triangle with
            the diagonal exponentiated, ``S_c = L_c L_c^T``.
        inducing: ``Z``, ``(M, ...)`` (inputs' feature shape).
        log_concentration, log_rate: ``log a``, ``log b`` of ``q(s2)`` (``()``; ``None`` for SVGP).
    """

    mean: Any
    scale: Any
    inducing: Any
    log_concentration: Any = None
    log_rate: Any = None


# ------------------------------------------------------------------ input checks


def _check_inputs(model: SparseClassifier, x, y=None):
    """Inputs as an array ``(n, ...)`` and labels as int32 ``(n,)``, with clear errors."""
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(
            f"x must have a leading batch axis: (n, features) or (n, *spatial, channels), got {x.shape}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(float)
    if not isinstance(x, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"x has {int(jnp.sum(~jnp.isfinite(x)))} non-finite entries; shape {tuple(x.shape)}")
    if y is None:
        return x, None
    y_host = np.asarray(y)
    if y_host.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},) (one label per row of x), got {y_host.shape}")
    if not np.issubdtype(y_host.dtype, np.integer):
        if not np.all(np.isfinite(y_host)) or not np.all(y_host == np.round(y_host)):
            raise ValueError(
                f"y must hold integer class labels 0..{model.num_classes - 1}, got dtype {y_host.dtype}"
            )
    bad = (y_host < 0) | (y_host >= model.num_classes)
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(
            f"y has {int(bad.sum())} labels outside 0..{model.num_classes - 1} "
            f"(first: y[{first}] = {y_host[first]}); num_classes = {model.num_classes}"
        )
    return x, jnp.asarray(y_host, dtype=jnp.int32)


def _check_params(model: SparseClassifier, params: VariationalParams, feature_shape=None):
    if not isinstance(params, VariationalParams):
        raise TypeError(f"params must be VariationalParams (from init_params), got {type(params).__name__}")
    c, num_inducing = np.shape(params.mean)
    if c != model.num_classes:
        raise ValueError(
            f"params.mean has shape {np.shape(params.mean)}: {c} rows for {model.num_classes} classes"
        )
    expected = (c, num_inducing) if model.covariance == "diagonal" else (c, num_inducing, num_inducing)
    if np.shape(params.scale) != expected:
        raise ValueError(
            f"params.scale must have shape {expected} for covariance={model.covariance!r}, "
            f"got {np.shape(params.scale)}"
        )
    if np.shape(params.inducing)[0] != num_inducing:
        raise ValueError(
            f"params.inducing has {np.shape(params.inducing)[0]} rows; params.mean has {num_inducing}"
        )
    if feature_shape is not None and tuple(np.shape(params.inducing)[1:]) != tuple(feature_shape):
        raise ValueError(
            f"inputs have feature shape {tuple(feature_shape)}, "
            f"the inducing inputs {tuple(np.shape(params.inducing)[1:])}"
        )
    has_scale = params.log_concentration is not None and params.log_rate is not None
    if has_scale != (model.process == "tp"):
        raise ValueError(
            f"process={model.process!r} needs log_concentration and log_rate "
            + ("(SVTP)" if model.process == "tp" else "to be None (SVGP)")
        )


# ------------------------------------------------------------------ initialisation


def inducing_inputs(x, y, num_inducing: int, num_classes: int):
    """The authors' default ``Z``: the first training inputs of each class, ``(M, ...)``.

    Each class gets ``M // C`` points, the first ``M % C`` classes one more.

    Raises:
        ValueError: if ``M < C`` or a class has fewer training points than it needs.
    """
    if isinstance(num_inducing, bool) or not isinstance(num_inducing, int | np.integer):
        raise ValueError(f"num_inducing must be an integer, got {num_inducing!r}")
    if num_inducing < num_classes:
        raise ValueError(
            f"num_inducing = {num_inducing} < num_classes = {num_classes}: "
            "every class needs an inducing input"
        )
    y_host = np.asarray(y)
    rows = []
    for c in range(num_classes):
        need = num_inducing // num_classes + (1 if c < num_inducing % num_classes else 0)
        members = np.flatnonzero(y_host == c)
        if len(members) < need:
            raise ValueError(
                f"class {c} has {len(members)} training points; {need} inducing inputs need as many"
            )
        rows.append(members[:need])
    return jnp.asarray(x)[np.concatenate(rows)]


def init_params(
    model: SparseClassifier,
    x,
    y,
    num_inducing: int,
    *,
    inducing=None,
    init_variance: float = 0.1,
) -> VariationalParams:
    """Starting parameters: ``m = 0``, ``S_c = init_variance * diag(K_ZZ)``, ``q(s2)`` at the prior,
    ``Z`` from :func:`inducing_inputs` (or ``inducing`` ``(M, ...)``).

    Raises:
        ValueError: on bad labels or shapes, ``M < C``, or a ``K_ZZ`` that is not positive
            definite at the model's jitter (naming its smallest eigenvalue).
    """
    x, y = _check_inputs(model, x, y)
    if inducing is None:
        z = inducing_inputs(x, y, num_inducing, model.num_classes)
    else:
        z = jnp.asarray(inducing, dtype=x.dtype)
        if z.shape[0] != num_inducing or z.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"inducing must have shape ({num_inducing}, *{tuple(x.shape[1:])}), got {tuple(z.shape)}"
            )
        if num_inducing < model.num_classes:
            raise ValueError(f"num_inducing = {num_inducing} < num_classes = {model.num_classes}")
    k_zz = gp.kernel_matrix(model.kernel, z)
    gp.cholesky(k_zz, model.jitter, name="K_ZZ (the inducing inputs' kernel matrix)")
    log_sd = 0.5 * jnp.log(init_variance * jnp.maximum(jnp.diagonal(k_zz), 1e-12))
    log_sd = jnp.broadcast_to(log_sd, (model.num_classes, num_inducing))
    scale = log_sd if model.covariance == "diagonal" else jax.vmap(jnp.diag)(log_sd)
    tp = model.process == "tp"
    dtype = x.dtype
    return VariationalParams(
        mean=jnp.zeros((model.num_classes, num_inducing), dtype),
        scale=scale.astype(dtype),
        inducing=z,
        log_concentration=jnp.log(jnp.asarray(model.prior_concentration, dtype)) if tp else None,
        log_rate=jnp.log(jnp.asarray(model.prior_rate, dtype)) if tp else None,
    )


# ------------------------------------------------------------------ the math


def _inducing(model: SparseClassifier, params: VariationalParams):
    z = params.inducing
    return z if model.train_inducing else jax.lax.stop_gradient(z)


def _scale_factor(model: SparseClassifier, params: VariationalParams):
    """``L_S``: ``(C, M)`` standard deviations (diagonal) or ``(C, M, M)`` lower factors."""
    if model.covariance == "diagonal":
        return jnp.exp(params.scale)
    lower = jnp.tril(params.scale, -1)
    return lower + jax.vmap(jnp.diag)(jnp.exp(jnp.diagonal(params.scale, axis1=1, axis2=2)))


def _concentration_rate(params: VariationalParams):
    return jnp.exp(params.log_concentration), jnp.exp(params.log_rate)


def inverse_gamma_kl(concentration, rate, prior_concentration, prior_rate):
    """``KL(IG(a, b) || IG(alpha, beta))`` (shape, rate), the same as between the Gamma
    laws of ``1 / s2``::

        alpha ln(b / beta) - lnGamma(a) + lnGamma(alpha) + (a - alpha) psi(a) + (beta - b) a / b
    """
    a, b, alpha, beta = concentration, rate, prior_concentration, prior_rate
    return (
        alpha * (jnp.log(b) - jnp.log(beta))
        - gammaln(a)
        + gammaln(alpha)
        + (a - alpha) * digamma(a)
        + (beta - b) * a / b
    )


def kl_divergence(model: SparseClassifier, params: VariationalParams):
    """``KL(q(u, s2) || p(u, s2))`` (a scalar; SVGP: ``KL(q(u) || p(u))``).

    Derivation: ``KL(q(u, s2) || p(u, s2)) = KL(q(s2) || p(s2))
    + E_q(s2) sum_c KL(N(m_c, s2 S_c) || N(0, s2 K))``, and the Gaussian KL is
    ``1/2 [tr(K^-1 S_c) + m_c^T K^-1 m_c / s2 - M + log|K| - log|S_c|]``:
    ``s2`` cancels everywhere but in the Mahalanobis term, whose expectation has
    ``E[1/s2] = a / b`` (``1 / s2 ~ Gamma(a, b)``).
    """
    lower = gp.cholesky(gp.kernel_matrix(model.kernel, _inducing(model, params)), model.jitter, name="K_ZZ")
    c, num_inducing = params.mean.shape
    factor = _scale_factor(model, params)
    full = factor if model.covariance == "full" else jax.vmap(jnp.diag)(factor)
    half = jax.vmap(lambda s: solve_triangular(lower, s, lower=True))(full)  # L_K^{-1} L_S
    trace = jnp.sum(half**2)
    log_det_s = 2 * jnp.sum(jnp.log(jnp.diagonal(full, axis1=1, axis2=2)))
    log_det_k = 2 * jnp.sum(jnp.log(jnp.diagonal(lower)))
    whitened = solve_triangular(lower, params.mean.T, lower=True)  # (M, C)
    mahalanobis = jnp.sum(whitened**2)
    if model.process == "tp":
        a, b = _concentration_rate(params)
        inverse_scale, kl_scale = a / b, inverse_gamma_kl(a, b, model.prior_concentration, model.prior_rate)
    else:
        inverse_scale, kl_scale = 1.0, 0.0
    kl_u = 0.5 * (c * log_det_k - log_det_s - num_inducing * c + trace + inverse_scale * mahalanobis)
    return kl_u + kl_scale


def predictive_moments(model: SparseClassifier, params: VariationalParams, x):
    """Mean and variance of ``q(f_c(x_i) | s2 = 1)``, each ``(n, C)``.

    ``mean = K_xZ K_ZZ^{-1} m_c``, ``variance = k_xx - K_xZ K_ZZ^{-1} K_Zx + A S_c A^T``
    (``A = K_xZ K_ZZ^{-1}``). SVTP: given ``s2`` the variance is ``s2`` times this; the
    marginal is ``t_{2a}(mean, (b / a) variance)``.
    """
    z = _inducing(model, params)
    lower = gp.cholesky(gp.kernel_matrix(model.kernel, z), model.jitter, name="K_ZZ")
    k_zx = gp.kernel_matrix(model.kernel, x, z).T  # (M, n)
    k_xx = gp.kernel_matrix(model.kernel, x, diagonal=True)
    half = solve_triangular(lower, k_zx, lower=True)  # L_K^{-1} K_Zx
    projection = solve_triangular(lower.T, half, lower=False)  # K_ZZ^{-1} K_Zx, (M, n)
    mean = (params.mean @ projection).T
    conditional = jnp.maximum(k_xx - jnp.sum(half**2, axis=0), 0.0)  # (n,)
    factor = _scale_factor(model, params)
    if model.covariance == "diagonal":
        explained = jnp.einsum("cm,mn->nc", factor**2, projection**2)
    else:
        explained = jnp.sum(jnp.einsum("cmk,mn->ckn", factor, projection) ** 2, axis=1).T
    return mean, conditional[:, None] + explained


def latent_guide(params: VariationalParams, mean, variance):
    """``q(s2, f(x_1), ..., f(x_B))`` as a guide for :func:`ppl.vi.sim`: per datum ``s2_i ~ IG(a, b)``
    (SVTP; implicit reparameterisation) and ``f(x_i) | s2_i ~ N(mean_i, s2_i variance_i)``
    (reparameterised). ``mean``, ``variance``: ``(B, C)`` from :func:`predictive_moments`."""
    if params.log_concentration is not None:
        a, b = _concentration_rate(params)
        # Batch shape (B,), not .to_event(1): implicit reparameterisation takes the family itself.
        concentration = jnp.broadcast_to(a, mean.shape[:1])
        s2 = sample("s2", dist.InverseGamma(concentration, b), infer={"grad": implicit()})
        variance = variance * s2[:, None]
    sample("f", dist.Normal(mean, jnp.sqrt(variance)).to_event(2), infer={"grad": reparam()})


def objective(model: SparseClassifier, num_data: int, num_particles: int = 1) -> Expectation:
    """The ELBO per datum, ``mean_i E_q[log softmax(f(x_i))_{y_i}] - KL / num_data``, as a
    :class:`ppl.vi.Expectation` over ``(params, x, y)`` (``x`` ``(B, ...)``, ``y`` ``(B,)`` int).

    ``num_particles`` draws of ``q(s2, f)`` per datum are averaged inside one estimate
    (the kernel matrices are computed once for all of them). Its gradient estimate is
    unbiased for the gradient of the ELBO of a batch (and so of the full-data ELBO /
    ``num_data`` for minibatches drawn uniformly).
    """
    if isinstance(num_data, bool) or not isinstance(num_data, int | np.integer) or num_data < 1:
        raise ValueError(f"num_data must be an integer >= 1 (the training set size), got {num_data!r}")
    num_data = int(num_data)
    if (
        isinstance(num_particles, bool)
        or not isinstance(num_particles, int | np.integer)
        or num_particles < 1
    ):
        raise ValueError(f"num_particles must be an integer >= 1, got {num_particles!r}")
    particles = None if num_particles == 1 else int(num_particles)

    @expectation
    def elbo(params, x, y):
        mean, variance = predictive_moments(model, params, x)
        values, _ = sim(latent_guide, params, mean, variance, particles=particles)
        log_probs = jax.nn.log_softmax(values["f"], axis=-1)  # ([K,] B, C)
        labels = jnp.broadcast_to(y[:, None], (*log_probs.shape[:-1], 1))
        expected = jnp.mean(jnp.take_along_axis(log_probs, labels, axis=-1))
        return expected - kl_divergence(model, params) / num_data

    return elbo


# ------------------------------------------------------------------ fitting and prediction


def fit(
    model: SparseClassifier,
    x,
    y,
    *,
    num_inducing: int,
    steps: int,
    key,
    optimizer: optax.GradientTransformation | None = None,
    batch_size: int | None = None,
    num_samples: int = 1,
    num_particles: int = 1,
    params: VariationalParams | None = None,
    **fit_options,
) -> VIResult:
    """Fit ``model`` to ``(x, y)`` with :func:`ppl.vi.fit` on :func:`objective`.

    Args:
        model: from :func:`svgp` or :func:`svtp`.
        x: training inputs ``(N, ...)``; y: labels ``(N,)`` in ``0..C-1``.
        num_inducing: ``M`` (``>= C``); ``Z`` starts at :func:`inducing_inputs`.
        steps: optimisation steps; key: ``jax.random`` key.
        optimizer: default ``optax.adam(1e-2)`` (the authors').
        batch_size: minibatch size (``None``: all ``N`` every step).
        num_samples: independent gradient estimates averaged per step (:func:`ppl.vi.fit`).
        num_particles: draws of ``q(s2, f)`` per datum inside each estimate (the authors'
            ``S``; cheaper than ``num_samples``, which recomputes the kernels).
        params: starting parameters (default :func:`init_params`).
        **fit_options: passed to :func:`ppl.vi.fit` (``on_nonfinite``, ``progress_bar``, ...).

    Returns:
        :class:`ppl.vi.VIResult`; ``result.params`` are :class:`VariationalParams`.
    """
    x, y = _check_inputs(model, x, y)
    if params is None:
        params = init_params(model, x, y, num_inducing)
    else:
        _check_params(model, params, x.shape[1:])
    optimizer = optax.adam(1e-2) if optimizer is None else optimizer
    return vi_fit(
        objective(model, x.shape[0], num_particles),
        params,
        x,
        y,
        optimizer=optimizer,
        steps=steps,
        key=key,
        num_samples=num_samples,
        batch_size=batch_size,
        batch_argnums=(0, 1),
        **fit_options,
    )


@functools.partial(jax.jit, static_argnames=("model", "num_samples"))
def _log_predictive(model, params, x, rng_key, num_samples):
    mean, variance = predictive_moments(model, params, x)
    scale_key, noise_key = jax.random.split(rng_key)
    shape = (num_samples, *mean.shape)
    if model.process == "tp":
        a, b = _concentration_rate(params)
        s2 = dist.InverseGamma(a, b).sample(scale_key, (num_samples, mean.shape[0]))
        variance = variance * s2[..., None]  # one s2 per draw and point, shared by the classes
    f = mean + jnp.sqrt(variance) * jax.random.normal(noise_key, shape, mean.dtype)
    return logsumexp(jax.nn.log_softmax(f, axis=-1), axis=0) - jnp.log(num_samples)


def log_predictive(
    model: SparseClassifier,
    params: VariationalParams,
    x,
    *,
    key,
    num_samples: int = 1000,
    block_size: int = 256,
):
    """Class log-probabilities ``log mean_s softmax(f_s(x_i))`` ``(n, C)`` by Monte Carlo over
    ``num_samples`` draws of ``q(s2, f(x_i))`` (SVTP: ``s2`` drawn per point and shared by
    its ``C`` classes), in blocks of ``block_size`` points."""
    x, _ = _check_inputs(model, x)
    _check_params(model, params, x.shape[1:])
    if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    blocks = [
        _log_predictive(
            model, params, x[start : start + block_size], jax.random.fold_in(key, i), int(num_samples)
        )
        for i, start in enumerate(range(0, x.shape[0], block_size))
    ]
    return jnp.concatenate(blocks)


def accuracy(log_probs, y) -> float:
    """Share of rows whose most probable class is the label."""
    log_probs, y = np.asarray(log_probs), np.asarray(y)
    if log_probs.ndim != 2 or y.shape != (log_probs.shape[0],):
        raise ValueError(f"log_probs must be (n, C) and y (n,), got {log_probs.shape} and {y.shape}")
    return float(np.mean(np.argmax(log_probs, axis=1) == y))


def negative_log_likelihood(log_probs, y) -> float:
    """Mean test NLL ``-mean_i log p(y_i | x_i)`` (nats)."""
    log_probs, y = np.asarray(log_probs), np.asarray(y)
    if log_probs.ndim != 2 or y.shape != (log_probs.shape[0],):
        raise ValueError(f"log_probs must be (n, C) and y (n,), got {log_probs.shape} and {y.shape}")
    if (y < 0).any() or (y >= log_probs.shape[1]).any():
        raise ValueError(f"y has labels outside 0..{log_probs.shape[1] - 1}")
    return float(-np.mean(log_probs[np.arange(len(y)), y]))
