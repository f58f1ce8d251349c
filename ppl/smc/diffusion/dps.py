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

from ppl.smc.diffusion.base import Sampler, StepInfo, check_settings, ddim_moments_from_denoised, run

__all__ = ["Config", "State", "dps", "init", "step"]


class Config(NamedTuple):
    """Static configuration of :func:`dps`."""

    eta: float
    guidance_scale: float


class State(NamedTuple):
    """One island of independent chains: particles ``(n, d)``, equal log-weights ``(n,)``,
    no evidence (``0``)."""

    particles: jax.Array
    log_weights: jax.Array
    log_evidence: jax.Array


def init(rng_key, prior, observation, config: Config, times, num_particles: int) -> State:
    """``n`` draws from the noise end."""
    n = num_particles
    return State(prior.sample_initial(rng_key, n), jnp.full(n, -jnp.log(n)), jnp.zeros(()))


def step(rng_key, state: State, prior, observation, config: Config, t, t_next, final: bool):
    """A DDPM step, then a gradient step on ``||y - A(D(x, t))||``; to ``t = 0``: ``D(x, t)``."""

    def misfit(x):
        denoised = prior.denoise(x, t)
        return jnp.linalg.norm(observation.y - observation.apply(denoised)), denoised

    n = state.particles.shape[0]
    grad, denoised = jax.vmap(jax.grad(misfit, has_aux=True))(state.particles)
    if final:
        return state._replace(particles=denoised), StepInfo(jnp.float32(n), jnp.array(False))
    mean, std, _ = jax.vmap(lambda x, d: ddim_moments_from_denoised(prior, x, d, t, t_next, config.eta))(
        state.particles, denoised
    )
    x = mean + std[:, None] * jax.random.normal(rng_key, mean.shape) - config.guidance_scale * grad
    return state._replace(particles=x), StepInfo(jnp.float32(n), jnp.array(False))


SAMPLER = Sampler("dps", init, step, has_evidence=False)


def dps(
    prior,
    observation,
    *,
    key,
    num_particles: int = 1000,
    num_steps: int = 100,
    num_islands: int = 1,
    guidance_scale: float = 1.0,
    eta: float = 1.0,
    devices: int | None = None,
    progress_bar: bool | None = None,
):
    """Approximate posterior draws with DPS (any differentiable ``A``); returns a
    :class:`~ppl.smc.diffusion.DiffusionResult` with equal weights and NaN evidence.

    Args:
        prior: a :class:`~ppl.smc.diffusion.DiffusionPrior` (differentiated through).
        observation: from :func:`~ppl.smc.diffusion.measurement`.
        key: a ``jax.random`` key.
        num_particles: number of independent chains.
        guidance_scale: ``zeta``, the step on ``grad ||y - A(D(x))||``; ``0`` samples the prior.
        eta: the reverse kernel's stochasticity (``1``: DDPM).
        num_steps, num_islands, devices, progress_bar: as in :func:`~ppl.smc.diffusion.afdps`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from ppl.smc.diffusion import GaussianMixture, dps, measurement, vp
        >>> gmm = GaussianMixture(jnp.ones(2), jnp.array([[-2.0, 0.0], [2.0, 0.0]]))
        >>> obs = measurement(jnp.array([[1.0, 0.0]]), jnp.array([1.0]), noise_std=0.5)
        >>> prior = gmm.diffusion_prior(vp())
        >>> dps(prior, obs, key=jax.random.key(0), num_particles=100, num_steps=10).particles.shape
        (100, 2)
    """
    check_settings("dps", eta=eta, stochastic=False)
    if not guidance_scale >= 0:
        raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
    config = Config(float(eta), float(guidance_scale))
    return run(
        SAMPLER,
        prior,
        observation,
        config,
        key=key,
        num_particles=num_particles,
        num_steps=num_steps,
        num_islands=num_islands,
        devices=devices,
        progress_bar=progress_bar,
    )
