"""Adaptive tempered SMC on a compiled model: from the prior to the posterior.

The path ``pi_beta(u) ~ prior(u) * likelihood(u)^beta`` (unconstrained space, Jacobians in
the prior) goes from ``beta = 0`` to ``1``. One :func:`step` is BlackJAX's adaptive
tempered kernel: pick the next ``beta`` so that the ESS of the incremental weights is
``target_ess * N``, resample, move every particle with HMC whose diagonal metric is the
particles' current variance, and reweight. The log-evidence estimate is the sum of the
per-step log mean incremental weights.

The driver :func:`tempered` runs ``num_islands`` independent particle systems (a setting
of the algorithm, spread over the devices by the runtime) and merges them exactly:
island ``j``'s normalised weights times its evidence ``Z_j``; the merged evidence is the
mean of the ``Z_j``. The same key gives the same result on any number of devices.

Example:
    >>> import jax, jax.numpy as jnp, ppl
    >>> from ppl import dist
    >>> def model(y=None):
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ...     with ppl.plate("obs", 3):
    ...         ppl.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> y = jnp.array([0.5, 1.0, 1.5])
    >>> result = ppl.smc.tempered(model, y=y, key=jax.random.key(0), num_particles=200)
    >>> result.samples["mu"].shape
    (200,)
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc import adaptive_tempered
from blackjax.smc import tempered as blackjax_tempered

from ppl.model.compile import CompiledModel, compile, constrain_draws, sample_sites
from ppl.runtime.devices import DevicePlan, map_replicas, plan_devices, to_host
from ppl.runtime.keys import replica_keys, validate_key
from ppl.runtime.loop import loop_until, progress_enabled
from ppl.runtime.results import WeightedSamples
from ppl.smc import resampling

__all__ = ["Info", "Settings", "State", "TemperedResult", "init", "initial_particles", "step", "tempered"]


class Settings(NamedTuple):
    """Static configuration (hashed by value)."""

    num_particles: int = 1000  # per island
    target_ess: float = 0.5
    num_mcmc_steps: int = 5
    num_integration_steps: int = 10
    step_size: float = 0.5
    max_steps: int = 500
    resampling_scheme: str = "systematic"


class State(NamedTuple):
    """One particle system: BlackJAX's ``TemperedSMCState`` (particles ``(n, dim)``,
    normalised weights ``(n,)``, temperature) and the running log-evidence."""

    smc: Any
    log_evidence: jax.Array


class Info(NamedTuple):
    """One tempering step: the new temperature, the ESS of the new weights, the mean
    HMC acceptance rate of the moves, and the step's log-evidence increment."""

    temperature: jax.Array
    ess: jax.Array
    acceptance_rate: jax.Array
    log_evidence_increment: jax.Array


def init(particles: jax.Array) -> State:
    """Particles ``(n, dim)`` from the prior, equally weighted, at temperature 0."""
    smc = blackjax_tempered.init(particles)
    return State(smc._replace(tempering_param=jnp.zeros((), particles.dtype)), jnp.zeros((), particles.dtype))


def step(
    rng_key: jax.Array,
    state: State,
    prior_logdensity_fn: Callable,
    log_likelihood_fn: Callable,
    settings: Settings,
) -> tuple[State, Info]:
    """One adaptive tempering step (BlackJAX's kernel) with HMC moves in the particles' metric."""
    kernel = adaptive_tempered.build_kernel(
        prior_logdensity_fn,
        log_likelihood_fn,
        blackjax.hmc.build_kernel(),
        blackjax.hmc.init,
        resampling.SCHEMES[settings.resampling_scheme],
        settings.target_ess,
    )
    particles = state.smc.particles
    parameters = {
        "step_size": jnp.array([settings.step_size * particles.shape[1] ** -0.25]),
        "inverse_mass_matrix": (jnp.var(particles, axis=0) + 1e-8)[None],
        "num_integration_steps": jnp.array([settings.num_integration_steps]),
    }
    smc, info = kernel(rng_key, state.smc, settings.num_mcmc_steps, parameters)
    return State(smc, state.log_evidence + info.log_likelihood_increment), Info(
        temperature=smc.tempering_param,
        ess=resampling.ess(jnp.log(smc.weights)),
        acceptance_rate=jnp.mean(info.update_info.acceptance_rate),
        log_evidence_increment=info.log_likelihood_increment,
    )


