"""DPS: diffusion posterior sampling (Chung, Kim, McCann, Klasky, Ye; ICLR 2023), the non-SMC baseline.

Each of ``N`` independent chains takes a DDPM step and then a gradient step on the data
misfit at Tweedie's denoiser,

    x' <- x' - guidance_scale * grad_x ||y - A(D(x, t))||,

differentiating through the network. It is not a posterior sampler (no weights, biased
for any step size); it is the common baseline. Equal weights, no evidence estimate.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ppl.smc.diffusion.base import IslandOutput, check_settings, ddim_moments_from_denoised, run, scan_steps

__all__ = ["dps"]


class _Config(NamedTuple):
    eta: float
    guidance_scale: float


def _island(rng_key, prior, observation, config: _Config, times: tuple, n):
    def misfit(x, t):
        denoised = prior.denoise(x, t)
        return jnp.linalg.norm(observation.y - observation.apply(denoised)), denoised

    misfit_grad = jax.vmap(jax.grad(misfit, has_aux=True), in_axes=(0, None))
    moments = jax.vmap(
        lambda x, d, t, t_next: ddim_moments_from_denoised(prior, x, d, t, t_next, config.eta),
        in_axes=(0, 0, None, None),
    )
    init_key, loop_key = jax.random.split(rng_key)

    def step(key, x, t, t_next, final):
        grad, denoised = misfit_grad(x, t)
        if final:
            return denoised, jnp.float32(n)
        mean, std, _ = moments(x, denoised, t, t_next)
        x = mean + std[:, None] * jax.random.normal(key, x.shape) - config.guidance_scale * grad
        return x, jnp.float32(n)

    x, ess = scan_steps(step, prior.sample_initial(init_key, n), loop_key, times)
    return IslandOutput(x, jnp.full(n, -jnp.log(n)), jnp.float32(0.0), ess, jnp.zeros(ess.shape, bool))


def dps(
    rng_key,
    prior,
    observation,
    *,
    num_particles: int = 1000,
    num_steps: int = 100,
    guidance_scale: float = 1.0,
    eta: float = 1.0,
    devices: int | None = None,
):
    """Approximate posterior draws with DPS (any differentiable ``A``); returns a
    :class:`~ppl.smc.diffusion.DiffusionResult` with equal weights and NaN evidence.

    Args:
        rng_key: a ``jax.random`` key.
        prior: a :class:`~ppl.smc.diffusion.DiffusionPrior` (differentiated through).
        observation: from :func:`~ppl.smc.diffusion.measurement`.
        num_particles: number of independent chains.
        guidance_scale: ``zeta``, the step on ``grad ||y - A(D(x))||``; ``0`` samples the prior.
        eta: the reverse kernel's stochasticity (``1``: DDPM).
        num_steps, devices: as in :func:`~ppl.smc.diffusion.afdps`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from ppl.smc.diffusion import GaussianMixture, dps, measurement, vp
        >>> gmm = GaussianMixture(jnp.ones(2), jnp.array([[-2.0, 0.0], [2.0, 0.0]]))
        >>> obs = measurement(jnp.array([[1.0, 0.0]]), jnp.array([1.0]), noise_std=0.5)
        >>> prior = gmm.diffusion_prior(vp())
        >>> dps(jax.random.key(0), prior, obs, num_particles=100, num_steps=10).particles.shape
        (100, 2)
    """
    check_settings("dps", eta=eta, stochastic=False)
    if not guidance_scale >= 0:
        raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
    config = _Config(float(eta), float(guidance_scale))
    return run(
        _island,
        rng_key,
        prior,
        observation,
        config,
        method="dps",
        num_particles=num_particles,
        num_steps=num_steps,
        devices=devices,
        has_evidence=False,
    )
