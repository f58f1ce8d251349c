"""The exact diffusion prior of a Gaussian mixture, and the MCGdiff benchmark instances.

:class:`GaussianMixture` is :class:`ppl.smc.diffusion.mixture.GaussianMixture` with
:meth:`~GaussianMixture.diffusion_prior`: a :class:`~ppl.smc.diffusion.DiffusionPrior`
whose score is the exact noised score at every ``t``, so samplers can be checked against
the exact posterior. :func:`grid_mixture_problem` draws one instance of the 25-component
benchmark (notes/diffusion_smc.md, section 3.1).

Example:
    >>> import jax.numpy as jnp
    >>> from ppl.smc.diffusion import GaussianMixture, vp
    >>> gmm = GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[-2.0, 0.0], [2.0, 0.0]]))
    >>> prior = gmm.diffusion_prior(vp())  # exact score at every t
    >>> prior.score(jnp.zeros(2), 0.5).shape
    (2,)
"""

from __future__ import annotations

import jax
import numpy as np

from ppl.smc.diffusion import mixture
from ppl.smc.diffusion.mixture import GaussianMixturePosterior
from ppl.smc.diffusion.operators import measurement
from ppl.smc.diffusion.prior import DiffusionPrior
from ppl.smc.diffusion.schedule import Schedule

__all__ = ["GaussianMixture", "GaussianMixturePosterior", "grid_mixture_problem"]


@jax.tree_util.register_pytree_node_class
class GaussianMixture(mixture.GaussianMixture):
    """``sum_k w_k N(m_k, v_k I)`` (see :class:`ppl.smc.diffusion.mixture.GaussianMixture`),
    with its exact diffusion prior.

    Args:
        weights: ``(K,)``, nonnegative (normalised here).
        means: ``(K, d)``.
        variances: ``(K,)`` or a scalar; default 1.
    """

    def diffusion_prior(self, schedule: Schedule) -> DiffusionPrior:
        """A :class:`DiffusionPrior` with the exact noised score, the exact posterior variance of
        ``x_0`` given ``x_t`` (for the reverse kernel) and the exact noise-end law."""
        t_max = schedule.t_max
        noise_end = self.noised(schedule.alpha(t_max), schedule.sigma(t_max))
        return DiffusionPrior(
            schedule,
            self.dim,
            score_fn=_NoisedScore(schedule),
            params=self,
            noise_end=noise_end,
            denoiser_variance=_NoisedDenoiserVariance(schedule),
        )


class _NoisedScore:
    """``(mixture, x, t) -> grad log p_t(x)``; equal for equal schedules (no recompiles)."""

    def __init__(self, schedule: Schedule):
        self.schedule = schedule

    def __call__(self, mixture: GaussianMixture, x, t):
        return mixture.noised(self.schedule.alpha(t), self.schedule.sigma(t)).score(x)

    def __eq__(self, other):
        return isinstance(other, _NoisedScore) and other.schedule == self.schedule

    def __hash__(self):
        return hash(("noised-mixture-score", self.schedule))


class _NoisedDenoiserVariance(_NoisedScore):
    """``(mixture, x, t) -> tr Cov[x_0 | x_t = x] / d``, exact."""

    def __call__(self, mixture: GaussianMixture, x, t):
        return mixture.denoiser_variance(x, self.schedule.alpha(t), self.schedule.sigma(t))

    def __eq__(self, other):
        return isinstance(other, _NoisedDenoiserVariance) and other.schedule == self.schedule

    def __hash__(self):
        return hash(("noised-mixture-denoiser-variance", self.schedule))


def grid_mixture_problem(seed: int, dim: int, obs_dim: int):
    """One instance of the MCGdiff Gaussian-mixture benchmark (notes/diffusion_smc.md, section 3.1).

    25 unit-covariance components with means ``(-8i, -8j)`` repeated ``dim/2`` times,
    weights ``z^2`` with ``z ~ N(0, I_25)``; ``A = U diag(s) V^T`` from the SVD of a
    Gaussian ``(obs_dim, dim)`` matrix with sorted ``U(0, 1)`` singular values;
    ``sigma_y = U(0, 1) * max(s)``; ``y = A x* + sigma_y eps`` with ``x*`` from the prior.

    Returns ``(mixture, observation, x_true)``.
    """
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    rng = np.random.default_rng(seed)
    grid = np.array([(-8.0 * i, -8.0 * j) for i in range(-2, 3) for j in range(-2, 3)])
    mixture = GaussianMixture(rng.normal(size=25) ** 2, np.tile(grid, (1, dim // 2)))
    u, _, vt = np.linalg.svd(rng.normal(size=(obs_dim, dim)), full_matrices=False)
    singular_values = np.sort(rng.uniform(size=obs_dim))[::-1]
    matrix = u @ np.diag(singular_values) @ vt
    noise_std = rng.uniform() * singular_values.max()
    x_true = np.asarray(mixture.sample(jax.random.key(seed), 1))[0]
    y = matrix @ x_true + noise_std * rng.normal(size=obs_dim)
    return mixture, measurement(matrix, y, noise_std), x_true