def initial_particles(rng_key: jax.Array, compiled: CompiledModel, num_particles: int) -> jax.Array:
    """``num_particles`` prior draws in the flat unconstrained space ``(n, dim)``."""
    draws = sample_sites(compiled.model, compiled.args, compiled.kwargs, rng_key, num_particles)
    latent = {name: draws[name] for name, _ in compiled.layout}
    return jax.vmap(compiled.unconstrain)(latent)


class _Island(NamedTuple):
    """The driver's loop state for one island: the kernel state, the step count and
    the per-step histories (``max_steps`` long, NaN beyond ``num_steps``)."""

    state: State
    num_steps: jax.Array
    history: Info


def _target(compiled: CompiledModel):
    log_likelihood = compiled.log_likelihood
    return (lambda u: compiled.logdensity(u) - log_likelihood(u)), log_likelihood  # prior, Jacobians in


@functools.partial(jax.jit, static_argnames=("settings", "plan"))
def _init_islands(keys, compiled: CompiledModel, *, settings: Settings, plan: DevicePlan):
    def one(key, compiled):
        state = init(initial_particles(key, compiled, settings.num_particles))
        nan = jnp.full(settings.max_steps, jnp.nan, state.log_evidence.dtype)
        return _Island(state, jnp.zeros((), jnp.int32), Info(nan, nan, nan, nan))

    return map_replicas(one, plan)(keys, compiled)


@functools.partial(jax.jit, static_argnames=("settings", "plan", "num_steps"))
def _advance(islands, keys, compiled: CompiledModel, *, settings: Settings, plan: DevicePlan, num_steps: int):
    """At most ``num_steps`` tempering steps of every island still below temperature 1."""

    def one(per_island, compiled):
        island, island_key = per_island
        prior, log_likelihood = _target(compiled)
        stop = jnp.minimum(island.num_steps + num_steps, settings.max_steps)

        def not_done(island):
            return (island.state.smc.tempering_param < 1.0) & (island.num_steps < stop)

        def body(island):
            key = jax.random.fold_in(island_key, island.num_steps)
            state, info = step(key, island.state, prior, log_likelihood, settings)
            history = jax.tree.map(lambda h, x: h.at[island.num_steps].set(x), island.history, info)
            return _Island(state, island.num_steps + 1, history)

        return jax.lax.while_loop(not_done, body, island)

    return map_replicas(one, plan)((islands, keys), compiled)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TemperedResult(WeightedSamples):
    """Weighted particles from :func:`tempered` (a :class:`~ppl.runtime.results.WeightedSamples`).

    Attributes:
        samples: constrained particles, site name -> ``(N, *site_shape)`` (deterministics included).
        unconstrained: ``(N, dim)``. log_weights: normalised ``(N,)``.
        log_evidence: estimate of ``log p(y)``; ``log_evidence_per_island`` ``(num_islands,)``.
        sample_stats: per island and tempering step ``(num_islands, num_steps)``:
            ``temperature``, ``ess``, ``acceptance_rate`` (NaN after an island reached 1).
        log_likelihood: observed site -> pointwise log-likelihood of each particle.
        compiled: the :class:`~ppl.CompiledModel`.

    ``to_arviz(rng_key, num_samples=None)`` exports ``num_samples`` draws resampled
    from the merged weights, with the histories and the log-evidence in ``sample_stats``.
    """

    unconstrained: np.ndarray
    log_evidence_per_island: np.ndarray
    compiled: CompiledModel

    @property
    def temperatures(self) -> np.ndarray:
        """The adaptive schedule of each island ``(num_islands, num_steps)``."""
        return self.sample_stats["temperature"]


