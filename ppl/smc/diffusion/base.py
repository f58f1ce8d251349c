"""What every diffusion posterior sampler shares: the reverse kernel, the driver, the result.

A sampler is a :class:`Sampler`: pure functions for one island (an independent particle
system of ``n`` particles),

* ``init(rng_key, prior, observation, config, times, n) -> state``,
* ``step(rng_key, state, prior, observation, config, t, t_next, final) -> (state, StepInfo)``,
* optionally ``finalize(rng_key, state, config) -> (particles, log_weights, log_evidence)``,

whose state has ``particles``, ``log_weights`` (normalised) and ``log_evidence`` fields.
:func:`run` is the driver: it runs ``num_islands`` islands (a setting of the algorithm,
spread over the devices by the runtime) over the grid ``prior.schedule.timesteps(num_steps)``
in the runtime's chunked loop, the last step (to ``t = 0``, where a network may not be
defined) as a separate static branch, and merges the islands exactly: island ``j``'s
normalised weights are multiplied by its evidence estimate ``Z_j`` (independent SMC runs
combine that way), and the merged evidence is the mean of the ``Z_j``. Island ``j`` uses
``fold_in(key, j)`` and step ``i`` of an island ``fold_in(island_key, i)``, so the same key
gives the same particles on any number of devices, to float rounding (XLA fuses a
network's arithmetic differently when a device holds one island instead of several, and
resampling can turn last-bit differences into other, equally distributed, particles).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppl.runtime.devices import DevicePlan, map_replicas, plan_devices, to_host
from ppl.runtime.keys import replica_keys, validate_key
from ppl.runtime.loop import scan_in_chunks, strongly_typed
from ppl.runtime.results import WeightedSamples
from ppl.smc import resampling
from ppl.smc.diffusion.operators import Measurement
from ppl.smc.diffusion.prior import DiffusionPrior

__all__ = [
    "DiffusionResult",
    "ReverseKernel",
    "Sampler",
    "StepInfo",
    "check_settings",
    "ddim_moments",
    "ddim_moments_from_denoised",
    "reverse_kernel",
    "reweight_then_maybe_resample",
    "run",
]


class StepInfo(NamedTuple):
    """One step of one island: the ESS after reweighting ``()`` and whether it resampled."""

    ess: jax.Array
    resampled: jax.Array


class Sampler(NamedTuple):
    """A diffusion posterior sampler as pure functions (see the module docstring)."""

    name: str
    init: Callable
    step: Callable
    finalize: Callable | None = None
    has_evidence: bool = True


class ReverseKernel(NamedTuple):
    """The reverse kernel at one particle (see :func:`ddim_moments`): ``x' ~ N(mean, std^2 I)``,
    the DDIM bridge ``x' = x0_scale x_0 + (terms in x_t) + N(0, bridge_variance I)`` averaged
    over ``x_0 | x_t ~ N(denoised, x0_variance I)``; ``std^2 = bridge_variance + x0_scale^2 x0_variance``.

    Shapes: ``mean``, ``denoised`` ``(d,)``; the rest ``()``.
    """

    mean: jax.Array
    std: jax.Array
    denoised: jax.Array
    x0_scale: jax.Array
    bridge_variance: jax.Array
    x0_variance: jax.Array


def ddim_moments(prior: DiffusionPrior, x, t, t_next, eta):
    """Mean and standard deviation of the reverse kernel ``p(x_{t_next} | x_t)``.

    The DDIM bridge ``q(x' | x_t, x_0) = N(alpha' x_0 + sqrt(sigma'^2 - c^2) (x_t - alpha x_0) / sigma,
    c^2 I)``, ``c = eta sigma' sqrt(1 - (alpha sigma' / (alpha' sigma))^2)`` (``eta = 1``: DDPM's
    ancestral bridge, ``eta = 0``: DDIM's), averaged over ``x_0 | x_t`` with its mean
    ``x0 = D(x, t)`` and its variance ``v = tr Cov[x_0 | x_t] / d``
    (:meth:`~ppl.smc.diffusion.DiffusionPrior.denoiser_variance`): the mean is the bridge's
    at ``x0``, the variance ``c^2 + a^2 v`` with ``a = alpha' - sqrt(sigma'^2 - c^2) alpha / sigma``
    the bridge's coefficient of ``x_0``. Every bridge keeps the forward marginals, so for
    Gaussian data (isotropic: ``Cov[x_0 | x_t] = v I``) this kernel keeps them at any step
    size, and with ``eta = 1`` it is the exact reverse conditional; the plain kernel
    (``v = 0``, DDPM / DDIM) loses variance on coarse grids (a mixture's component variances
    come out at 0.9 of the truth at 100 steps). With ``eta = 0`` it is no longer DDIM's
    deterministic map: it draws with variance ``a^2 v``.

    Returns ``(mean (d,), std (), x0 (d,))``.
    """
    return ddim_moments_from_denoised(prior, x, prior.denoise(x, t), t, t_next, eta)


def ddim_moments_from_denoised(prior: DiffusionPrior, x, denoised, t, t_next, eta):
    """:func:`ddim_moments` when ``D(x, t)`` is already known."""
    return reverse_kernel(prior, x, denoised, t, t_next, eta)[:3]


def reverse_kernel(prior: DiffusionPrior, x, denoised, t, t_next, eta) -> ReverseKernel:
    """The kernel of :func:`ddim_moments` with its parts, for samplers that model ``x_0``
    given both ends of a step (MCGdiff's potentials)."""
    schedule = prior.schedule
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    alpha_next, sigma_next = schedule.alpha(t_next), schedule.sigma(t_next)
    ratio = alpha * sigma_next / (alpha_next * sigma)
    bridge_variance = (eta * sigma_next) ** 2 * jnp.clip(1 - ratio**2, 0.0, 1.0)
    noise_scale = jnp.sqrt(jnp.clip(sigma_next**2 - bridge_variance, 0.0)) / sigma
    mean = alpha_next * denoised + noise_scale * (x - alpha * denoised)
    x0_scale = alpha_next - noise_scale * alpha
    x0_variance = prior.denoiser_variance(x, t)
    std = jnp.sqrt(bridge_variance + x0_scale**2 * x0_variance)
    return ReverseKernel(mean, std, denoised, x0_scale, bridge_variance, x0_variance)


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


def check_settings(method: str, *, eta=None, stochastic=True, ess_threshold=None, resampling_scheme=None):
    """Validate the options samplers share; ``stochastic`` samplers need ``eta > 0``."""
    if eta is not None and not ((0 < eta if stochastic else 0 <= eta) and eta <= 1):
        bound = "0 < eta <= 1 (a stochastic kernel)" if stochastic else "0 <= eta <= 1"
        raise ValueError(f"{method} needs {bound}, got {eta}")
    if ess_threshold is not None and not 0 <= ess_threshold <= 1:
        raise ValueError(f"ess_threshold must be in [0, 1], got {ess_threshold}")
    if resampling_scheme is not None:
        resampling.check_scheme(resampling_scheme)


def _check_inputs(prior, observation, num_particles: int, num_steps: int, num_islands: int) -> None:
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
    if int(num_particles) < 1 or int(num_particles) % int(num_islands):
        raise ValueError(
            f"num_particles ({num_particles}) must be a positive multiple of num_islands ({num_islands})"
        )


# --------------------------------------------------------------- the programs
# The sampler, its config, the device plan and the particle count are static (hashed by
# value); the prior, the measurement and the time grid are data, so a new network, a new
# mixture or a new observation of the same shape never recompiles (a ``twist_fn`` in a
# config is static: a closure over arrays is compared by identity). States are strongly
# typed at every step, so a chunk's output has the type of its input.


@functools.partial(jax.jit, static_argnames=("sampler", "config", "plan", "num_particles"))
def _init_islands(keys, prior, observation, times, *, sampler, config, plan, num_particles):
    def one(key, shared):
        prior, observation, times = shared
        return strongly_typed(sampler.init(key, prior, observation, config, times, num_particles))

    return map_replicas(one, plan)(keys, (prior, observation, times))


def _steps(sampler, config, final):
    def one(per_island, shared):
        state, key = per_island
        prior, observation, (indices, times, times_next) = shared

        def body(state, x):
            index, t, t_next = x
            state, info = sampler.step(
                jax.random.fold_in(key, index), state, prior, observation, config, t, t_next, final
            )
            return strongly_typed(state), info

        state, infos = jax.lax.scan(body, state, (indices, times, times_next))
        return (state, key), infos

    return one


@functools.partial(jax.jit, static_argnames=("sampler", "config", "plan"))
def _advance(carry, xs, prior, observation, *, sampler, config, plan):
    """Every island through the steps ``xs = (indices, t, t_next)`` of one chunk."""
    return map_replicas(_steps(sampler, config, False), plan)(carry, (prior, observation, xs))


@functools.partial(jax.jit, static_argnames=("sampler", "config", "plan"))
def _finish(carry, xs, prior, observation, *, sampler, config, plan):
    """The last step (to ``t = 0``), then ``(particles, log_weights, log_evidence)`` per island."""

    def one(per_island, shared):
        (state, key), infos = _steps(sampler, config, True)(per_island, shared)
        if sampler.finalize is None:
            return (state.particles, state.log_weights, state.log_evidence), infos
        after_last_step = shared[2][0][-1] + 1
        return sampler.finalize(jax.random.fold_in(key, after_last_step), state, config), infos

    return map_replicas(one, plan)(carry, (prior, observation, xs))


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiffusionResult(WeightedSamples):
    """Weighted posterior particles from a diffusion sampler (a
    :class:`~ppl.runtime.results.WeightedSamples` with ``samples = {"x": particles}``).

    Attributes:
        method: the sampler's name.
        particles: ``(N, d)``.
        log_weights: normalised log-weights ``(N,)`` (``weights`` gives them exponentiated).
        log_evidence: estimate of ``log p(y)`` (NaN where the method defines none).
        sample_stats: ``ess`` and ``resampled`` per island and step ``(num_islands, num_steps)``.
        log_likelihood: ``{"y": log N(y_k; A(x)_k, sigma_y^2)}`` per particle and entry of ``y``.
        num_islands: independent particle systems merged.
    """

    method: str
    num_islands: int

    @property
    def particles(self) -> np.ndarray:
        return self.samples["x"]

    @property
    def ess_history(self) -> np.ndarray:
        """ESS after each step's reweighting, summed over islands ``(num_steps,)``."""
        return np.sum(self.sample_stats["ess"], axis=0)

    @property
    def num_resampling(self) -> int:
        """Resampling events, all islands and steps together."""
        return int(np.sum(self.sample_stats["resampled"]))

    def sample(self, rng_key, num_samples: int | None = None) -> np.ndarray:
        """Equally weighted draws ``(num_samples, d)`` by systematic resampling of the final weights."""
        return self.particles[self.resample_indices(rng_key, num_samples)]

    def warn_if_degenerate(self, fraction: float = 0.1) -> None:
        """Raise on non-finite particles; warn, with the ESS history, when the ESS fell
        below ``fraction * N`` at some step."""
        num = self.num_particles
        ess = self.ess_history
        if not np.all(np.isfinite(self.particles)) or not np.all(np.isfinite(ess)):
            raise FloatingPointError(
                f"{self.method}: non-finite particles or weights (ESS history {np.round(ess, 1).tolist()}); "
                "check the network's output near t = 0 and the noise level"
            )
        low = np.flatnonzero(ess < fraction * num)
        if low.size:
            warnings.warn(
                f"{self.method}: weight collapse at {low.size} of {ess.size} steps (ESS < {fraction:.0%} of "
                f"N = {num}); minimum ESS {ess.min():.1f} at step {int(ess.argmin())}, final ESS "
                f"{self.ess:.1f}, {self.num_resampling} resampling events. ESS history: "
                f"{np.round(ess, 1).tolist()}",
                RuntimeWarning,
                stacklevel=3,
            )


@jax.jit
def _pointwise_log_likelihood(observation: Measurement, particles):
    return jax.vmap(observation.pointwise_log_likelihood)(particles)


def run(
    sampler: Sampler,
    prior,
    observation,
    config,
    *,
    key,
    num_particles: int,
    num_steps: int,
    num_islands: int,
    devices,
    progress_bar,
) -> DiffusionResult:
    """Run ``sampler`` on ``num_islands`` islands of ``num_particles / num_islands`` particles
    over ``prior.schedule.timesteps(num_steps)``; merge; warn on weight collapse."""
    key = validate_key(key)
    plan: DevicePlan = plan_devices(num_islands, devices, replicas="num_islands")
    _check_inputs(prior, observation, num_particles, num_steps, num_islands)
    times = np.asarray(prior.schedule.timesteps(int(num_steps)), np.float32)
    keys = jax.vmap(jax.random.split)(replica_keys(key, plan.padded_replicas))
    statics = {"sampler": sampler, "config": config, "plan": plan}
    states = _init_islands(
        keys[:, 0],
        prior,
        observation,
        times,
        num_particles=int(num_particles) // num_islands,
        **statics,
    )
    indices = np.arange(len(times) - 1, dtype=np.int32)
    xs = (indices[:-1], times[:-2], times[1:-1])
    carry, infos = scan_in_chunks(
        functools.partial(_advance, prior=prior, observation=observation, **statics),
        (states, keys[:, 1]),
        xs,
        progress_bar=progress_bar,
        description=sampler.name,
        step_axis=1,
    )
    last = (indices[-1:], times[-2:-1], times[-1:])
    (particles, log_weights, log_z), last_infos = to_host(_finish(carry, last, prior, observation, **statics))
    infos = (
        last_infos
        if infos is None
        else jax.tree.map(lambda many, one: np.concatenate([many, one], axis=1), infos, last_infos)
    )
    log_weights, log_evidence = resampling.merge_islands(log_weights[:num_islands], log_z[:num_islands])
    particles = particles[:num_islands].reshape(-1, prior.dim)
    result = DiffusionResult(
        samples={"x": particles},
        log_weights=log_weights,
        log_evidence=log_evidence if sampler.has_evidence else float("nan"),
        sample_stats={name: value[:num_islands] for name, value in infos._asdict().items()},
        stats_dims={name: ("island", "diffusion_step") for name in StepInfo._fields},
        log_likelihood={"y": to_host(_pointwise_log_likelihood(observation, particles))},
        observed_data={"y": np.asarray(observation.y)},
        dims={"x": ("x_dim",), "y": ("y_dim",)},
        attrs={
            "inference": "diffusion_smc",
            "sampler": sampler.name,
            "num_islands": num_islands,
            "num_devices": plan.num_devices,
        },
        method=sampler.name,
        num_islands=num_islands,
    )
    result.warn_if_degenerate()
    return result
