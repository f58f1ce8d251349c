"""Hierarchical Normal-Inverse-Wishart meta-learning (Kim & Hospedales, ICLR 2024).

**Model.** A global variable ``phi = (mu, Sigma)`` with diagonal ``Sigma`` and per-episode
network weights ``theta_i ~ N(mu, Sigma)`` (flattened, ``d`` of them);
``D_i | theta_i ~ prod p(y | f(x; theta_i))``. Variational family: per weight ``k``,
``q(phi)``: ``sigma_k^-2 ~ Gamma(n0 / 2, rate 1 / (2 gam0_k))``,
``mu_k | sigma_k ~ N(m0_k, sigma_k^2 / l0)`` (a diagonal NIW with parameters
``m0, gam0 (d,)`` and ``n0, l0 ()``); per episode ``q_i(theta) = N(m_i, 1 / gam_i)``.

**Expected KL** (:func:`expected_kl`), per coordinate::

    2 E_q(phi) KL(q_i || N(mu, Sigma)) = -psi(n0/2) - log 2 - log gam0 + log gam
                                         + n0 gam0 / gam + n0 gam0 (m - m0)^2 + 1/l0 - 1

**One-time local posterior** (:func:`local_posterior`). The support loss
``l_i(theta) = -sum log p(y | x, theta)`` is replaced by a diagonal quadratic
``1/2 sum_k A_k (theta_k - mbar_k)^2`` from a few steps that carry no gradient
(:func:`local_fit`): ``"gauss_newton"`` expands the loss at a point ``theta_J`` with the
diagonal generalised Gauss-Newton curvature ``A`` and gradient ``g``
(``A mbar = A theta_J - g``; the point starts at ``m0`` and each further step moves it
towards the local posterior mean, a diagonal Newton step on loss + prior whose length,
1 to 1/8 or 0, is the one that lowers that objective most); ``"sgld"`` (the paper's)
runs SGLD from ``m0`` and reads ``mbar`` and ``A = 1 / variance`` off the iterates after
burn-in. Minimising ``quadratic + expected KL`` over ``(m_i, gam_i)`` gives, with the
prior precision ``P = n0 gam0``::

    gam_i* = A + P,    m_i* = (A mbar + P m0) / (A + P)

a differentiable function of the global parameters; no inner-loop graph is kept.

**Meta-objective** (minimised, per episode, averaged over the batch by :func:`learner`)::

    E_{N(m*, 1/gam*)} [-log p(support and query | theta)] + sum_k E_q(phi) KL_k
    + KL(q(phi) || p(phi)) / num_total

with the expectation by ``num_samples`` reparameterised draws. It is the (negative)
evidence lower bound of the episode for the local posterior fitted on the support alone,
so it rewards a posterior that predicts the query. ``p(phi)`` is a diagonal NIW hyperprior
(:class:`Hyperprior`); ``num_total`` is the number of training episodes (every step
draws fresh ones: ``steps * num_episodes``, which the driver does not know, so it is
an argument). Positive parameters are trained on the log scale.

**Prediction** on a new episode fits the support in the same closed form and averages
the network over ``S`` draws of ``N(m*, 1/gam*)``: a Gaussian mixture for regression
(with the learned observation noise), the mean softmax for classification.

**Extensions** (defaults off, so the default is the paper's form): ``local`` makes only
some leaves per-episode (e.g. :func:`last_layer`; the rest are shared points);
``covariance="full"`` keeps the whole Gauss-Newton matrix of the local weights,
``gam* = F F^T + diag(P)`` (:class:`LowRankPrecision`), with ``log det gam*`` and
``diag(gam*^-1)`` in the expected KL; ``differentiable_fit`` differentiates the last
expansion in the shared weights and the noise. Together they give a Bayesian head on
meta-learned features, which the all-weights diagonal form cannot learn on digits.

Ablations (the issue's): ``train_prior=False`` keeps ``gam0, n0, l0`` at their initial
values (only ``m0`` and the noise are learned); ``curvature=c`` replaces ``A`` by the
constant ``c`` (a fixed per-coordinate step ``1/c``, MAML-like).

Example:
    >>> import jax, optax
    >>> from ppl import meta
    >>> learner = meta.niw.learner(meta.networks.mlp([1, 16, 1]), optimizer=optax.adam(1e-3))
    >>> source = meta.episodes.sinusoid(shots=5, queries=10)
    >>> result = meta.train(learner, source, steps=10, num_episodes=4, key=jax.random.key(0))
    >>> episodes = meta.episodes.sample_episodes(source, jax.random.key(1), 3)
    >>> result.predict(jax.random.key(2), episodes).means.shape
    (3, 100, 10)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.scipy.special import digamma, gammaln

from ppl.meta.low_rank import LowRankPrecision
from ppl.meta.networks import Likelihood, Network
from ppl.meta.networks import likelihood as as_likelihood
from ppl.meta.predictive import ClassPrediction, RegressionPrediction
from ppl.meta.training import MetaLearner, apply_gradient, episode_mean, init_state
from ppl.runtime.results import Draws

__all__ = [
    "GlobalParams",
    "Hyperprior",
    "LocalFit",
    "LowRankPrecision",
    "Settings",
    "episode_loss",
    "episode_objective",
    "episode_posterior",
    "expected_kl",
    "hyperprior_kl",
    "learner",
    "last_layer",
    "local_fit",
    "local_posterior",
]

LOCAL_FITS = ("gauss_newton", "sgld")
COVARIANCES = ("diagonal", "full")
# Step lengths tried by each Gauss-Newton step after the first (see local_fit).
STEP_SCALES = np.array([1.0, 0.5, 0.25, 0.125, 0.0])


class GlobalParams(NamedTuple):
    """The parameters of ``q(phi)`` (and the observation noise), as trained.

    Attributes:
        m0: ``(d,)`` mean of ``mu``.
        log_gam0: ``(d,)`` log of the per-weight scale ``gam0`` (``E[sigma^-2] = n0 gam0``).
        log_n0: ``()`` log degrees of freedom.
        log_l0: ``()`` log of ``mu``'s precision multiplier.
        log_noise: ``()`` log observation noise standard deviation (regression).
    """

    m0: jax.Array
    log_gam0: jax.Array
    log_n0: jax.Array
    log_l0: jax.Array
    log_noise: jax.Array

    @property
    def prior_precision(self) -> jax.Array:
        """``(d,)`` ``P = n0 gam0 = E_q[sigma^-2]``."""
        return jnp.exp(self.log_n0 + self.log_gam0)


class Hyperprior(NamedTuple):
    """The diagonal NIW hyperprior ``p(phi)`` (same parametrisation as ``q(phi)``)."""

    m: float = 0.0
    gam: float = 1.0
    n: float = 1.0
    l: float = 1.0  # noqa: E741  (the paper's symbol)


class LocalFit(NamedTuple):
    """A quadratic ``1/2 (theta - mbar)^T A (theta - mbar)`` of an episode's support loss,
    held as ``precision = A`` and ``shift = A mbar`` (finite when ``A = 0``), ``(d,)`` each,
    for a diagonal ``A``; for a full one, ``precision`` is ``None``, ``A = factor factor^T``
    with ``factor`` ``(d_l, r)`` (``r`` = support points x outputs) and ``shift`` is
    ``(d_l,)``, over the local block."""

    precision: jax.Array
    shift: jax.Array
    factor: jax.Array | None = None


class Settings(NamedTuple):
    """Static configuration of a NIW learner (see :func:`learner`)."""

    fit: str = "gauss_newton"
    inner_steps: int = 2
    step_size: float = 1e-3
    burnin: int = 0
    curvature: float | None = None
    num_samples: int = 1
    num_predictive: int = 100
    num_total: float = 1e6
    train_prior: bool = True
    covariance: str = "diagonal"
    differentiable_fit: bool = False


DEFAULT_HYPERPRIOR = Hyperprior()
DEFAULT_SETTINGS = Settings()


def _masked_sum(values, local):
    return jnp.sum(values if local is None else jnp.where(local, values, 0.0))


def expected_kl(m, gam, params: GlobalParams, local=None) -> jax.Array:
    """``E_q(phi) KL(N(m, 1/gam) || N(mu, Sigma))``, summed over the ``d`` coordinates
    (over those where the boolean ``(d,)`` mask ``local`` is true, if given). A ``(d_l, d_l)``
    ``gam`` is the full precision of the local block: ``N(m, gam^-1)``."""
    gam0, n0, l0 = jnp.exp(params.log_gam0), jnp.exp(params.log_n0), jnp.exp(params.log_l0)
    common = (
        -digamma(0.5 * n0)
        - math.log(2.0)
        - jnp.log(gam0)
        + n0 * gam0 * jnp.square(m - params.m0)
        + 1.0 / l0
        - 1.0
    )
    if isinstance(gam, LowRankPrecision):
        # A full local precision: sum log gam_k becomes log det, 1/gam_k the diagonal of its inverse.
        indices = _indices(local, m.shape[0])
        inverse_diagonal = gam.inverse_diagonal()
        return 0.5 * (jnp.sum(common[indices] + n0 * gam0[indices] * inverse_diagonal) + gam.log_det())
    twice = common + jnp.log(gam) + n0 * gam0 / gam
    return 0.5 * _masked_sum(twice, local)


def hyperprior_kl(params: GlobalParams, hyperprior: Hyperprior = DEFAULT_HYPERPRIOR, local=None) -> jax.Array:
    """``KL(q(phi) || p(phi))`` between diagonal NIWs, summed over coordinates (the ``local`` ones).

    Per coordinate: the Gamma KL of the precisions plus the expected Gaussian KL of the
    means, ``1/2 (l_p / l0 + l_p E[tau] (m0 - m_p)^2 - 1 - log(l_p / l0))``.
    """
    gam0, n0, l0 = jnp.exp(params.log_gam0), jnp.exp(params.log_n0), jnp.exp(params.log_l0)
    shape, rate = 0.5 * n0, 0.5 / gam0
    shape_p, rate_p = 0.5 * hyperprior.n, 0.5 / hyperprior.gam
    gamma_kl = (
        (shape - shape_p) * digamma(shape)
        - gammaln(shape)
        + gammaln(shape_p)
        + shape_p * (jnp.log(rate) - math.log(rate_p))
        + shape * (rate_p - rate) / rate
    )
    ratio = hyperprior.l / l0
    normal_kl = 0.5 * (
        ratio + hyperprior.l * n0 * gam0 * jnp.square(params.m0 - hyperprior.m) - 1.0 - jnp.log(ratio)
    )
    return _masked_sum(gamma_kl + normal_kl, local)


def local_posterior(fit: LocalFit, params: GlobalParams, local=None) -> tuple[jax.Array, jax.Array]:
    """``(m*, gam*)``: the minimiser of the quadratic plus the expected KL; ``m*`` is
    ``(d,)``, ``gam*`` is ``(d,)``, or ``(d_l, d_l)`` (the local block) for a full ``fit``.

    With a boolean ``(d,)`` mask ``local``, the other coordinates are shared by every
    episode: their mean is ``m0`` (and their draws never move; see :func:`learner`).
    """
    prior_precision = params.prior_precision
    if fit.factor is not None:
        indices = _indices(local, params.m0.shape[0])
        precision = LowRankPrecision(fit.factor, prior_precision[indices])
        mean = precision.solve(fit.shift + prior_precision[indices] * params.m0[indices])
        return params.m0.at[indices].set(mean), precision
    precision = fit.precision + prior_precision
    mean = (fit.shift + prior_precision * params.m0) / precision
    return (mean if local is None else jnp.where(local, mean, params.m0)), precision


def _indices(local, dim: int) -> np.ndarray:
    return np.arange(dim) if local is None else np.flatnonzero(local)


def _support_loss(unravel, network: Network, lik: Likelihood, x, y, noise):
    def loss(theta):
        outputs = jax.vmap(lambda xi: network.apply(unravel(theta), xi))(x)
        return -jnp.sum(jax.vmap(lik.log_prob, in_axes=(0, 0, None))(outputs, y, noise))

    return loss


def _curvature(unravel, network: Network, lik: Likelihood, theta, x, noise, full_indices=None):
    """The generalised Gauss-Newton matrix of the loss summed over ``x``: its diagonal
    ``(d,)``, or with ``full_indices`` a factor ``(d_l, points * outputs)`` of the block of
    those coordinates (the block is the factor times its transpose)."""
    chosen = theta if full_indices is None else theta[full_indices]

    def point(xi):
        def output(t):
            return jnp.reshape(
                network.apply(unravel(t if full_indices is None else theta.at[full_indices].set(t)), xi),
                (-1,),
            )

        root = jax.jacrev(output)(chosen).T @ lik.hessian_factor(output(chosen), noise)
        return jnp.sum(jnp.square(root), axis=1) if full_indices is None else root

    roots = jax.vmap(point)(x)
    if full_indices is None:
        return jnp.sum(roots, axis=0)
    return jnp.moveaxis(roots, 0, 1).reshape(roots.shape[1], -1)


def local_fit(
    key: jax.Array,
    params: GlobalParams,
    support_x,
    support_y,
    *,
    network: Network,
    unravel,
    likelihood: Likelihood,
    settings: Settings = DEFAULT_SETTINGS,
    local=None,
) -> LocalFit:
    """The quadratic of one episode's support loss. No gradient flows through it, except
    with ``settings.differentiable_fit``: then the last expansion is differentiable in the
    shared (non-local) weights and the noise, though not in its expansion point.

    Args:
        key: for SGLD's noise (unused by Gauss-Newton).
        params: the global parameters (the fit starts at ``m0``).
        support_x, support_y: ``(K, *x_shape)``, ``(K, *y_shape)``.
        network, unravel: the network and the map from the flat ``(d,)`` vector to its params.
        likelihood: :data:`~ppl.meta.networks.GAUSSIAN` or :data:`~ppl.meta.networks.CATEGORICAL`.
        settings: ``fit``, ``inner_steps``, ``step_size``, ``burnin``, ``curvature``,
            ``covariance``, ``differentiable_fit``.
        local: ``None`` or a boolean ``(d,)`` mask of the per-episode coordinates (the
            others stay at ``m0``).
    """
    live = params
    params = jax.lax.stop_gradient(params)
    noise = jnp.exp(params.log_noise)
    loss = _support_loss(unravel, network, likelihood, support_x, support_y, noise)
    if settings.fit == "gauss_newton":
        prior_precision = params.prior_precision

        full = _indices(local, params.m0.shape[0]) if settings.covariance == "full" else None

        def expand(theta, noise=noise, loss=loss):
            if full is not None:
                factor = _curvature(unravel, network, likelihood, theta, support_x, noise, full)
                shift = factor @ (factor.T @ theta[full]) - jax.grad(loss)(theta)[full]
                return LocalFit(None, shift, factor)
            precision = (
                _curvature(unravel, network, likelihood, theta, support_x, noise)
                if settings.curvature is None
                else jnp.full_like(theta, settings.curvature)
            )
            return LocalFit(precision, precision * theta - jax.grad(loss)(theta))

        def penalised(theta):
            return loss(theta) + 0.5 * jnp.sum(prior_precision * jnp.square(theta - params.m0))

        def newton(theta, _):
            # The diagonal curvature ignores correlations, so the full step can overshoot:
            # take the best of the step scaled by 1, 1/2, ..., 1/2^(n-1) and 0.
            target, _ = local_posterior(expand(theta), params, local)
            candidates = theta + STEP_SCALES[:, None] * (target - theta)
            return candidates[jnp.argmin(jax.vmap(penalised)(candidates))], None

        theta, _ = jax.lax.scan(newton, params.m0, None, length=settings.inner_steps - 1)
        if not settings.differentiable_fit:
            return jax.lax.stop_gradient(expand(theta))
        # The last expansion is differentiated: in the shared weights (the features a
        # local head is fitted on) and the noise; the expansion point itself is not.
        point = theta if local is None else jnp.where(local, theta, live.m0)
        live_noise = jnp.exp(live.log_noise)
        live_loss = _support_loss(unravel, network, likelihood, support_x, support_y, live_noise)
        return expand(point, live_noise, live_loss)

    def langevin(theta, step_key):
        noise_draw = jax.random.normal(step_key, theta.shape, theta.dtype)
        move = math.sqrt(settings.step_size) * noise_draw - 0.5 * settings.step_size * jax.grad(loss)(theta)
        theta = theta + (move if local is None else jnp.where(local, move, 0.0))
        return theta, theta

    _, iterates = jax.lax.scan(langevin, params.m0, jax.random.split(key, settings.inner_steps))
    kept = jnp.concatenate([params.m0[None], iterates])[settings.burnin :]
    mean = jnp.mean(kept, axis=0)
    precision = (
        1.0 / (jnp.var(kept, axis=0, ddof=1) + 1e-12)
        if settings.curvature is None
        else jnp.full_like(mean, settings.curvature)
    )
    return jax.lax.stop_gradient(LocalFit(precision, precision * mean))


class _Parts(NamedTuple):
    network: Network
    unravel: object
    likelihood: Likelihood
    settings: Settings
    hyperprior: Hyperprior
    local_bits: bytes | None  # the packed local mask (hashable: parts are static)
    dim: int

    @property
    def local(self):
        """The boolean ``(d,)`` mask of per-episode coordinates, or ``None`` (all)."""
        if self.local_bits is None:
            return None
        return np.unpackbits(np.frombuffer(self.local_bits, np.uint8), count=self.dim).astype(bool)


def _draws(key, mean, precision, num, local=None):
    if isinstance(precision, LowRankPrecision):
        # Perturb and solve: w = F z + sqrt(D) eps ~ N(0, precision), so precision^-1 w
        # ~ N(0, precision^-1).
        indices = _indices(local, mean.shape[0])
        z_key, eps_key = jax.random.split(key)
        z = jax.random.normal(z_key, (precision.factor.shape[1], num), mean.dtype)
        eps = jax.random.normal(eps_key, (indices.shape[0], num), mean.dtype)
        offsets = precision.solve(precision.factor @ z + jnp.sqrt(precision.diagonal)[:, None] * eps)
        return jnp.broadcast_to(mean, (num,) + mean.shape).at[:, indices].add(offsets.T)
    eps = jax.random.normal(key, (num,) + mean.shape, mean.dtype)
    scale = jax.lax.rsqrt(precision)
    return mean + eps * (scale if local is None else jnp.where(local, scale, 0.0))


def episode_objective(key, params: GlobalParams, fit: LocalFit, episode, config) -> jax.Array:
    """The meta-objective of one episode for a given quadratic ``fit`` of its support.

    ``E_{N(m*, 1/gam*)}[-log p(support and query | theta)]`` (``num_samples`` draws from
    ``key``) ``+ expected_kl + hyperprior_kl / num_total``, with ``(m*, gam*)`` from
    :func:`local_posterior`. ``config`` is the learner's (``learner.config``).
    """
    settings = config.settings
    local = config.local
    mean, precision = local_posterior(fit, params, local)
    x = jnp.concatenate([episode.support_x, episode.query_x])
    y = jnp.concatenate([episode.support_y, episode.query_y])
    loss = _support_loss(config.unravel, config.network, config.likelihood, x, y, jnp.exp(params.log_noise))
    data_term = jnp.mean(jax.vmap(loss)(_draws(key, mean, precision, settings.num_samples, local)))
    kl = expected_kl(mean, precision, params, local)
    return data_term + kl + hyperprior_kl(params, config.hyperprior, local) / settings.num_total


def episode_loss(key, episode, params: GlobalParams, config) -> jax.Array:
    """One episode's meta-loss: :func:`local_fit` on its support (no gradient through it
    unless ``differentiable_fit``), then :func:`episode_objective`; its gradient in
    ``params`` is the meta-gradient."""
    settings = config.settings
    if not settings.train_prior:
        params = params._replace(
            log_gam0=jax.lax.stop_gradient(params.log_gam0),
            log_n0=jax.lax.stop_gradient(params.log_n0),
            log_l0=jax.lax.stop_gradient(params.log_l0),
        )
    fit_key, draw_key = jax.random.split(key)
    fit = local_fit(
        fit_key,
        params,
        episode.support_x,
        episode.support_y,
        network=config.network,
        unravel=config.unravel,
        likelihood=config.likelihood,
        settings=settings,
        local=config.local,
    )
    return episode_objective(draw_key, params, fit, episode, config)


def _update(key, state, episodes, plan=None, *, parts: _Parts, optimizer):
    value_and_grad = jax.value_and_grad(functools.partial(episode_loss, config=parts), argnums=2)
    loss, grads = episode_mean(lambda k, e, p: value_and_grad(k, e, p), key, episodes, state.params, plan)
    return apply_gradient(state, loss, grads, optimizer)


def _predictive_draws(key, params: GlobalParams, episode, parts: _Parts):
    fit = local_fit(
        key,
        params,
        episode.support_x,
        episode.support_y,
        network=parts.network,
        unravel=parts.unravel,
        likelihood=parts.likelihood,
        settings=parts.settings,
        local=parts.local,
    )
    mean, precision = local_posterior(fit, params, parts.local)
    thetas = _draws(jax.random.fold_in(key, 1), mean, precision, parts.settings.num_predictive, parts.local)
    outputs = jax.vmap(
        lambda t: jax.vmap(lambda x: parts.network.apply(parts.unravel(t), x))(episode.query_x)
    )(thetas)
    return thetas, outputs


def _predict(key, params: GlobalParams, episodes, *, parts: _Parts):
    num = episodes.support_x.shape[0]
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num))
    _, outputs = jax.vmap(_predictive_draws, in_axes=(0, None, 0, None))(keys, params, episodes, parts)
    if parts.likelihood.classification:
        return ClassPrediction(jnp.mean(jax.nn.softmax(outputs, axis=-1), axis=1))
    return RegressionPrediction(means=outputs[..., 0], noise=jnp.exp(params.log_noise))


def learner(
    network: Network,
    likelihood: str | Likelihood = "gaussian",
    *,
    optimizer: optax.GradientTransformation,
    num_classes: int | None = None,
    fit: str = "gauss_newton",
    inner_steps: int = 2,
    step_size: float = 1e-3,
    burnin: int = 0,
    curvature: float | None = None,
    num_samples: int = 1,
    num_predictive: int = 100,
    num_total: float = 1e6,
    train_prior: bool = True,
    local: Callable | None = None,
    covariance: str = "diagonal",
    differentiable_fit: bool = False,
    init_precision: float = 1e4,
    init_noise: float = 1.0,
    hyperprior: Hyperprior = DEFAULT_HYPERPRIOR,
) -> MetaLearner:
    """A NIW meta-learner for ``network`` (train it with :func:`ppl.meta.train`).

    Args:
        network: ``(init, apply)``; ``init(key)`` gives the initial ``m0``.
        likelihood: ``"gaussian"`` (regression, a learned global noise) or ``"categorical"``.
        optimizer: Optax transformation of the global parameters.
        num_classes: classes per episode (classification).
        fit: ``"gauss_newton"`` (default) or ``"sgld"`` (the paper's), see :func:`local_fit`.
        inner_steps: Gauss-Newton expansions or SGLD iterations per episode.
        step_size, burnin: SGLD's step size and discarded iterates.
        curvature: ``None`` (fitted) or a constant ``A`` (the constant-curvature ablation).
        num_samples: reparameterised draws of the expected loss per episode.
        num_predictive: weight draws per episode at prediction.
        num_total: training episodes in all (scales ``KL(q(phi) || p(phi))``).
        train_prior: ``False`` freezes ``gam0, n0, l0`` (the frozen-prior ablation).
        local: ``None`` (every weight is per-episode, as in the paper) or
            ``params -> pytree of bools`` (one per leaf, e.g. :func:`last_layer`): the
            leaves that are per-episode; the others are shared by all episodes and
            meta-learned as points (``m0``), with no KL terms.
        covariance: ``"diagonal"`` (the paper's) or ``"full"``: the local posterior's
            precision is the whole Gauss-Newton block of the per-episode weights plus the
            diagonal prior precision, held as a low-rank factor (rank = support points x
            outputs) plus a diagonal (Gauss-Newton fit only).
        init_precision: initial ``n0 gam0`` (``n0 = 1``); large starts with no adaptation.
        init_noise: initial observation noise standard deviation.
        hyperprior: :class:`Hyperprior`.
    """
    lik = as_likelihood(likelihood)
    if fit not in LOCAL_FITS:
        raise ValueError(f"niw.learner: fit must be one of {LOCAL_FITS}, got {fit!r}")
    if not isinstance(inner_steps, int) or inner_steps < 1:
        raise ValueError(f"niw.learner: inner_steps must be an integer >= 1, got {inner_steps!r}")
    if fit == "sgld" and not 0 <= burnin < inner_steps:
        raise ValueError(
            f"niw.learner: SGLD keeps iterates burnin..inner_steps, so 0 <= burnin < inner_steps; "
            f"got burnin={burnin}, inner_steps={inner_steps}"
        )
    for name, value in (
        ("step_size", step_size),
        ("init_precision", init_precision),
        ("init_noise", init_noise),
    ):
        if not value > 0:
            raise ValueError(f"niw.learner: {name} must be > 0, got {value!r}")
    if curvature is not None and not curvature > 0:
        raise ValueError(f"niw.learner: curvature must be None or > 0, got {curvature!r}")
    if min(num_samples, num_predictive) < 1 or not num_total > 0:
        raise ValueError("niw.learner: num_samples, num_predictive must be >= 1 and num_total > 0")
    if lik.classification and (num_classes is None or num_classes < 2):
        raise ValueError(f"niw.learner: classification needs num_classes >= 2, got {num_classes!r}")
    if covariance not in COVARIANCES:
        raise ValueError(f"niw.learner: covariance must be one of {COVARIANCES}, got {covariance!r}")
    if covariance == "full" and (fit != "gauss_newton" or curvature is not None):
        raise ValueError("niw.learner: covariance='full' needs fit='gauss_newton' and curvature=None")
    settings = Settings(
        fit, inner_steps, float(step_size), int(burnin), curvature, int(num_samples), int(num_predictive),
        float(num_total), bool(train_prior), covariance, bool(differentiable_fit),
    )  # fmt: skip
    example = network.init(jax.random.key(0))
    flat, unravel = ravel_pytree(example)
    local_bits = None
    if local is not None:
        flags = local(example)
        if jax.tree.structure(flags) != jax.tree.structure(example):
            raise ValueError(
                "niw.learner: local(params) must return one bool per leaf of the network's params, "
                f"got the structure {jax.tree.structure(flags)} for {jax.tree.structure(example)}"
            )
        mask, _ = ravel_pytree(
            jax.tree.map(lambda flag, leaf: np.full(np.shape(leaf), bool(flag)), flags, example)
        )
        if not np.any(mask):
            raise ValueError("niw.learner: local(params) marks no leaf as per-episode")
        local_bits = np.packbits(np.asarray(mask, bool)).tobytes()
    parts = _Parts(network, unravel, lik, settings, hyperprior, local_bits, int(flat.shape[0]))

    def init(key):
        m0, _ = ravel_pytree(network.init(key))
        params = GlobalParams(
            m0=m0,
            log_gam0=jnp.full_like(m0, math.log(init_precision)),
            log_n0=jnp.zeros((), m0.dtype),
            log_l0=jnp.zeros((), m0.dtype),
            log_noise=jnp.full((), math.log(init_noise), m0.dtype),
        )
        return init_state(params, optimizer)

    return MetaLearner(
        name="niw",
        init=init,
        update=functools.partial(_update, parts=parts, optimizer=optimizer),
        predict=functools.partial(_predict, parts=parts),
        classification=lik.classification,
        num_classes=num_classes,
        config=parts,
    )


def last_layer(params) -> list:
    """For :func:`learner`'s ``local``: the leaves of the last element of a list of layers
    (:func:`~ppl.meta.networks.mlp`'s params) are per-episode, the rest shared."""
    if not isinstance(params, list | tuple) or not params:
        raise TypeError(f"last_layer: expects the params as a list of layers, got {type(params).__name__}")
    last = len(params) - 1
    return [jax.tree.map(lambda _, flag=index == last: flag, layer) for index, layer in enumerate(params)]


def episode_posterior(result, key: jax.Array, episode, num_samples: int = 1000) -> Draws:
    """One episode's weight posterior and predictions as :class:`~ppl.runtime.results.Draws`
    (``.to_arviz()``): ``posterior`` holds ``weights`` ``(1, num_samples, d)`` (dim
    ``weight``) and the network's query outputs ``f`` ``(1, num_samples, Q, outputs)``;
    ``log_likelihood`` the query points' pointwise log-likelihood ``y``
    ``(1, num_samples, Q)``; ``observed_data`` the query labels.

    Args:
        result: a :class:`~ppl.meta.training.TrainResult` of a NIW learner.
        key: ``jax.random`` key.
        episode: one episode (no leading axis).
        num_samples: weight draws.
    """
    parts = result.learner.config
    if result.learner.name != "niw" or not isinstance(parts, _Parts):
        raise TypeError(f"episode_posterior: needs the result of a NIW learner, got {result.learner.name!r}")
    parts = parts._replace(settings=parts.settings._replace(num_predictive=int(num_samples)))
    thetas, outputs = jax.jit(_predictive_draws, static_argnums=3)(key, result.params, episode, parts)
    noise = jnp.exp(result.params.log_noise)
    loglik = jax.vmap(
        lambda out: jax.vmap(parts.likelihood.log_prob, in_axes=(0, 0, None))(out, episode.query_y, noise)
    )(outputs)
    return Draws(
        samples={"weights": np.asarray(thetas)[None], "f": np.asarray(outputs)[None]},
        log_likelihood={"y": np.asarray(loglik)[None]},
        observed_data={"y": np.asarray(episode.query_y).reshape(loglik.shape[1:])},
        dims={"weights": ("weight",), "f": ("query", "output"), "y": ("query",)},
        attrs={"inference": "niw_meta"},
    )