def tempered(
    model,
    *args,
    key,
    num_particles: int = 1000,
    num_islands: int = 1,
    target_ess: float = 0.5,
    num_mcmc_steps: int = 5,
    num_integration_steps: int = 10,
    step_size: float = 0.5,
    max_steps: int = 500,
    resampling_scheme: str = "systematic",
    devices: int | None = None,
    progress_bar: bool | None = None,
    **kwargs,
) -> TemperedResult:
    """Adaptive tempered SMC for ``model(*args, **kwargs)``; returns a :class:`TemperedResult`.

    Args:
        model: a ``ppl`` / NumPyro model with continuous latent sites.
        key: a ``jax.random`` key; island ``j`` uses ``fold_in(key, j)``.
        num_particles: ``N``, all islands together (a multiple of ``num_islands``).
        num_islands: independent particle systems of ``N / num_islands`` particles,
            merged by evidence; spread over the devices (the result does not depend
            on the device count).
        target_ess: each tempering step keeps ``ESS = target_ess * N``.
        num_mcmc_steps, num_integration_steps, step_size: the HMC moves (step size is
            ``step_size * dim^(-1/4)`` in the metric of the particles' variance).
        max_steps: cap on tempering steps (a warning says if it was hit).
        resampling_scheme: a name in :data:`ppl.smc.resampling.SCHEMES`.
        devices: devices to spread the islands over (``None``: all, at most one per island).
        progress_bar: ``None`` shows a bar (the lowest island temperature) in a terminal.
    """
    if not 0 < target_ess < 1:
        raise ValueError(f"target_ess must be in (0, 1), got {target_ess}")
    resampling.check_scheme(resampling_scheme)
    key = validate_key(key)
    plan = plan_devices(num_islands, devices, replicas="num_islands")
    if num_particles < 2 * num_islands or num_particles % num_islands:
        raise ValueError(
            f"num_particles ({num_particles}) must be a multiple of num_islands ({num_islands}) "
            "with at least 2 particles per island"
        )
    if int(max_steps) < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    compiled = compile(model, *args, **kwargs)
    compiled.require_continuous("tempered SMC", enumeration=False)
    if not compiled.observed_sites:
        raise ValueError("tempered SMC needs at least one observed site (the likelihood to temper)")
    settings = Settings(
        int(num_particles) // num_islands,
        float(target_ess),
        int(num_mcmc_steps),
        int(num_integration_steps),
        float(step_size),
        int(max_steps),
        resampling_scheme,
    )
    keys = jax.vmap(jax.random.split)(replica_keys(key, plan.padded_replicas))
    islands = _init_islands(keys[:, 0], compiled, settings=settings, plan=plan)
    # With a bar, one tempering step per call (a step is many HMC moves of every particle).
    chunk = 1 if progress_enabled(progress_bar) else settings.max_steps

    def status(islands):
        temperature, count = to_host((islands.state.smc.tempering_param, islands.num_steps))
        temperature, count = temperature[:num_islands], count[:num_islands]
        return bool(np.all((temperature >= 1.0) | (count >= max_steps))), float(np.min(temperature))

    islands = loop_until(
        lambda islands: _advance(
            islands, keys[:, 1], compiled, settings=settings, plan=plan, num_steps=chunk
        ),
        islands,
        status=status,
        progress_bar=progress_bar,
        description="tempering",
        max_calls=settings.max_steps,
    )
    islands = jax.tree.map(lambda x: x[:num_islands], to_host(islands))
    if np.any(islands.state.smc.tempering_param < 1.0):
        warnings.warn(
            f"tempered SMC stopped at max_steps = {max_steps} before reaching temperature 1 "
            f"(temperatures {np.round(islands.state.smc.tempering_param, 4).tolist()})",
            RuntimeWarning,
            stacklevel=2,
        )
    log_z = islands.state.log_evidence
    log_weights, log_evidence = resampling.merge_islands(np.log(islands.state.smc.weights), log_z)
    particles = islands.state.smc.particles.reshape(-1, compiled.dim)
    values, loglik = to_host(constrain_draws(compiled, particles))
    length = int(np.max(islands.num_steps))
    return TemperedResult(
        samples=values,
        log_weights=log_weights,
        log_evidence=log_evidence,
        sample_stats={name: value[:, :length] for name, value in islands.history._asdict().items()},
        stats_dims={name: ("island", "tempering_step") for name in Info._fields},
        log_likelihood=loglik,
        observed_data=compiled.observed_data,
        constant_data=compiled.constant_data,
        dims=compiled.dims,
        log_likelihood_dims=compiled.log_likelihood_dims,
        coords=compiled.coords,
        attrs={"inference": "tempered_smc", "num_islands": num_islands, "num_devices": plan.num_devices},
        unconstrained=particles,
        log_evidence_per_island=log_z,
        compiled=compiled,
    )
