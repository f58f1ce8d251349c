"""Adaptive tempered SMC on a compiled model: from the prior to the posterior.

The path ``pi_beta(u) ~ prior(u) * likelihood(u)^beta`` (unconstrained space, Jacobians in
the prior) goes from ``beta = 0`` to ``1``; each step picks the next ``beta`` so that the
ESS of the incremental weights is ``target_ess * N`` (BlackJAX's adaptive tempered kernel),
resamples, and moves every particle with HMC whose diagonal metric is the particles'
current variance. The log-evidence estimate is the sum of the per-step log mean
incremental weights. With ``devices=k`` each device runs an independent particle system
of ``N/k`` particles; they are merged exactly (weights times each system's evidence).

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

import functools
import warnings
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc import adaptive_tempered
from jax.scipy.special import logsumexp
from numpyro.infer.util import unconstrain_fn

from ppl.compile import (
    Layout,
    StaticData,
    compile,
    flatten,
    make_log_likelihood,
    make_logdensity,
    merge_data,
    sample_sites,
)
from ppl.mcmc import validate_key
from ppl.parallel import map_chains
from ppl.smc import resampling

__all__ = ["TemperedResult", "tempered"]


class _Settings(NamedTuple):
    num_particles: int
    target_ess: float
    num_mcmc_steps: int
    num_integration_steps: int
    step_size: float
    max_steps: int
    scheme: str


@functools.lru_cache(maxsize=32)
def _program(model, layout: Layout, static: StaticData, settings: _Settings, num_islands: int):
    """The jitted run of one (model, data structure, settings, devices), cached as
    :func:`ppl.mcmc` caches its programs: new data of the same shape never re-traces."""
    n = settings.num_particles // num_islands
    dim = sum(int(np.prod(shape)) for _, shape in layout)

    def island(rng_key, arrays):
        args, kwargs = merge_data(arrays, static)
        logdensity = make_logdensity(model, layout, args, kwargs)
        log_likelihood = make_log_likelihood(model, layout, args, kwargs)
        kernel = adaptive_tempered.build_kernel(
            lambda u: logdensity(u) - log_likelihood(u),  # the prior, Jacobians included
            log_likelihood,
            blackjax.hmc.build_kernel(),
            blackjax.hmc.init,
            resampling.SCHEMES[settings.scheme],
            settings.target_ess,
        )
        init_key, loop_key = jax.random.split(rng_key)
        draws = sample_sites(model, args, kwargs, init_key, n)

        def unconstrain(latent):
            return flatten(unconstrain_fn(model, args, kwargs, latent), layout)

        positions = jax.vmap(unconstrain)({name: draws[name] for name, _ in layout})
        step_size = settings.step_size * dim**-0.25

        def not_done(carry):
            state, _, step, _ = carry
            return (state.tempering_param < 1.0) & (step < settings.max_steps)

        def body(carry):
            state, log_evidence, step, temperatures = carry
            parameters = {
                "step_size": jnp.array([step_size]),
                "inverse_mass_matrix": (jnp.var(state.particles, axis=0) + 1e-8)[None],
                "num_integration_steps": jnp.array([settings.num_integration_steps]),
            }
            state, info = kernel(
                jax.random.fold_in(loop_key, step), state, settings.num_mcmc_steps, parameters
            )
            return (
                state,
                log_evidence + info.log_likelihood_increment,
                step + 1,
                temperatures.at[step].set(state.tempering_param),
            )

        initial = (adaptive_tempered.init(positions), 0.0, 0, jnp.full(settings.max_steps, jnp.nan))
        state, log_evidence, num_steps, temperatures = jax.lax.while_loop(not_done, body, initial)
        return state.particles, jnp.log(state.weights), log_evidence, num_steps, temperatures

    return jax.jit(map_chains(island, num_islands, vectorized=True))


class TemperedResult:
    """Weighted particles from :func:`tempered`.

    Attributes:
        samples: constrained particles, site name -> ``(N, *site_shape)`` (deterministics included).
        unconstrained: ``(N, dim)``. log_weights: normalised ``(N,)``.
        log_evidence: estimate of ``log p(y)``; ``log_evidence_per_device`` ``(devices,)``.
        temperatures: the adaptive schedule of each particle system, ``(devices, num_steps)``.
        compiled: the :class:`~ppl.CompiledModel`.
    """

    def __init__(
        self, compiled, unconstrained, log_weights, log_evidence, log_evidence_per_device, temperatures
    ):
        self.compiled, self.unconstrained, self.log_weights = compiled, unconstrained, log_weights
        self.log_evidence, self.log_evidence_per_device, self.temperatures = (
            log_evidence,
            log_evidence_per_device,
            temperatures,
        )
        self.samples = jax.vmap(compiled.constrain)(unconstrained)

    @property
    def ess(self) -> float:
        return float(resampling.ess(self.log_weights))

    def to_arviz(self, rng_key, num_samples: int | None = None):
        """ArviZ data: ``posterior`` holds ``num_samples`` (default ``N``) draws obtained by
        systematic resampling of the final weights (one chain); ``observed_data``; the
        log-evidence and temperatures are attributes of the posterior group."""
        from ppl.arviz import from_groups, to_dataset

        index = resampling.resample(rng_key, self.log_weights, "systematic", num_samples)
        draws = {name: np.asarray(value)[index][None] for name, value in self.samples.items()}
        compiled = self.compiled
        posterior = to_dataset(draws, compiled.dims, compiled.coords)
        posterior.attrs.update(
            log_evidence=float(self.log_evidence), temperatures=np.asarray(self.temperatures[0], np.float64)
        )
        observed = to_dataset(compiled.observed_data, compiled.dims, compiled.coords, sample_dims=())
        return from_groups({"posterior": posterior, "observed_data": observed})


def tempered(
    model,
    *args,
    key,
    num_particles: int = 1000,
    target_ess: float = 0.5,
    num_mcmc_steps: int = 5,
    num_integration_steps: int = 10,
    step_size: float = 0.5,
    max_steps: int = 500,
    resampling_scheme: str = "systematic",
    devices: int | None = None,
    **kwargs,
) -> TemperedResult:
    """Adaptive tempered SMC for ``model(*args, **kwargs)``; returns a :class:`TemperedResult`.

    Args:
        model: a ``ppl`` / NumPyro model with continuous latent sites.
        key: a ``jax.random`` key.
        num_particles: ``N`` (a multiple of ``devices``).
        target_ess: each tempering step keeps ``ESS = target_ess * N``.
        num_mcmc_steps, num_integration_steps, step_size: the HMC moves (step size is
            ``step_size * dim^(-1/4)`` in the metric of the particles' variance).
        max_steps: cap on tempering steps (a warning says if it was hit).
        resampling_scheme: a name in :data:`ppl.smc.resampling.SCHEMES`.
        devices: independent particle systems, one per device, merged by evidence.
    """
    if not 0 < target_ess < 1:
        raise ValueError(f"target_ess must be in (0, 1), got {target_ess}")
    resampling.check_scheme(resampling_scheme)
    key = validate_key(key)
    num_islands = 1 if devices is None else int(devices)
    if not 1 <= num_islands <= jax.local_device_count():
        raise ValueError(
            f"devices must be between 1 and {jax.local_device_count()} (local devices), got {devices}"
        )
    if num_particles < 2 or num_particles % num_islands:
        raise ValueError(
            f"num_particles ({num_particles}) must be >= 2 and a multiple of devices ({num_islands})"
        )
    compiled = compile(model, *args, **kwargs)
    compiled.require_continuous("tempered SMC")
    if not compiled.observed_sites:
        raise ValueError("tempered SMC needs at least one observed site (the likelihood to temper)")
    settings = _Settings(
        int(num_particles),
        float(target_ess),
        int(num_mcmc_steps),
        int(num_integration_steps),
        float(step_size),
        int(max_steps),
        resampling_scheme,
    )
    program = _program(model, compiled.layout, compiled.static_data, settings, num_islands)
    keys = jax.random.split(key, num_islands)
    particles, log_weights, log_z, num_steps, temperatures = program(keys, compiled._arrays)
    if np.any(np.asarray(num_steps) >= max_steps):
        warnings.warn(
            f"tempered SMC stopped at max_steps = {max_steps} before reaching temperature 1",
            RuntimeWarning,
            stacklevel=2,
        )
    merged = log_weights + (log_z - logsumexp(log_z))[:, None]
    return TemperedResult(
        compiled,
        particles.reshape(-1, compiled.dim),
        merged.reshape(-1),
        logsumexp(log_z) - jnp.log(num_islands),
        log_z,
        temperatures[:, : int(np.max(np.asarray(num_steps)))],
    )
