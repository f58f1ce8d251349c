"""TDS: the twisted diffusion sampler (Wu, Trippe, Naesseth, Blei, Cunningham; NeurIPS 2023).

Particles follow the reverse kernel ``p(x' | x) = N(m(x), c^2 I)`` (DDIM with ``eta``)
twisted by ``p~_t(y | x_t)``: the proposal shifts the mean by ``c^2 grad log p~_t(y | x)``
and the incremental weight is

    p(x' | x) p~_{t'}(y | x') / (q(x' | x, y) p~_t(y | x)),

with the true likelihood at ``t = 0``. Any twist leaves the sampler exact as ``N -> oo``;
the default twist is Gaussian at Tweedie's denoiser, ``N(y; A D(x_t), sigma_y^2 I +
(sigma_t / alpha_t)^2 A A^T)`` (the TDS repository's ``(1 - abar)/abar`` variance). Pass
``twist_fn`` for another one, e.g. the exact ``p(y | x_t)`` of a Gaussian mixture
(:meth:`~ppl.smc.diffusion.GaussianMixture.noised_log_likelihood`): then ESS stays near ``N``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ppl.smc import resampling
from ppl.smc.diffusion.base import (
    IslandOutput,
    check_settings,
    ddim_moments_from_denoised,
    reweight_then_maybe_resample,
    run,
    scan_steps,
)

__all__ = ["tds"]


class _Config(NamedTuple):
    eta: float
    ess_threshold: float
    scheme: str
    twist_fn: Callable | None


def _twist_and_denoised(prior, observation, config, x, t):
    """``(log p~_t(y | x), D(x, t))`` for one particle."""
    denoised = prior.denoise(x, t)
    if config.twist_fn is not None:
        return config.twist_fn(x, t), denoised
    variance = (prior.schedule.sigma(t) / prior.schedule.alpha(t)) ** 2
    return observation.log_likelihood_inflated(denoised, variance), denoised


def _island(rng_key, prior, observation, config: _Config, times: tuple, n):
    init_key, loop_key = jax.random.split(rng_key)
    twist = jax.vmap(
        jax.value_and_grad(lambda x, t: _twist_and_denoised(prior, observation, config, x, t), has_aux=True),
        in_axes=(0, None),
    )
    moments = jax.vmap(
        lambda x, d, t, t_next: ddim_moments_from_denoised(prior, x, d, t, t_next, config.eta),
        in_axes=(0, 0, None, None),
    )
    x = prior.sample_initial(init_key, n)
    (log_twist, denoised), twist_grad = twist(x, jnp.float32(times[0]))
    log_weights, log_evidence = resampling.reweight(jnp.full(n, -jnp.log(n)), log_twist)

    def step(key, carry, t, t_next, final):
        (x, log_twist, twist_grad, denoised), log_weights, log_evidence = carry
        move_key, resample_key = jax.random.split(key)
        if final:  # to t = 0 the kernel is the point mass at D(x): weigh by the true likelihood
            x_next = denoised
            increments = jax.vmap(observation.log_likelihood)(x_next) - log_twist
            cache = (x_next, log_twist, twist_grad, denoised)
        else:
            mean, std, _ = moments(x, denoised, t, t_next)
            shifted = mean + (std**2)[:, None] * twist_grad
            x_next = shifted + std[:, None] * jax.random.normal(move_key, x.shape)
            log_kernel_ratio = (jnp.sum((x_next - shifted) ** 2, -1) - jnp.sum((x_next - mean) ** 2, -1)) / (
                2 * std**2
            )
            (next_twist, next_denoised), next_grad = twist(x_next, t_next)
            increments = log_kernel_ratio + next_twist - log_twist
            cache = (x_next, next_twist, next_grad, next_denoised)
        cache, log_weights, log_increment, ess, resampled = reweight_then_maybe_resample(
            resample_key, cache, log_weights, increments, config.ess_threshold, config.scheme
        )
        return (cache, log_weights, log_evidence + log_increment), (ess, resampled)

    carry = ((x, log_twist, twist_grad, denoised), log_weights, log_evidence)
    ((x, *_), log_weights, log_evidence), (ess, resampled) = scan_steps(step, carry, loop_key, times)
    return IslandOutput(x, log_weights, log_evidence, ess, resampled)


def tds(
    rng_key,
    prior,
    observation,
    *,
    num_particles: int = 1000,
    num_steps: int = 100,
    eta: float = 1.0,
    ess_threshold: float = 0.5,
    resampling_scheme: str = "systematic",
    twist_fn: Callable | None = None,
    devices: int | None = None,
):
    """Sample ``p(x | y)`` with the twisted diffusion sampler.

    Returns a :class:`~ppl.smc.diffusion.DiffusionResult`.

    Args:
        rng_key: a ``jax.random`` key.
        prior: a :class:`~ppl.smc.diffusion.DiffusionPrior` (differentiated through: one VJP per step).
        observation: from :func:`~ppl.smc.diffusion.measurement` (linear or nonlinear ``A``).
        num_particles, num_steps, ess_threshold, resampling_scheme, devices: as in
            :func:`~ppl.smc.diffusion.afdps`.
        eta: the reverse kernel's stochasticity (``1``: DDPM; must be ``> 0``).
        twist_fn: ``(x (d,), t) -> log p~_t(y | x)``; default: Gaussian at Tweedie's denoiser.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from ppl.smc.diffusion import GaussianMixture, measurement, tds, vp
        >>> gmm = GaussianMixture(jnp.ones(2), jnp.array([[-2.0, 0.0], [2.0, 0.0]]))
        >>> obs = measurement(jnp.array([[1.0, 0.0]]), jnp.array([1.0]), noise_std=0.5)
        >>> prior = gmm.diffusion_prior(vp())
        >>> tds(jax.random.key(0), prior, obs, num_particles=100, num_steps=10).particles.shape
        (100, 2)
    """
    check_settings("tds", eta=eta, ess_threshold=ess_threshold, resampling_scheme=resampling_scheme)
    config = _Config(float(eta), float(ess_threshold), resampling_scheme, twist_fn)
    return run(
        _island,
        rng_key,
        prior,
        observation,
        config,
        method="tds",
        num_particles=num_particles,
        num_steps=num_steps,
        devices=devices,
    )
