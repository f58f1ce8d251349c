"""Gaussian mixtures ``sum_k w_k N(m_k, Sigma_k)`` with full (or diagonal) covariances: an exact oracle.

:class:`FullCovarianceMixture` has the interface of
:class:`~ppl.smc.diffusion.GaussianMixture` (noised law, score, exact denoiser variance,
exact twist ``p(y | x_t)``, exact posterior, exact diffusion prior), so every sampler and
the benchmark take it, but its components are correlated (notes/diffusion_smc.md,
sections 3.3-3.4):

* each ``Sigma_k = Q_k diag(lambda_k) Q_k^T`` is diagonalised once, so the noised law
  ``N(alpha m_k, alpha^2 Sigma_k + sigma^2 I)`` is ``lambda_k -> alpha^2 lambda_k + sigma^2``
  in the same basis, and a particle costs ``O(K d^2)``;
* the posterior under ``y = A x + sigma_y eps`` is the Kalman update of every component,
  computed from the SVD ``A Q_k diag(sqrt(lambda_k)) = U_k diag(b_k) V_k^T`` (the update
  touches only the ``rank(A)`` directions ``V_k``; no covariance is formed by subtraction);
* the twist ``p(y | x_t)``, because ``x_0 | x_t`` is again such a mixture.

:func:`correlated_mixture_problem` draws a test instance (random rotations and scales,
a random matrix or an inpainting mask).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ppl.smc.diffusion import FullCovarianceMixture, measurement
    >>> cov = jnp.array([[[1.0, 0.8], [0.8, 1.0]], [[0.5, -0.2], [-0.2, 0.3]]])
    >>> gmm = FullCovarianceMixture(jnp.array([0.3, 0.7]), jnp.array([[-2.0, 0.0], [2.0, 0.0]]), cov)
    >>> post = gmm.posterior(measurement(jnp.array([[1.0, 0.0]]), jnp.array([1.5]), 0.5))
    >>> post.sample(jax.random.key(0), 1000).shape
    (1000, 2)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from ppl.smc.diffusion.gmm import _NoisedDenoiserVariance, _NoisedScore
from ppl.smc.diffusion.mixture import component_error
from ppl.smc.diffusion.operators import MaskOperator, MatrixOperator, Measurement, measurement
from ppl.smc.diffusion.prior import DiffusionPrior
from ppl.smc.diffusion.schedule import Schedule

__all__ = ["FullCovarianceMixture", "FullCovarianceMixturePosterior", "correlated_mixture_problem"]

_LOG_2PI = float(np.log(2 * np.pi))


class _Components:
    """What the prior and the posterior share: ``sum_k w_k N(m_k, R_k R_k^T)``.

    Subclasses hold ``log_weights`` ``(K,)`` and ``means`` ``(K, d)`` and give the factors
    ``R_k`` ``(K, d, d)``, their inverses and ``log det(R_k R_k^T)`` ``(K,)`` in :meth:`_factors`.
    """

    log_weights: jax.Array
    means: jax.Array

    def _factors(self):
        raise NotImplementedError

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def weights(self) -> jax.Array:
        return jnp.exp(self.log_weights)

    @property
    def covariances(self) -> jax.Array:
        """The component covariances ``(K, d, d)``."""
        factors, _, _ = self._factors()
        return factors @ jnp.swapaxes(factors, 1, 2)

    def log_component_densities(self, x) -> jax.Array:
        """``log w_k + log N(x; m_k, Sigma_k)`` for one ``x`` of shape ``(d,)``: ``(K,)``."""
        _, inverse_factors, log_determinants = self._factors()
        z = jnp.einsum("kij,kj->ki", inverse_factors, x - self.means)
        return self.log_weights - 0.5 * (jnp.sum(z**2, -1) + log_determinants + self.dim * _LOG_2PI)

    def log_density(self, x) -> jax.Array:
        """``log p(x)`` for ``x`` of shape ``(d,)``."""
        return logsumexp(self.log_component_densities(x))

    def log_responsibilities(self, x) -> jax.Array:
        """``log p(component k | x)``, shape ``(K,)``."""
        return jax.nn.log_softmax(self.log_component_densities(x))

    def responsibilities(self, x) -> jax.Array:
        """``p(component k | x)``, shape ``(K,)``."""
        return jnp.exp(self.log_responsibilities(x))

    def sample(self, rng_key, num_samples: int) -> jax.Array:
        """Exact draws ``(num_samples, d)``."""
        component_key, noise_key = jax.random.split(rng_key)
        k = jax.random.categorical(component_key, self.log_weights, shape=(num_samples,))
        z = jax.random.normal(noise_key, (num_samples, self.dim))
        factors, _, _ = self._factors()
        candidates = self.means + jnp.einsum("kij,nj->nki", factors, z)  # (n, K, d): one per component
        return jnp.take_along_axis(candidates, k[:, None, None], axis=1)[:, 0]


@jax.tree_util.register_pytree_node_class
class FullCovarianceMixture(_Components):
    """``sum_k w_k N(m_k, Sigma_k)`` with full or diagonal covariances, and its exact oracles.

    The constructor checks its (concrete) arrays and diagonalises every ``Sigma_k`` once in
    float64; the object is a JAX pytree (log-weights, means, eigenvalues, eigenvectors), and
    every method works under ``jit`` / ``vmap``.

    Args:
        weights: ``(K,)``, nonnegative (normalised here).
        means: ``(K, d)``.
        covariances: ``(K, d, d)`` symmetric positive definite, or ``(K, d)`` positive
            (diagonal covariances).

    Raises:
        ValueError: naming the array, the component and the shapes, if the shapes disagree,
            a weight is negative, or a covariance is not symmetric or not positive definite.

    Example:
        >>> import jax.numpy as jnp
        >>> from ppl.smc.diffusion import FullCovarianceMixture, vp
        >>> gmm = FullCovarianceMixture(jnp.ones(2), jnp.array([[-2.0, 0.0], [2.0, 0.0]]),
        ...                             jnp.array([[1.0, 0.2], [0.5, 2.0]]))  # diagonal
        >>> gmm.diffusion_prior(vp()).score(jnp.zeros(2), 0.5).shape
        (2,)
    """

    def __init__(self, weights, means, covariances):
        means = np.asarray(means, np.float64)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {means.shape}")
        weights = np.asarray(weights, np.float64)
        if weights.shape != means.shape[:1]:
            raise ValueError(f"weights have shape {weights.shape} but means have shape {means.shape}")
        if not (np.all(weights >= 0) and np.sum(weights) > 0):
            raise ValueError(
                f"weights (shape {weights.shape}) must be nonnegative with a positive sum, got {weights}"
            )
        eigenvalues, eigenvectors = _diagonalise(np.asarray(covariances, np.float64), means.shape)
        self.log_weights = jnp.asarray(np.log(weights) - np.log(np.sum(weights)), jnp.float32)
        self.means = jnp.asarray(means, jnp.float32)
        self.eigenvalues = jnp.asarray(eigenvalues, jnp.float32)
        self.eigenvectors = jnp.asarray(eigenvectors, jnp.float32)

    def tree_flatten(self):
        return (self.log_weights, self.means, self.eigenvalues, self.eigenvectors), None

    @classmethod
    def tree_unflatten(cls, _, children):
        mixture = object.__new__(cls)
        mixture.log_weights, mixture.means, mixture.eigenvalues, mixture.eigenvectors = children
        return mixture

    def _factors(self):
        scale = jnp.sqrt(self.eigenvalues)  # (K, d)
        factors = self.eigenvectors * scale[:, None, :]  # Q diag(sqrt(lambda))
        inverse_factors = jnp.swapaxes(self.eigenvectors, 1, 2) / scale[:, :, None]
        return factors, inverse_factors, jnp.sum(jnp.log(self.eigenvalues), -1)

    def noised(self, alpha, sigma) -> FullCovarianceMixture:
        """The law of ``alpha x_0 + sigma eps``: means ``alpha m_k``, eigenvalues
        ``alpha^2 lambda + sigma^2`` (same eigenvectors)."""
        return self.tree_unflatten(
            None,
            (self.log_weights, alpha * self.means, alpha**2 * self.eigenvalues + sigma**2, self.eigenvectors),
        )

    def score(self, x) -> jax.Array:
        """``grad log p(x) = sum_k gamma_k(x) Sigma_k^{-1} (m_k - x)``, shape ``(d,)``."""
        gamma = self.responsibilities(x)  # (K,)
        rotated = jnp.einsum("kji,kj->ki", self.eigenvectors, self.means - x)  # Q_k^T (m_k - x)
        return jnp.einsum("kij,kj->i", self.eigenvectors, gamma[:, None] * rotated / self.eigenvalues)

    def _denoised_components(self, x, alpha, sigma):
        """``x_0 | x_t = x, k ~ N(mu_k, Q_k diag(c_k) Q_k^T)``: ``mu`` ``(K, d)`` and ``c`` ``(K, d)``.

        ``c = lambda sigma^2 / (alpha^2 lambda + sigma^2)``,
        ``mu_k = m_k + Q_k diag(alpha lambda / (alpha^2 lambda + sigma^2)) Q_k^T (x - alpha m_k)``.
        """
        denominator = alpha**2 * self.eigenvalues + sigma**2  # (K, d)
        rotated = jnp.einsum("kji,kj->ki", self.eigenvectors, x - alpha * self.means)
        gain = alpha * self.eigenvalues / denominator
        means = self.means + jnp.einsum("kij,kj->ki", self.eigenvectors, gain * rotated)
        return means, self.eigenvalues * sigma**2 / denominator

    def denoiser_variance(self, x, alpha, sigma) -> jax.Array:
        """``tr Cov[x_0 | x_t = x] / d``, shape ``()``, when ``x_0`` has this law and
        ``x_t = alpha x_0 + sigma eps``.

        Over the responsibilities ``gamma_k(x)`` of the noised law,
        ``tr Cov = sum_k gamma_k tr C_k + sum_k gamma_k |mu_k - mu_bar|^2`` (see
        :meth:`_denoised_components` for ``mu_k``, ``C_k``).
        """
        gamma = self.noised(alpha, sigma).responsibilities(x)
        means, variances = self._denoised_components(x, alpha, sigma)
        mean = gamma @ means
        spread = jnp.maximum(gamma @ jnp.sum(means**2, -1) - mean @ mean, 0.0)
        return (gamma @ jnp.sum(variances, -1) + spread) / self.dim

    def noised_log_likelihood(self, observation: Measurement, schedule: Schedule):
        """The optimal twist ``(x_t (d,), t) -> log p(y | x_t)``, exact for a linear ``A``.

        ``p(y | x_t) = sum_k gamma_k(x_t) N(y; A mu_k, sigma_y^2 I + A C_k A^T)`` with
        ``x_0 | x_t, k ~ N(mu_k, C_k)``; the SVDs of ``A C_k^{1/2}`` depend on ``t`` only.
        """
        matrix = _dense(observation, self.dim, "the exact noised likelihood")

        def log_likelihood(x, t):
            alpha, sigma = schedule.alpha(t), schedule.sigma(t)
            log_gamma = self.noised(alpha, sigma).log_responsibilities(x)
            means, variances = self._denoised_components(x, alpha, sigma)
            split = _split(matrix, variances, self.eigenvectors)
            return logsumexp(log_gamma + _log_marginals(observation, observation.y - means @ matrix.T, split))

        return log_likelihood

    def posterior(self, observation: Measurement) -> FullCovarianceMixturePosterior:
        """The exact posterior under a linear-Gaussian measurement: a Kalman update per component.

        With ``L_k = Q_k diag(sqrt(lambda_k))`` and ``A L_k = U diag(b) V^T``: weights
        ``w_k N(y; A m_k, A Sigma_k A^T + sigma_y^2 I)``, means
        ``m_k + L_k V diag(b / (b^2 + sigma_y^2)) U^T (y - A m_k)``, factors
        ``L_k (I + V diag(c - 1) V^T)``, ``c = sigma_y / sqrt(b^2 + sigma_y^2)``.
        """
        matrix = _dense(observation, self.dim, "the exact Gaussian-mixture posterior")
        factors, inverse_factors, log_determinants = self._factors()
        split = _split(matrix, self.eigenvalues, self.eigenvectors)
        residual = observation.y - self.means @ matrix.T  # (K, d_y)
        log_marginal = _log_marginals(observation, residual, split)
        log_evidence = logsumexp(self.log_weights + log_marginal)
        noise_var = observation.noise_std**2
        shrink = split.singular_values / (split.singular_values**2 + noise_var)
        whitened = jnp.einsum(
            "kri,kr->ki", split.right, shrink * jnp.einsum("kjr,kj->kr", split.left, residual)
        )
        c = jnp.sqrt(noise_var / (split.singular_values**2 + noise_var))  # (K, r)
        identity = jnp.eye(self.dim)
        right_factor = identity + jnp.einsum("kri,kr,krj->kij", split.right, c - 1, split.right)
        right_inverse = identity + jnp.einsum("kri,kr,krj->kij", split.right, 1 / c - 1, split.right)
        return FullCovarianceMixturePosterior(
            self.log_weights + log_marginal - log_evidence,
            self.means + jnp.einsum("kij,kj->ki", factors, whitened),
            factors @ right_factor,
            right_inverse @ inverse_factors,
            log_determinants + 2 * jnp.sum(jnp.log(c), -1),
            log_evidence,
        )

    def diffusion_prior(self, schedule: Schedule) -> DiffusionPrior:
        """A :class:`~ppl.smc.diffusion.DiffusionPrior` with the exact noised score, the exact
        ``tr Cov[x_0 | x_t] / d`` (for the reverse kernel) and the exact noise-end law."""
        t_max = schedule.t_max
        return DiffusionPrior(
            schedule,
            self.dim,
            score_fn=_NoisedScore(schedule),
            params=self,
            noise_end=self.noised(schedule.alpha(t_max), schedule.sigma(t_max)),
            denoiser_variance=_NoisedDenoiserVariance(schedule),
        )


@jax.tree_util.register_pytree_node_class
class FullCovarianceMixturePosterior(_Components):
    """The exact posterior of a :class:`FullCovarianceMixture`: ``sum_k w'_k N(m'_k, R_k R_k^T)``.

    Built by :meth:`FullCovarianceMixture.posterior`; a JAX pytree.

    Attributes:
        log_weights: posterior component log-weights ``(K,)``. weights: ``(K,)``.
        means: ``(K, d)``. factors: ``R_k`` ``(K, d, d)``. covariances: ``(K, d, d)``.
        log_evidence: ``log p(y)``.
    """

    def __init__(self, log_weights, means, factors, inverse_factors, log_determinants, log_evidence):
        self.log_weights, self.means, self.log_evidence = log_weights, means, log_evidence
        self.factors, self.inverse_factors, self.log_determinants = factors, inverse_factors, log_determinants

    def tree_flatten(self):
        leaves = (self.log_weights, self.means, self.factors, self.inverse_factors, self.log_determinants)
        return (*leaves, self.log_evidence), None

    @classmethod
    def tree_unflatten(cls, _, children):
        return cls(*children)

    def _factors(self):
        return self.factors, self.inverse_factors, self.log_determinants

    def component_error(self, samples, weights=None) -> jax.Array:
        """Total-variation distance between the exact component weights and those the samples imply.

        The samples' weight of component ``k`` is the (weighted) mean of the exact
        responsibilities ``p(k | x_i, y)``. Args: samples ``(n, d)``; weights ``(n,)`` or None.
        """
        return component_error(self, samples, weights)


class _Split(NamedTuple):
    """The thin SVD ``A L_k = U_k diag(b_k) V_k^T`` for every component: ``left`` ``(K, d_y, r)``,
    ``singular_values`` ``(K, r)``, ``right`` ``(K, r, d)``."""

    left: jax.Array
    singular_values: jax.Array
    right: jax.Array


def _split(matrix, eigenvalues, eigenvectors) -> _Split:
    """The SVD of ``A Q_k diag(sqrt(lambda_k))`` for every component."""
    scaled = jnp.einsum("yi,kij->kyj", matrix, eigenvectors * jnp.sqrt(eigenvalues)[:, None, :])
    return _Split(*jnp.linalg.svd(scaled, full_matrices=False))


def _log_marginals(observation: Measurement, residual, split: _Split) -> jax.Array:
    """``log N(y; A m_k, A Sigma_k A^T + sigma_y^2 I)`` for every component ``(K,)``, from the
    residuals ``y - A m_k`` ``(K, d_y)``. The part of a residual outside the range of ``U_k``
    has variance ``sigma_y^2``."""
    noise_var, d_y = observation.noise_std**2, observation.y.shape[0]
    projected = jnp.einsum("kjr,kj->kr", split.left, residual)  # (K, r)
    variance = split.singular_values**2 + noise_var
    outside = jnp.sum((residual - jnp.einsum("kjr,kr->kj", split.left, projected)) ** 2, -1)
    quadratic = jnp.sum(projected**2 / variance, -1) + outside / noise_var
    log_det = jnp.sum(jnp.log(variance), -1) + (d_y - variance.shape[-1]) * jnp.log(noise_var)
    return -0.5 * (quadratic + log_det + d_y * _LOG_2PI)


def _dense(observation: Measurement, dim: int, what: str) -> jax.Array:
    """The matrix ``(d_y, d)`` of a linear measurement (``A`` applied to the identity)."""
    operator = observation.require_linear(what)
    if observation.dim != dim:
        raise ValueError(
            f"the measurement acts on x of dimension {observation.dim}, the mixture has d = {dim}"
        )
    return jax.vmap(operator.apply, in_axes=1, out_axes=1)(jnp.eye(dim))


def _diagonalise(covariances, means_shape):
    """Eigenvalues ``(K, d)`` and eigenvectors ``(K, d, d)`` of checked covariances (float64)."""
    num_components, dim = means_shape
    if covariances.shape == means_shape:
        for k, diagonal in enumerate(covariances):
            if not np.all(diagonal > 0):
                raise ValueError(
                    f"covariances[{k}] (a diagonal, shape {covariances.shape}) has nonpositive entries "
                    f"{diagonal[diagonal <= 0].tolist()}"
                )
        return covariances, np.broadcast_to(np.eye(dim), (num_components, dim, dim))
    if covariances.shape != (num_components, dim, dim):
        raise ValueError(
            f"covariances must have shape (K, d, d) = {(num_components, dim, dim)} or (K, d) = "
            f"{means_shape} for means of shape {means_shape}, got {covariances.shape}"
        )
    for k, covariance in enumerate(covariances):
        asymmetry = np.max(np.abs(covariance - covariance.T))
        if asymmetry > 1e-5 * max(np.max(np.abs(covariance)), 1e-30):
            raise ValueError(
                f"covariances[{k}] (shape {covariance.shape}) is not symmetric: "
                f"max |C - C^T| = {asymmetry:.3g}"
            )
    eigenvalues, eigenvectors = np.linalg.eigh(0.5 * (covariances + np.swapaxes(covariances, 1, 2)))
    for k, smallest in enumerate(eigenvalues[:, 0]):
        if not smallest > 0:
            raise ValueError(
                f"covariances[{k}] (shape {covariances.shape[1:]}) is not positive definite: "
                f"smallest eigenvalue {smallest:.3g}"
            )
    return eigenvalues, eigenvectors


def correlated_mixture_problem(
    seed: int,
    dim: int,
    obs_dim: int,
    num_components: int = 4,
    *,
    separation: float = 6.0,
    variance_range: tuple[float, float] = (0.1, 1.0),
    inpainting: bool = False,
    noise_std: float | None = None,
):
    """A test instance with correlated components: ``(mixture, observation, x_true)``.

    * Means: ``K`` draws from ``N(0, separation^2 I_d)``, redrawn together until every pair
      is at least ``separation`` apart (the largest component standard deviation is
      ``sqrt(variance_range[1])``, so the default modes are 6 standard deviations apart).
    * Weights: ``U(0.2, 1)`` draws, normalised (unequal, none negligible).
    * Covariances: ``Sigma_k = Q_k diag(lambda_k) Q_k^T`` with ``Q_k`` a Haar-random rotation
      and ``lambda_k`` log-uniform on ``variance_range``: correlated, condition number up to
      ``variance_range[1] / variance_range[0]``.
    * Observation: as :func:`~ppl.smc.diffusion.grid_mixture_problem`, ``A = U diag(s) V^T``
      from the SVD of a Gaussian ``(obs_dim, dim)`` matrix with sorted ``U(0, 1)`` singular
      values; with ``inpainting=True``, ``A`` observes ``obs_dim`` random coordinates
      (a :class:`~ppl.smc.diffusion.MaskOperator`, ``s = 1``). ``sigma_y = U(0, 1) max(s)``
      unless ``noise_std`` is given; ``y = A x* + sigma_y eps`` with ``x*`` from the prior.

    Example:
        >>> from ppl.smc.diffusion import correlated_mixture_problem
        >>> mixture, observation, x_true = correlated_mixture_problem(0, 8, 2, inpainting=True)
        >>> mixture.covariances.shape, observation.shape
        ((4, 8, 8), (2, 8))
    """
    if not 1 <= obs_dim <= dim:
        raise ValueError(f"obs_dim must be in [1, dim = {dim}], got {obs_dim}")
    rng = np.random.default_rng(seed)
    means = _separated_means(rng, num_components, dim, separation)
    weights = rng.uniform(0.2, 1.0, num_components)
    q, r = np.linalg.qr(rng.normal(size=(num_components, dim, dim)))
    rotations = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]  # Haar
    log_low, log_high = np.log(variance_range)
    variances = np.exp(rng.uniform(log_low, log_high, (num_components, dim)))
    mixture = FullCovarianceMixture(
        weights, means, (rotations * variances[:, None, :]) @ rotations.transpose(0, 2, 1)
    )
    if inpainting:
        mask = np.zeros(dim, bool)
        mask[rng.choice(dim, obs_dim, replace=False)] = True
        operator, singular_values = MaskOperator(mask), np.ones(obs_dim)
    else:
        u, _, vt = np.linalg.svd(rng.normal(size=(obs_dim, dim)), full_matrices=False)
        singular_values = np.sort(rng.uniform(size=obs_dim))[::-1]
        operator = MatrixOperator(u @ np.diag(singular_values) @ vt)
    noise_std = rng.uniform() * singular_values.max() if noise_std is None else noise_std
    x_true = np.asarray(mixture.sample(jax.random.key(seed), 1))[0]
    y = np.asarray(operator.apply(x_true)) + noise_std * rng.normal(size=obs_dim)
    return mixture, measurement(operator, y, noise_std), x_true


def _separated_means(rng, num_components: int, dim: int, separation: float, tries: int = 1000):
    """``K`` draws from ``N(0, separation^2 I)``, redrawn until every pair is ``separation`` apart."""
    for _ in range(tries):
        means = separation * rng.normal(size=(num_components, dim))
        gaps = np.linalg.norm(means[:, None] - means[None], axis=-1) + np.diag(
            np.full(num_components, np.inf)
        )
        if gaps.min() >= separation:
            return means
    raise ValueError(f"no {num_components} means {separation} apart in {tries} draws at dim = {dim}")
