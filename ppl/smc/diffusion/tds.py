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
    Sampler,
    StepInfo,
    check_settings,
    ddim_moments_from_denoised,
    reweight_then_maybe_resample,
    run,
)

__all__ = ["Config", "State", "init", "step", "tds"]


class Config(NamedTuple):
    """Static configuration of :func:`tds`."""

    eta: float
    ess_threshold: float
    scheme: str
    twist_fn: Callable | None


class State(NamedTuple):
    """One island: particles ``(n, d)``, their twist ``log p~_t(y | x)`` ``(n,)``, its gradient
    ``(n, d)`` and the denoised particles ``(n, d)`` at the current time, normalised
    log-weights ``(n,)`` and the running log-evidence ``()``."""

    particles: jax.Array
    log_twist: jax.Array
    twist_grad: jax.Array
    denoised: jax.Array
    log_weights: jax.Array
    log_evidence: jax.Array


def _twist(prior, observation, config: Config):
    """``(x (n, d), t) -> ((log p~_t(y | x) (n,), D(x, t) (n, d)), grad (n, d))``."""

    def one(x, t):
        denoised = prior.denoise(x, t)
        if config.twist_fn is not None:
            return config.twist_fn(x, t), denoised
        variance = (prior.schedule.sigma(t) / prior.schedule.alpha(t)) ** 2
        return observation.log_likelihood_inflated(denoised, variance), denoised

    return jax.vmap(jax.value_and_grad(one, has_aux=True), in_axes=(0, None))


def init(rng_key, prior, observation, config: Config, times, num_particles: int) -> State:
    """``n`` draws from the noise end, weighted by the twist at ``t_max = times[0]``."""
    x = prior.sample_initial(rng_key, num_particles)
    (log_twist, denoised), twist_grad = _twist(prior, observation, config)(x, times[0])
    log_weights, log_evidence = resampling.reweight(
        jnp.full(num_particles, -jnp.log(num_particles)), log_twist
    )
    return State(x, log_twist, twist_grad, denoised, log_weights, log_evidence)


def step(rng_key, state: State, prior, observation, config: Config, t, t_next, final: bool):
    """Move ``t -> t_next`` with the twisted proposal, reweight, resample below the ESS threshold."""
    move_key, resample_key = jax.random.split(rng_key)
    x = state.particles
    # To t = 0 take D(x) (the kernel's variance there, Var[x0 | x_{t_min}], is ~1e-4) and
    # weigh by the true likelihood.
    if final:
        x_next = state.denoised
        increments = jax.vmap(observation.log_likelihood)(x_next) - state.log_twist
        cache = (x_next, state.log_twist, state.twist_grad, state.denoised)
    else:
        moments = jax.vmap(
            lambda x, d: ddim_moments_from_denoised(prior, x, d, t, t_next, config.eta), in_axes=(0, 0)
        )
        mean, std, _ = moments(x, state.denoised)
        shifted = mean + (std**2)[:, None] * state.twist_grad
        x_next = shifted + std[:, None] * jax.random.normal(move_key, x.shape)
        log_kernel_ratio = (jnp.sum((x_next - shifted) ** 2, -1) - jnp.sum((x_next - mean) ** 2, -1)) / (
            2 * std**2
        )
        (next_twist, next_denoised), next_grad = _twist(prior, observation, config)(x_next, t_next)
        increments = log_kernel_ratio + next_twist - state.log_twist
        cache = (x_next, next_twist, next_grad, next_denoised)
    cache, log_weights, log_increment, ess, resampled = reweight_then_maybe_resample(
        resample_key, cache, state.log_weights, increments, config.ess_threshold, config.scheme
    )
    return State(*cache, log_weights, state.log_evidence + log_increment), StepInfo(ess, resampled)


SAMPLER = Sampler("tds", init, step)


def tds(
    prior,
    observation,
    *,
    key,
    num_particles: int = 1000,
    num_steps: int = 100,
    num_islands: int = 1,
    eta: float = 1.0,
    ess_threshold: float = 0.5,
    resampling_scheme: str = "systematic",
    twist_fn: Callable | None = None,
    devices: int | None = None,
    progress_bar: bool | None = None,
):
    """Sample ``p(x | y)`` with the twisted diffusion sampler.

    Returns a :class:`~ppl.smc.diffusion.DiffusionResult`.

    Args:
        prior: a :class:`~ppl.smc.diffusion.DiffusionPrior` (differentiated through: one VJP per step).
        observation: from :func:`~ppl.smc.diffusion.measurement` (linear or nonlinear ``A``).
        key: a ``jax.random`` key.
        num_particles, num_steps, num_islands, ess_threshold, resampling_scheme: as in
            :func:`~ppl.smc.diffusion.afdps`.
        devices, progress_bar: as in :func:`~ppl.smc.diffusion.afdps`.
        eta: the reverse kernel's stochasticity (``1``: DDPM; must be ``> 0``).
        twist_fn: ``(x (d,), t) -> log p~_t(y | x)``; default: Gaussian at Tweedie's denoiser.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from ppl.smc.diffusion import GaussianMixture, measurement, tds, vp
        >>> gmm = GaussianMixture(jnp.ones(2), jnp.array([[-2.0, 0.0], [2.0, 0.0]]))
        >>> obs = measurement(jnp.array([[1.0, 0.0]]), jnp.array([1.0]), noise_std=0.5)
        >>> prior = gmm.diffusion_prior(vp())
        >>> tds(prior, obs, key=jax.random.key(0), num_particles=100, num_steps=10).particles.shape
        (100, 2)
    """
    check_settings("tds", eta=eta, ess_threshold=ess_threshold, resampling_scheme=resampling_scheme)
    config = Config(float(eta), float(ess_threshold), resampling_scheme, twist_fn)
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
