"""What every diffusion posterior sampler shares: the reverse kernel, the particle loop,
islands over devices, and the result object.

A sampler is an *island* function ``island(rng_key, prior, observation, config, times, n)``
returning an :class:`IslandOutput` for ``n`` particles on the time grid ``times``.
:func:`run` maps islands over devices (:func:`ppl.parallel.map_chains`, one island per
device) and merges them exactly: island
``j``'s normalised weights are multiplied by its evidence estimate ``Z_j`` (independent
SMC runs combine that way), and the merged evidence is the mean of the ``Z_j``.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from ppl.parallel import map_chains
from ppl.smc import resampling
from ppl.smc.diffusion.operators import Measurement
from ppl.smc.diffusion.prior import DiffusionPrior

__all__ = ["DiffusionResult", "IslandOutput", "check_settings", "ddim_moments", "run", "scan_steps"]


class IslandOutput(NamedTuple):
    """One island's result: particles ``(n, d)``, normalised log-weights ``(n,)``,
    log-evidence ``()``, ESS before each resampling decision ``(K,)``, resampled ``(K,)``."""

    particles: jax.Array
    log_weights: jax.Array
    log_evidence: jax.Array
    ess: jax.Array
    resampled: jax.Array


def ddim_moments(prior: DiffusionPrior, x, t, t_next, eta):
    """Mean and standard deviation of the reverse kernel ``p(x_{t_next} | x_t)`` (DDIM with ``eta``).

    ``eta = 1`` is DDPM's ancestral kernel, ``eta = 0`` the deterministic DDIM map. With
    ``x0 = D(x, t)`` and ``eps = (x - alpha x0) / sigma``:
    ``mean = alpha' x0 + sqrt(sigma'^2 - c^2) eps``,
    ``c = eta sigma' sqrt(1 - (alpha sigma' / (alpha' sigma))^2)``.

    Returns ``(mean (d,), c (), x0 (d,))``.
    """
    return ddim_moments_from_denoised(prior, x, prior.denoise(x, t), t, t_next, eta)


def ddim_moments_from_denoised(prior: DiffusionPrior, x, denoised, t, t_next, eta):
    """:func:`ddim_moments` when ``D(x, t)`` is already known."""
    schedule = prior.schedule
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    alpha_next, sigma_next = schedule.alpha(t_next), schedule.sigma(t_next)
    ratio = alpha * sigma_next / (alpha_next * sigma)
    std = eta * sigma_next * jnp.sqrt(jnp.clip(1 - ratio**2, 0.0, 1.0))
    noise = (x - alpha * denoised) / sigma
    mean = alpha_next * denoised + jnp.sqrt(jnp.clip(sigma_next**2 - std**2, 0.0)) * noise
    return mean, std, denoised


def scan_steps(step, carry, rng_key, times: tuple):
    """Run ``step(key, carry, t, t_next, final) -> (carry, info)`` over the grid ``times``.

    All but the last step run in one ``lax.scan``; the last one (to ``t = 0``, where a
    network may not be defined) runs with ``final=True`` as a separate static branch.
    Infos are stacked along a leading axis of length ``len(times) - 1``.
    """
    times = np.asarray(times, np.float32)
    keys = jax.random.split(rng_key, len(times) - 1)

    def body(carry, xs):
        key, t, t_next = xs
        return step(key, carry, t, t_next, False)

    carry, infos = jax.lax.scan(body, carry, (keys[:-1], jnp.asarray(times[:-2]), jnp.asarray(times[1:-1])))
    carry, last = step(keys[-1], carry, jnp.asarray(times[-2]), jnp.asarray(times[-1]), True)
    infos = jax.tree.map(lambda many, one: jnp.concatenate([many, one[None]]), infos, last)
    return carry, infos


def reweight_then_maybe_resample(rng_key, particles, log_weights, increments, threshold, scheme):
    """Add incremental log-weights, record the ESS, resample if it is below ``threshold * n``.

    ``particles`` is any pytree with leading axis ``n``. Returns
    ``(particles, log_weights, log_evidence_increment, ess, resampled)``.
    """
    log_weights, log_increment = resampling.reweight(log_weights, increments)
    ess = resampling.ess(log_weights)
    particles, log_weights, resampled = resampling.resample_if(
        rng_key, particles, log_weights, threshold, scheme
    )
    return particles, log_weights, log_increment, ess, resampled


@partial(jax.jit, static_argnames=("island", "config", "times", "num_islands", "particles_per_island"))
def _run_islands(rng_key, prior, observation, *, island, config, times, num_islands, particles_per_island):
    def one(key, shared):
        prior, observation = shared
        return island(key, prior, observation, config, times, particles_per_island)

    keys = jax.random.split(rng_key, num_islands)
    return map_chains(one, num_islands, vectorized=True)(keys, (prior, observation))


def check_settings(method: str, *, eta=None, stochastic=True, ess_threshold=None, resampling_scheme=None):
    """Validate the options samplers share; ``stochastic`` samplers need ``eta > 0``."""
    if eta is not None and not ((0 < eta if stochastic else 0 <= eta) and eta <= 1):
        bound = "0 < eta <= 1 (a stochastic kernel)" if stochastic else "0 <= eta <= 1"
        raise ValueError(f"{method} needs {bound}, got {eta}")
    if ess_threshold is not None and not 0 <= ess_threshold <= 1:
        raise ValueError(f"ess_threshold must be in [0, 1], got {ess_threshold}")
    if resampling_scheme is not None:
        resampling.check_scheme(resampling_scheme)


def check_inputs(
    prior: DiffusionPrior, observation: Measurement, num_particles: int, num_steps: int, devices
):
    """Validate what every sampler receives; return the number of islands."""
    if not isinstance(prior, DiffusionPrior):
        raise TypeError(f"prior must be a ppl.smc.diffusion.DiffusionPrior, got {type(prior).__name__}")
    if not isinstance(observation, Measurement):
        raise TypeError(
            f"observation must come from ppl.smc.diffusion.measurement(...), got {type(observation).__name__}"
        )
    if observation.dim != prior.dim:
        raise ValueError(
            f"the measurement has shape {observation.shape} (d_y, d): it acts on x of dimension "
            f"{observation.dim}, but the prior has dim = {prior.dim}"
        )
    if int(num_steps) < 2:
        raise ValueError(f"num_steps must be >= 2, got {num_steps}")
    num_islands = 1 if devices is None else int(devices)
    if not 1 <= num_islands <= jax.local_device_count():
        raise ValueError(
            f"devices must be between 1 and {jax.local_device_count()} (local devices), got {devices}"
        )
    if int(num_particles) < 1 or int(num_particles) % num_islands:
        raise ValueError(
            f"num_particles ({num_particles}) must be a positive multiple of devices ({num_islands})"
        )
    return num_islands


def run(
    island,
    rng_key,
    prior,
    observation,
    config,
    *,
    method,
    num_particles,
    num_steps,
    devices,
    has_evidence=True,
):
    """Run ``island`` on the grid ``prior.schedule.timesteps(num_steps)`` on every device and
    merge; returns a :class:`DiffusionResult`."""
    num_islands = check_inputs(prior, observation, num_particles, num_steps, devices)
    out = _run_islands(
        rng_key,
        prior,
        observation,
        island=island,
        config=config,
        times=tuple(float(t) for t in prior.schedule.timesteps(num_steps)),
        num_islands=num_islands,
        particles_per_island=int(num_particles) // num_islands,
    )
    log_z = out.log_evidence  # (islands,)
    merged = out.log_weights + (log_z - logsumexp(log_z))[:, None]
    result = DiffusionResult(
        method=method,
        particles=out.particles.reshape(-1, prior.dim),
        log_weights=merged.reshape(-1),
        log_evidence=(logsumexp(log_z) - jnp.log(num_islands)) if has_evidence else jnp.nan,
        ess=jnp.sum(out.ess, axis=0),
        num_resampling=jnp.sum(out.resampled),
        num_islands=num_islands,
    )
    result.warn_if_degenerate()
    return result


class DiffusionResult:
    """Weighted posterior particles from a diffusion sampler.

    Attributes:
        method: the sampler's name.
        particles: ``(N, d)``.
        log_weights: normalised log-weights ``(N,)`` (``weights`` gives them exponentiated).
        log_evidence: estimate of ``log p(y)`` (NaN where the method defines none).
        ess: effective sample size after each step's reweighting ``(num_steps,)``,
            summed over islands.
        num_resampling: resampling events, all islands together.
        num_islands: independent particle systems merged (one per device).
    """

    def __init__(self, method, particles, log_weights, log_evidence, ess, num_resampling, num_islands):
        self.method, self.particles, self.log_weights = method, particles, log_weights
        self.log_evidence, self.ess = log_evidence, ess
        self.num_resampling, self.num_islands = num_resampling, num_islands

    @property
    def weights(self) -> jax.Array:
        return jnp.exp(self.log_weights)

    @property
    def final_ess(self) -> float:
        return float(resampling.ess(self.log_weights))

    def warn_if_degenerate(self, fraction: float = 0.1) -> None:
        """Warn, with the ESS history, when the ESS fell below ``fraction * N`` at some step."""
        num = self.particles.shape[0]
        ess = np.asarray(self.ess)
        if not np.all(np.isfinite(np.asarray(self.particles))) or not np.all(np.isfinite(ess)):
            raise FloatingPointError(
                f"{self.method}: non-finite particles or weights (ESS history {np.round(ess, 1).tolist()}); "
                "check the network's output near t = 0 and the noise level"
            )
        low = np.flatnonzero(ess < fraction * num)
        if low.size:
            warnings.warn(
                f"{self.method}: weight collapse at {low.size} of {ess.size} steps (ESS < {fraction:.0%} of "
                f"N = {num}); minimum ESS {ess.min():.1f} at step {int(ess.argmin())}, final ESS "
                f"{self.final_ess:.1f}, {int(self.num_resampling)} resampling events. ESS history: "
                f"{np.round(ess, 1).tolist()}",
                RuntimeWarning,
                stacklevel=3,
            )

    def sample(self, rng_key, num_samples: int | None = None) -> jax.Array:
        """Equally weighted draws ``(num_samples, d)`` by systematic resampling of the final weights."""
        index = resampling.resample(rng_key, self.log_weights, "systematic", num_samples)
        return self.particles[index]

    def to_arviz(self, rng_key, num_samples: int | None = None):
        """``InferenceData`` with the resampled draws as ``posterior.x`` (chain 1, dim ``x_dim``);
        the log-evidence, ESS history and resampling count are attributes of the posterior group."""
        from ppl.arviz import from_groups, to_dataset

        draws = np.asarray(self.sample(rng_key, num_samples))[None]
        posterior = to_dataset({"x": draws}, {"x": ("x_dim",)}, {"x_dim": np.arange(draws.shape[-1])})
        posterior.attrs.update(
            sampler=self.method,
            log_evidence=float(self.log_evidence),
            ess=np.asarray(self.ess, np.float64),
            num_resampling=int(self.num_resampling),
        )
        return from_groups({"posterior": posterior})
