"""AFDPS: approximation-free diffusion posterior sampling (Chen, Ren, Min, Ying, Izzo; arXiv 2506.03979).

Weighted particles follow the path ``Q(x, tau) ~ p_tau(x) exp(-mu(x))``: the *noised*
prior times the *un-noised* likelihood at the noisy state, ``mu = -log p(y | x)``. On
the reverse clock, with forward SDE ``dx = f x dt + g dW`` and any ``V >= 0``,
``Q`` solves (notes/diffusion_smc.md, section 1.2)

    dQ/dtau = -div((H - V^2 grad mu) Q) + V^2/2 Lap Q + r Q,
    H = -f x + (g^2 + V^2)/2 * score,   r = V^2/2 (|grad mu|^2 - Lap mu) - H . grad mu.

* ``variant="sde"`` (``V = g``): Euler-Maruyama on the drift ``H - g^2 grad mu``, weights
  ``log w += dtau * r``, all at the old state and time.
* ``variant="ode"`` (``V = 0``): probability-flow predictor ``x += dtau H`` with
  ``log w += -dtau H . grad mu``, then unadjusted Langevin corrector steps targeting
  ``p_t exp(-mu)`` at the new time (the corrector's bias is not weight-corrected).

Stage I samples ``p_{t_max}(x) exp(-mu(x))`` exactly (a Gaussian or Gaussian mixture
posterior) for linear ``A``; for a nonlinear map it importance-weights noise-end draws by
the likelihood. Resampling when ``ESS < ess_threshold * N``. The log-evidence is exact in
the continuous-time limit (``Lap mu`` is kept in the weights for that reason).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ppl.smc import resampling
from ppl.smc.diffusion.base import Sampler, StepInfo, check_settings, reweight_then_maybe_resample, run

__all__ = ["Config", "State", "afdps", "init", "step"]


class Config(NamedTuple):
    """Static configuration of :func:`afdps`."""

    variant: str
    ess_threshold: float
    scheme: str
    langevin_step: float
    langevin_steps: int


class State(NamedTuple):
    """One island: particles ``(n, d)``, normalised log-weights ``(n,)``, log-evidence ``()``."""

    particles: jax.Array
    log_weights: jax.Array
    log_evidence: jax.Array


def init(rng_key, prior, observation, config: Config, times, num_particles: int) -> State:
    """Stage I: particles from ``p_{t_max}(x) exp(-mu(x))`` and the log of its normaliser."""
    n = num_particles
    if observation.is_linear:
        stage = prior.noise_end.posterior(observation)
        return State(stage.sample(rng_key, n), jnp.full(n, -jnp.log(n)), stage.log_evidence)
    x = prior.sample_initial(rng_key, n)
    log_weights, log_evidence = resampling.reweight(
        jnp.full(n, -jnp.log(n)), jax.vmap(observation.log_likelihood)(x)
    )
    return State(x, log_weights, log_evidence)


def _lipschitz(observation):
    """Lipschitz bound of ``grad mu`` for the Langevin step (linear ``A``: ``max S^2 / sigma_y^2``)."""
    if not observation.is_linear:
        return 0.0
    return jnp.max(observation.forward.singular_values) ** 2 / observation.noise_std**2


def step(rng_key, state: State, prior, observation, config: Config, t, t_next, final: bool):
    """One Euler step of the weighted path ``t -> t_next`` (see the module docstring)."""
    move_key, corrector_key, resample_key = jax.random.split(rng_key, 3)
    schedule = prior.schedule
    score = jax.vmap(prior.score, in_axes=(0, None))
    potential_grad = jax.vmap(observation.potential_grad)
    x = state.particles
    dt = t - t_next
    drift, g2 = schedule.drift(t), schedule.diffusion_squared(t)
    grad_mu = potential_grad(x)
    if config.variant == "sde":
        flow = -drift * x + g2 * score(x, t)
        laplacian = jax.vmap(observation.potential_laplacian)(x)
        rate = 0.5 * g2 * (jnp.sum(grad_mu**2, -1) - laplacian) - jnp.sum(flow * grad_mu, -1)
        x = x + dt * (flow - g2 * grad_mu) + jnp.sqrt(g2 * dt) * jax.random.normal(move_key, x.shape)
    else:
        flow = -drift * x + 0.5 * g2 * score(x, t)
        rate = -jnp.sum(flow * grad_mu, -1)
        x = x + dt * flow
        if not final:
            x = _langevin(corrector_key, x, t_next, prior, potential_grad, _lipschitz(observation), config)
    x, log_weights, log_increment, ess, resampled = reweight_then_maybe_resample(
        resample_key, x, state.log_weights, dt * rate, config.ess_threshold, config.scheme
    )
    return State(x, log_weights, state.log_evidence + log_increment), StepInfo(ess, resampled)


def _langevin(rng_key, x, t, prior, potential_grad, lipschitz, config):
    """ULA on ``p_t exp(-mu)``; step ``langevin_step / L`` with ``L = 1/sigma_t^2 + Lip(grad mu)``
    (``-Hess log p_t <= I / sigma_t^2`` for any prior convolved with ``N(0, sigma_t^2)``)."""
    step_size = config.langevin_step / (1.0 / prior.schedule.sigma(t) ** 2 + lipschitz)
    score = jax.vmap(prior.score, in_axes=(0, None))

    def one(x, key):
        noise = jax.random.normal(key, x.shape)
        return x + step_size * (score(x, t) - potential_grad(x)) + jnp.sqrt(2 * step_size) * noise, None

    x, _ = jax.lax.scan(one, x, jax.random.split(rng_key, config.langevin_steps))
    return x


SAMPLERS = {variant: Sampler(f"afdps-{variant}", init, step) for variant in ("sde", "ode")}


def afdps(
    prior,
    observation,
    *,
    key,
    num_particles: int = 1000,
    num_steps: int = 100,
    num_islands: int = 1,
    variant: str = "sde",
    ess_threshold: float = 0.5,
    resampling_scheme: str = "systematic",
    langevin_step: float = 0.1,
    langevin_steps: int = 1,
    devices: int | None = None,
    progress_bar: bool | None = None,
):
    """Sample ``p(x | y)`` with AFDPS; returns a :class:`~ppl.smc.diffusion.DiffusionResult`.

    Args:
        prior: a :class:`~ppl.smc.diffusion.DiffusionPrior`.
        observation: from :func:`~ppl.smc.diffusion.measurement` (linear or nonlinear ``A``).
        key: a ``jax.random`` key; island ``j`` uses ``fold_in(key, j)``.
        num_particles: ``N``, all islands together (a multiple of ``num_islands``).
        num_steps: steps of the shared time grid ``prior.schedule.timesteps(num_steps)``.
        num_islands: independent particle systems of ``N / num_islands`` particles, merged
            by evidence (a setting of the algorithm, not of the devices: the same key gives
            the same result on any number of devices, to float rounding).
        variant: ``"sde"`` or ``"ode"`` (probability-flow predictor + Langevin corrector).
        ess_threshold: resample when ``ESS < ess_threshold * N``.
        resampling_scheme: a name in :data:`ppl.smc.resampling.SCHEMES`.
        langevin_step, langevin_steps: the ODE variant's corrector (step in units of ``1/L``).
        devices: devices to spread the islands over (``None``: all, at most one per island).
        progress_bar: ``None`` shows a bar in an interactive terminal.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from ppl.smc.diffusion import GaussianMixture, afdps, measurement, vp
        >>> gmm = GaussianMixture(jnp.ones(2), jnp.array([[-2.0, 0.0], [2.0, 0.0]]))
        >>> obs = measurement(jnp.array([[1.0, 0.0]]), jnp.array([1.0]), noise_std=0.5)
        >>> prior = gmm.diffusion_prior(vp())
        >>> result = afdps(prior, obs, key=jax.random.key(0), num_particles=200, num_steps=20)
        >>> result.particles.shape
        (200, 2)
    """
    if variant not in ("sde", "ode"):
        raise ValueError(f"variant must be 'sde' or 'ode', got {variant!r}")
    check_settings("afdps", ess_threshold=ess_threshold, resampling_scheme=resampling_scheme)
    config = Config(
        variant, float(ess_threshold), resampling_scheme, float(langevin_step), int(langevin_steps)
    )
    return run(
        SAMPLERS[variant],
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
