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

import warnings
from functools import partial
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc import adaptive_tempered
from jax.scipy.special import logsumexp
from jax.sharding import Mesh, PartitionSpec
from numpyro import handlers
from numpyro.infer.util import constrain_fn

from ppl.compile import CompiledModel, compile, is_factor, unflatten
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


def log_likelihood_fn(compiled: CompiledModel):
    """``u (dim,) -> sum of the observed sites' (and factors') log-probabilities``."""

    def log_likelihood(u):
        values = constrain_fn(compiled.model, compiled.args, compiled.kwargs, unflatten(u, compiled.layout))
        seeded = handlers.seed(handlers.substitute(compiled.model, values), 0)
        trace = handlers.trace(seeded).get_trace(*compiled.args, **compiled.kwargs)
        total = 0.0
        for site in trace.values():
            if site["type"] == "sample" and (site["is_observed"] or is_factor(site)):
                log_prob = site["fn"].log_prob(site["value"])
                total = total + jnp.sum(log_prob * (site["scale"] if site["scale"] is not None else 1.0))
        return total

    return log_likelihood


def _island(rng_key, compiled: CompiledModel, settings: _Settings, n: int):
    log_likelihood = log_likelihood_fn(compiled)

    def log_prior(u):
        return compiled.logdensity(u) - log_likelihood(u)

    kernel = adaptive_tempered.build_kernel(
        log_prior,
        log_likelihood,
        blackjax.hmc.build_kernel(),
        blackjax.hmc.init,
        resampling.SCHEMES[settings.scheme],
        settings.target_ess,
    )
    init_key, loop_key = jax.random.split(rng_key)
    draws = compiled.sample_prior(init_key, n)
    positions = jax.vmap(compiled.unconstrain)({name: draws[name] for name, _ in compiled.layout})
    state = adaptive_tempered.init(positions)
    step_size = settings.step_size * compiled.dim**-0.25

    def not_done(carry):
        state, _, step, _ = carry
        return (state.tempering_param < 1.0) & (step < settings.max_steps)

    def body(carry):
        state, log_evidence, step, temperatures = carry
        variance = jnp.var(state.particles, axis=0) + 1e-8
        parameters = {
            "step_size": jnp.array([step_size]),
            "inverse_mass_matrix": variance[None],
            "num_integration_steps": jnp.array([settings.num_integration_steps]),
        }
        state, info = kernel(jax.random.fold_in(loop_key, step), state, settings.num_mcmc_steps, parameters)
        return (
            state,
            log_evidence + info.log_likelihood_increment,
            step + 1,
            temperatures.at[step].set(state.tempering_param),
        )

    temperatures = jnp.full(settings.max_steps, jnp.nan)
    state, log_evidence, num_steps, temperatures = jax.lax.while_loop(
        not_done, body, (state, 0.0, 0, temperatures)
    )
    return state.particles, jnp.log(state.weights), log_evidence, num_steps, temperatures


@partial(jax.jit, static_argnames=("static", "settings", "num_islands"))
def _run(rng_key, arrays, *, static, settings, num_islands):
    compiled = _rebind(static, arrays)
    n = settings.num_particles // num_islands
    keys = jax.random.split(rng_key, num_islands)
    if num_islands == 1:
        return jax.tree.map(lambda leaf: leaf[None], _island(keys[0], compiled, settings, n))
    mesh = Mesh(jax.local_devices()[:num_islands], ("island",))
    return jax.shard_map(
        jax.vmap(lambda key, arrays: _island(key, _rebind(static, arrays), settings, n), in_axes=(0, None)),
        mesh=mesh,
        in_specs=(PartitionSpec("island"), PartitionSpec()),
        out_specs=PartitionSpec("island"),
        check_vma=False,
    )(keys, arrays)


class _Static(NamedTuple):
    """The hashable part of a compiled model: new data of the same shapes reuses the program."""

    compiled: CompiledModel

    def __hash__(self):
        return hash((self.compiled.model, self.compiled.static_data, self.compiled.layout))

    def __eq__(self, other):
        return hash(self) == hash(other)


def _rebind(static: _Static, arrays) -> CompiledModel:
    """The compiled model with its data arrays replaced by (traced) ``arrays``."""
    from ppl.compile import merge_data

    template = static.compiled
    compiled = object.__new__(CompiledModel)
    compiled.__dict__.update(template.__dict__)
    compiled.args, compiled.kwargs = merge_data(arrays, template.static_data)
    from ppl.compile import make_logdensity

    compiled._logdensity = make_logdensity(template.model, template.layout, compiled.args, compiled.kwargs)
    return compiled


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
    if resampling_scheme not in resampling.SCHEMES:
        raise ValueError(
            f"unknown resampling scheme {resampling_scheme!r}; choose one of {sorted(resampling.SCHEMES)}"
        )
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
    particles, log_weights, log_z, num_steps, temperatures = _run(
        key, compiled._arrays, static=_Static(compiled), settings=settings, num_islands=num_islands
    )
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
