"""NUTS and HMC on a compiled model: the thin driver around :mod:`ppl.mcmc.kernel`.

The driver compiles the model, plans chains over devices (:mod:`ppl.runtime.devices`),
runs warmup and sampling through the runtime's chunked loop (:mod:`ppl.runtime.loop`)
with the kernel mapped over chains, keeps every sampler statistic, and returns a
:class:`Posterior`.

Reproducibility: chain ``i`` splits ``fold_in(key, i)`` into its initialisation key and
its ``chain_key``, and step ``t`` of a chain uses ``fold_in(chain_key, t)``, so a chain's
draws depend only on ``key`` and ``i``, not on the number of chains or progress-bar
chunks. With ``chain_method="sequential"`` they are also bit-identical on any number of
devices or processes; with ``"vectorized"`` (the default, fastest) they are equal in
distribution (the batch of chains per device changes the last bits, and NUTS turns
that into other trajectories).
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ppl.errors import ModelError
from ppl.mcmc import diagnostics, kernel
from ppl.model.compile import CompiledModel, compile, constrain_draws
from ppl.runtime.devices import METHODS, DevicePlan, map_replicas, plan_devices, to_host
from ppl.runtime.keys import replica_keys, validate_key
from ppl.runtime.loop import scan_in_chunks
from ppl.runtime.results import Draws

__all__ = ["Posterior", "hmc", "nuts"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Posterior(Draws):
    """Draws from an MCMC run, grouped by chain (a :class:`~ppl.runtime.results.Draws`).

    Attributes:
        samples: site name -> constrained draws ``(chains, draws, *site_shape)``;
            latent and deterministic sites.
        sample_stats: ``lp``, ``diverging``, ``energy``, ``acceptance_rate``, ``step_size``,
            ``n_steps`` (and ``tree_depth`` for NUTS), each ``(chains, draws)``.
        log_likelihood: observed site name -> pointwise log-likelihood ``(chains, draws, *batch)``.
        unconstrained: the flat unconstrained draws ``(chains, draws, dim)``.
        step_size: adapted step size per chain ``(chains,)``.
        inverse_mass_matrix: adapted per chain, ``(chains, dim)`` or ``(chains, dim, dim)``.
        warmup_divergences: divergent warmup transitions per chain ``(chains,)``.
        timing: wall seconds per phase (``init``, ``warmup``, ``sampling``,
            ``postprocess``), compile included.
        compiled: the :class:`~ppl.CompiledModel` (model, data, dims, coords).

    ``posterior.to_arviz(prior=..., posterior_predictive=..., coords=..., dims=...)``
    gives ArviZ data (see :meth:`~ppl.runtime.results.Draws.to_arviz`).
    """

    unconstrained: np.ndarray
    step_size: np.ndarray
    inverse_mass_matrix: np.ndarray
    warmup_divergences: np.ndarray
    timing: dict[str, float]
    compiled: CompiledModel


def _check_counts(chains: int, warmup: int, draws: int) -> None:
    for name, value, low in (("chains", chains, 1), ("warmup", warmup, 0), ("draws", draws, 1)):
        if not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_settings(settings: kernel.Settings) -> None:
    if settings.chain_method not in METHODS:
        raise ValueError(f"chain_method must be one of {METHODS}, got {settings.chain_method!r}")
    if not 0 < settings.target_accept < 1:
        raise ValueError(f"target_accept must be in (0, 1), got {settings.target_accept}")
    if settings.algorithm == "nuts" and settings.max_tree_depth < 1:
        raise ValueError(f"max_tree_depth must be >= 1, got {settings.max_tree_depth}")
    if settings.algorithm == "hmc" and settings.num_integration_steps < 1:
        raise ValueError(f"num_integration_steps must be >= 1, got {settings.num_integration_steps}")


# --------------------------------------------------------------- the programs
# Module-level jitted programs: the settings and the device plan are static (hashed
# by value), the compiled model is a pytree of data, so a repeated run or a run on new
# data of the same shape reuses the compiled program.


@functools.partial(jax.jit, static_argnames=("settings", "plan"))
def _init_chains(keys, compiled: CompiledModel, *, settings: kernel.Settings, plan: DevicePlan):
    def one(key, compiled):
        u, ok = compiled.initial_position(key, settings.init_radius, settings.init_attempts)
        return kernel.init(u, compiled.logdensity, settings), ok

    return map_replicas(one, plan, settings.chain_method)(keys, compiled)


@functools.partial(jax.jit, static_argnames=("settings", "plan"))
def _advance(carry, xs, compiled: CompiledModel, *, settings: kernel.Settings, plan: DevicePlan):
    """Advance every chain over the steps ``xs = (steps, phases, windows)`` of one chunk."""

    def one(per_chain, shared):
        state, chain_key = per_chain
        compiled, (steps, phases, windows) = shared

        def transition(state, x):
            t, phase, window = x
            state, info = kernel.step(
                jax.random.fold_in(chain_key, t), state, compiled.logdensity, phase, window, settings
            )
            return state, (state.hmc.position, info)

        state, outputs = jax.lax.scan(transition, state, (steps, phases, windows))
        return (state, chain_key), outputs

    return map_replicas(one, plan, settings.chain_method)(carry, (compiled, xs))


# ------------------------------------------------------------------- the driver


def _run(model, args, kwargs, *, key, chains, warmup, draws, settings, devices, progress_bar):
    key = validate_key(key)
    _check_counts(chains, warmup, draws)
    _check_settings(settings)
    compiled = compile(model, *args, **kwargs)
    algorithm = settings.algorithm.upper()
    compiled.require_continuous(algorithm)
    if compiled.dim == 0:
        raise ModelError(
            f"the model has no latent continuous site; there is nothing for {algorithm} to sample"
        )
    plan = plan_devices(chains, devices, replicas="chains")
    chain_keys = jax.vmap(jax.random.split)(replica_keys(key, plan.padded_replicas))
    timing = {}

    started = time.perf_counter()
    states, ok = _init_chains(chain_keys[:, 0], compiled, settings=settings, plan=plan)
    ok = to_host(ok)[:chains]
    timing["init"] = time.perf_counter() - started
    if not ok.all():
        failed = int(np.argmin(ok))
        position = to_host(states.hmc.position)[failed]
        raise ModelError(compiled.describe_nonfinite(position, settings.init_attempts))

    phases, windows = kernel.schedule(warmup, draws)
    steps = np.arange(warmup + draws, dtype=np.int32)
    advance = functools.partial(_advance, compiled=compiled, settings=settings, plan=plan)
    loop = {"progress_bar": progress_bar, "unit": "draw", "scale": chains, "step_axis": 1}
    warmup_divergences = np.zeros(plan.padded_replicas, np.int64)

    def count_divergences(carry, outputs, stop):
        # only the divergence counts leave the devices during warmup
        warmup_divergences[:] += to_host(outputs[1].diverging.sum(axis=1))

    carry = (states, chain_keys[:, 1])
    started = time.perf_counter()
    carry, _ = scan_in_chunks(
        advance,
        carry,
        (steps[:warmup], phases[:warmup], windows[:warmup]),
        description="warmup",
        keep=False,
        on_chunk=count_divergences,
        **loop,
    )
    jax.block_until_ready(carry)
    timing["warmup"] = time.perf_counter() - started
    started = time.perf_counter()
    carry, (positions, info) = scan_in_chunks(
        advance, carry, (steps[warmup:], phases[warmup:], windows[warmup:]), description="sampling", **loop
    )
    timing["sampling"] = time.perf_counter() - started
    positions = positions[:chains]
    stats = {name: value[:chains] for name, value in info._asdict().items()}
    if settings.algorithm != "nuts":
        del stats["tree_depth"]
    state = to_host(carry[0])
    step_size = state.step_size[:chains]
    stats["step_size"] = np.broadcast_to(step_size[:, None], positions.shape[:2]).copy()

    started = time.perf_counter()
    values, loglik = to_host(constrain_draws(compiled, positions.reshape(-1, compiled.dim)))
    shape = positions.shape[:2]
    timing["postprocess"] = time.perf_counter() - started

    posterior = Posterior(
        samples={k: v.reshape(shape + v.shape[1:]) for k, v in values.items()},
        sample_stats=stats,
        log_likelihood={k: v.reshape(shape + v.shape[1:]) for k, v in loglik.items()},
        observed_data=compiled.observed_data,
        constant_data=compiled.constant_data,
        dims=compiled.dims,
        log_likelihood_dims=compiled.log_likelihood_dims,
        coords=compiled.coords,
        attrs={
            "inference": settings.algorithm,
            "chain_method": settings.chain_method,
            "num_devices": plan.num_devices,
        },
        unconstrained=positions,
        step_size=step_size,
        inverse_mass_matrix=state.inverse_mass_matrix[:chains],
        warmup_divergences=warmup_divergences[:chains],
        timing=timing,
        compiled=compiled,
    )
    _warn_on_problems(posterior)
    return posterior


def _warn_on_problems(posterior: Posterior) -> None:
    """Warnings with counts: divergences, R-hat > 1.01, bulk ESS < 100 per chain."""
    diverging = posterior.sample_stats["diverging"]
    if diverging.any():
        per_chain = diverging.sum(axis=1).tolist()
        warnings.warn(
            f"{int(diverging.sum())} of {diverging.size} post-warmup transitions diverged "
            f"(per chain: {per_chain}); the posterior may be biased. Try a higher "
            "target_accept or a non-centred parameterisation.",
            stacklevel=4,
        )
    if posterior.num_draws < 4:
        return
    # Diagnose the sampler's own coordinates (the flat unconstrained draws): R-hat and
    # rank-normalised ESS are unchanged by the elementwise monotone transforms of scalar
    # sites, and all coordinates are diagnosed in one vectorised pass.
    draws = posterior.unconstrained
    owner = np.repeat(
        [name for name, _ in posterior.compiled.layout],
        [int(np.prod(shape)) for _, shape in posterior.compiled.layout],
    )

    def counts(mask):
        names, numbers = np.unique(owner[mask], return_counts=True)
        return dict(zip(names.tolist(), numbers.tolist(), strict=True))

    if posterior.num_chains > 1:
        bad = counts(diagnostics.rank_normalized_rhat(draws) > 1.01)
        if bad:
            warnings.warn(
                f"R-hat > 1.01 for {sum(bad.values())} element(s) ({bad}); the chains have "
                "not mixed. Run longer or reparameterise.",
                stacklevel=4,
            )
    threshold = 100 * posterior.num_chains
    low = counts(diagnostics.bulk_ess(draws) < threshold)
    if low:
        warnings.warn(
            f"bulk ESS < {threshold} (100 per chain) for {sum(low.values())} element(s) ({low}); "
            "posterior summaries are unreliable. Run more draws.",
            stacklevel=4,
        )


def nuts(
    model: Callable,
    *args: Any,
    key: jax.Array,
    chains: int = 4,
    warmup: int = 1000,
    draws: int = 1000,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    dense_mass: bool = False,
    devices: int | None = None,
    chain_method: str = "vectorized",
    progress_bar: bool | None = None,
    **kwargs: Any,
) -> Posterior:
    """Sample ``model(*args, **kwargs)`` with NUTS (BlackJAX) after Stan's window adaptation.

    Chains are spread over ``devices`` devices (default: every device of every
    process, at most one per chain) with ``jax.shard_map``, and mapped within a device
    as ``chain_method`` says; any number of chains runs on any number of devices.
    Warns with counts on divergences, R-hat > 1.01 and low bulk ESS.

    Args:
        model: a model function; ``*args`` and ``**kwargs`` are its data.
        key: a ``jax.random.key``; chain ``i`` uses ``fold_in(key, i)``.
        chains: number of chains.
        warmup: adaptation transitions per chain (discarded).
        draws: kept transitions per chain.
        target_accept: dual-averaging target acceptance rate.
        max_tree_depth: maximum number of trajectory doublings.
        dense_mass: adapt a dense (instead of diagonal) inverse mass matrix.
        devices: number of devices to use (default: all, at most ``chains``).
        chain_method: ``"vectorized"`` (default: the chains of a device run as one
            ``vmap``-ped program, as fast as a hand-written BlackJAX loop on the models
            measured; a chain's draws are equal in distribution across device counts) or
            ``"sequential"``
            (``lax.map``: a chain's draws are bit-identical on any number of devices or
            processes; can be faster for expensive models whose trees differ in depth).
        progress_bar: ``None`` = on in a terminal unless ``CI`` is set.

    Returns:
        A :class:`Posterior`; ``posterior.to_arviz()`` gives ArviZ data.

    Raises:
        ModelError: a malformed model, a latent discrete site, or a log density that is
            non-finite at every initialisation attempt (the message names the site).

    Example:
        >>> import jax, ppl
        >>> from ppl import dist
        >>> def model(y=None):
        ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        ...     ppl.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> post = ppl.nuts(model, y=jax.numpy.array(0.5), key=jax.random.key(0),
        ...                 chains=2, warmup=50, draws=50)  # doctest: +SKIP
        >>> post.samples["mu"].shape  # doctest: +SKIP
        (2, 50)
    """
    settings = kernel.Settings(
        algorithm="nuts",
        target_accept=float(target_accept),
        max_tree_depth=int(max_tree_depth),
        dense_mass=bool(dense_mass),
        chain_method=chain_method,
    )
    return _run(
        model,
        args,
        kwargs,
        key=key,
        chains=chains,
        warmup=warmup,
        draws=draws,
        settings=settings,
        devices=devices,
        progress_bar=progress_bar,
    )


def hmc(
    model: Callable,
    *args: Any,
    key: jax.Array,
    num_integration_steps: int = 16,
    chains: int = 4,
    warmup: int = 1000,
    draws: int = 1000,
    target_accept: float = 0.8,
    dense_mass: bool = False,
    devices: int | None = None,
    chain_method: str = "vectorized",
    progress_bar: bool | None = None,
    **kwargs: Any,
) -> Posterior:
    """Sample with static-trajectory HMC (``num_integration_steps`` leapfrog steps).

    Same driver, adaptation, devices and output as :func:`nuts`; ``tree_depth`` is
    absent from ``sample_stats``.
    """
    settings = kernel.Settings(
        algorithm="hmc",
        target_accept=float(target_accept),
        num_integration_steps=int(num_integration_steps),
        dense_mass=bool(dense_mass),
        chain_method=chain_method,
    )
    return _run(
        model,
        args,
        kwargs,
        key=key,
        chains=chains,
        warmup=warmup,
        draws=draws,
        settings=settings,
        devices=devices,
        progress_bar=progress_bar,
    )
