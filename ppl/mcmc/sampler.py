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
import numbers
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.infer.initialization import init_to_uniform

from ppl.errors import ModelError, warn
from ppl.mcmc import diagnostics, kernel
from ppl.model.compile import CompiledModel, compile, constrain_draws
from ppl.runtime.cache import ByFunction
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


def _check_integer(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_options(chains, warmup, draws, thinning, devices, progress_bar) -> None:
    for name, value, low in (
        ("chains", chains, 1),
        ("warmup", warmup, 0),
        ("draws", draws, 1),
        ("thinning", thinning, 1),
    ):
        _check_integer(name, value, low)
    if devices is not None:
        _check_integer("devices (None for all)", devices, 1)
    if progress_bar is not None and not isinstance(progress_bar, bool):
        raise TypeError(f"progress_bar must be None, True or False, got {progress_bar!r}")


def _number(name: str, value, kind=float):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a {kind.__name__}, got {type(value).__name__} {value!r}")
    if kind is int and int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return kind(value)


def _settings(
    algorithm: str,
    *,
    target_accept,
    max_tree_depth=10,
    num_integration_steps=16,
    dense_mass,
    chain_method,
) -> kernel.Settings:
    """Checked :class:`~ppl.mcmc.kernel.Settings` (a clear error for every bad value)."""
    target_accept = _number("target_accept", target_accept)
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept}")
    max_tree_depth = _number("max_tree_depth", max_tree_depth, int)
    if not 1 <= max_tree_depth <= 30:
        raise ValueError(f"max_tree_depth must be in 1..30, got {max_tree_depth}")
    num_integration_steps = _number("num_integration_steps", num_integration_steps, int)
    if num_integration_steps < 1:
        raise ValueError(f"num_integration_steps must be >= 1, got {num_integration_steps}")
    if not isinstance(dense_mass, bool | np.bool_):
        raise TypeError(f"dense_mass must be True or False, got {dense_mass!r}")
    if chain_method not in METHODS:
        raise ValueError(f"chain_method must be one of {METHODS}, got {chain_method!r}")
    return kernel.Settings(
        algorithm=algorithm,
        target_accept=target_accept,
        max_tree_depth=max_tree_depth,
        num_integration_steps=num_integration_steps,
        dense_mass=bool(dense_mass),
        chain_method=chain_method,
    )


# --------------------------------------------------------------- the programs
# Module-level jitted programs: the settings and the device plan are static (hashed
# by value), the compiled model is a pytree of data, so a repeated run or a run on new
# data of the same shape reuses the compiled program.


@functools.partial(jax.jit, static_argnames=("settings", "plan"))
def _init_chains(keys, start, compiled: CompiledModel, *, settings: kernel.Settings, plan: DevicePlan):
    """Every chain's kernel state; ``start = (positions, step_sizes, inverse_mass_matrices)``,
    each ``None`` (search a valid position / the defaults) or one row per chain."""

    def one(per_chain, compiled):
        key, (position, step_size, inverse_mass_matrix) = per_chain
        if position is None:
            position, ok = compiled.initial_position(key, settings.init_radius, settings.init_attempts)
        else:
            value, grad = jax.value_and_grad(compiled.logdensity)(position)
            ok = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))
        state = kernel.init(position, compiled.logdensity, settings, step_size, inverse_mass_matrix)
        return state, ok

    return map_replicas(one, plan, settings.chain_method)((keys, start), compiled)


@functools.partial(jax.jit, static_argnames=("settings", "plan"))
def _advance(carry, xs, compiled: CompiledModel, *, settings: kernel.Settings, plan: DevicePlan):
    """Advance every chain over the steps ``xs = (steps, phases, windows)`` of one chunk;
    with thinning each row of ``xs`` holds ``thinning`` transitions and keeps the last."""

    def one(per_chain, shared):
        state, chain_key = per_chain
        compiled, (steps, phases, windows) = shared

        def transition(state, x):
            t, phase, window = x
            return kernel.step(
                jax.random.fold_in(chain_key, t), state, compiled.logdensity, phase, window, settings
            )

        def kept(state, x):
            if x[0].ndim == 0:
                state, info = transition(state, x)
            else:  # thinning: several transitions, the last one kept (divergences counted)
                state, infos = jax.lax.scan(transition, state, x)
                info = jax.tree.map(lambda a: a[-1], infos)._replace(diverging=infos.diverging.any())
            return state, (state.hmc.position, info)

        state, outputs = jax.lax.scan(kept, state, (steps, phases, windows))
        return (state, chain_key), outputs

    return map_replicas(one, plan, settings.chain_method)(carry, (compiled, xs))


@functools.partial(jax.jit, static_argnames=("strategy",))
def _strategy_positions(keys, values, compiled: CompiledModel, strategy):
    """Unconstrained starting points ``(chains, dim)`` from NumPyro init ``strategy`` (a
    :class:`~ppl.runtime.cache.ByFunction`) with the per-chain constrained ``values``
    substituted where given."""

    def one(key, values):
        def substitute_fn(site):
            if site["type"] != "sample" or site["is_observed"]:
                return None
            return values[site["name"]] if site["name"] in values else strategy.fn(site)

        run = handlers.substitute(handlers.seed(compiled.model, key), substitute_fn=substitute_fn)
        trace = handlers.trace(run).get_trace(*compiled.args, **compiled.kwargs)
        return compiled.unconstrain({name: trace[name]["value"] for name, _ in compiled.layout})

    return jax.vmap(one)(keys, values)


# ------------------------------------------------------------------- the driver


def _per_chain(name: str, value, site_shape: tuple, chains: int) -> np.ndarray:
    """``value`` for every chain: ``(chains, *site_shape)`` from a shared or per-chain value."""
    value = np.asarray(value)
    if value.shape == (chains, *site_shape) and (value.shape != tuple(site_shape) or chains == 1):
        return value
    try:
        return np.broadcast_to(value, (chains, *site_shape)).copy()
    except ValueError:
        raise ValueError(
            f"init['{name}'] has shape {value.shape}; expected the site's shape {tuple(site_shape)} "
            f"(shared by all chains) or {(chains, *site_shape)} (one per chain)"
        ) from None


def _pad(rows: np.ndarray, padded: int) -> np.ndarray:
    """``rows`` (one per chain) repeated at the end up to ``padded`` rows (the plan's padding)."""
    return np.concatenate([rows, np.repeat(rows[-1:], padded - len(rows), 0)])


def _start(
    init, init_strategy, step_size, inverse_mass_matrix, compiled, chains, padded, keys, warmup, dense
):
    """``(positions, step_sizes, inverse_mass_matrices)`` of every (padded) chain, each
    ``None`` where the kernel's default applies; warns when ``warmup=0`` adapts nothing."""
    positions = None
    if isinstance(init, Posterior):
        if init.unconstrained.shape[-1] != compiled.dim:
            raise ValueError(
                f"init: the posterior has {init.unconstrained.shape[-1]} unconstrained coordinates, this "
                f"model {compiled.dim}; continue a run of the same model"
            )
        if init.num_chains != chains:
            raise ValueError(f"init: the posterior has {init.num_chains} chains, this run {chains}")
        positions = np.asarray(init.unconstrained[:, -1])
        step_size = init.step_size if step_size is None else step_size
        inverse_mass_matrix = init.inverse_mass_matrix if inverse_mass_matrix is None else inverse_mass_matrix
    elif init is not None or init_strategy is not None:
        if init is not None and not isinstance(init, dict):
            raise TypeError(
                "init must be None, a dict of constrained site values or a ppl.Posterior, "
                f"got {type(init).__name__}"
            )
        init = dict(init or {})
        shapes = {s["name"]: tuple(np.shape(s["value"])) for s in compiled.latent_sites}
        unknown = sorted(set(init) - set(shapes))
        if unknown:
            raise ValueError(
                f"init: {unknown} are not latent continuous sites of the model (those are {sorted(shapes)})"
            )
        values = {name: _per_chain(name, value, shapes[name], chains) for name, value in init.items()}
        for name, value in values.items():
            support = compiled.trace[name]["fn"].support
            inside = np.asarray(support(value))
            if not inside.all():
                chain = int(np.argwhere(~inside.reshape(chains, -1).all(axis=1))[0, 0])
                raise ValueError(
                    f"init['{name}'] for chain {chain} is outside the site's support {support}: "
                    f"{np.asarray(value)[chain].tolist()}"
                )
        values = {name: _pad(v, padded) for name, v in values.items()}
        strategy = ByFunction(init_to_uniform if init_strategy is None else init_strategy)
        positions = np.asarray(_strategy_positions(keys, values, compiled, strategy))
    if positions is not None:
        positions = _pad(positions, padded)
    dim = compiled.dim
    if step_size is not None:
        if isinstance(step_size, bool) or not np.issubdtype(np.asarray(step_size).dtype, np.number):
            raise TypeError(f"step_size must be a number or one per chain, got {step_size!r}")
        step_size = np.broadcast_to(np.asarray(step_size, np.float32), (chains,))
        if not np.all(np.isfinite(step_size) & (step_size > 0)):
            raise ValueError(f"step_size must be positive and finite, got {step_size}")
        step_size = _pad(step_size, padded)
    if inverse_mass_matrix is not None:
        imm = np.asarray(inverse_mass_matrix, np.float32)
        shape = (dim, dim) if dense else (dim,)
        if imm.shape not in (shape, (chains, *shape)):
            raise ValueError(
                f"inverse_mass_matrix has shape {imm.shape}; expected {shape} (dense_mass={dense}), shared "
                f"or with a leading chains axis of {chains}"
            )
        inverse_mass_matrix = _pad(np.broadcast_to(imm, (chains, *shape)), padded)
    if warmup == 0 and not isinstance(init, Posterior):
        eps = (
            "1.0 (the default)"
            if step_size is None
            else ", ".join(f"{x:.4g}" for x in np.unique(step_size[:chains]))
        )
        imm_text = "the identity" if inverse_mass_matrix is None else "the given one"
        warn(
            f"warmup=0: nothing is adapted; sampling with step size {eps} and {imm_text} inverse mass "
            "matrix. Pass init=<a ppl.Posterior> to continue an adapted run"
        )
    return positions, step_size, inverse_mass_matrix


def _run(
    model,
    args,
    kwargs,
    *,
    key,
    chains,
    warmup,
    draws,
    thinning,
    settings,
    devices,
    progress_bar,
    init,
    init_strategy,
    step_size,
    inverse_mass_matrix,
    static,
):
    key = validate_key(key)
    _check_options(chains, warmup, draws, thinning, devices, progress_bar)
    compiled = compile(model, *args, static=static, **kwargs)
    algorithm = settings.algorithm.upper()
    compiled.require_continuous(algorithm)
    if compiled.dim == 0:
        raise ModelError(
            f"the model has no latent continuous site; there is nothing for {algorithm} to sample"
        )
    if (
        settings.dense_mass
        and isinstance(init, Posterior)
        and init.inverse_mass_matrix.ndim == 2
        and inverse_mass_matrix is None
    ):
        raise ValueError(
            "init: the posterior adapted a diagonal mass matrix; pass dense_mass=False to continue it"
        )
    plan = plan_devices(chains, devices, replicas="chains")
    chain_keys = jax.vmap(lambda k: jax.random.split(k, 3))(replica_keys(key, plan.padded_replicas))
    timing = {}

    started = time.perf_counter()
    start = _start(
        init,
        init_strategy,
        step_size,
        inverse_mass_matrix,
        compiled,
        chains,
        plan.padded_replicas,
        chain_keys[:, 2],
        warmup,
        settings.dense_mass,
    )
    states, ok = _init_chains(chain_keys[:, 0], start, compiled, settings=settings, plan=plan)
    ok = to_host(ok)[:chains]
    timing["init"] = time.perf_counter() - started
    if not ok.all():
        failed = int(np.argmin(ok))
        position = to_host(states.hmc.position)[failed]
        if start[0] is not None:
            raise ModelError(
                f"chain {failed}: the log density or its gradient is non-finite at the given initial values; "
                f"the culprit is: {compiled.nonfinite_sites(position)}"
            )
        raise ModelError(compiled.describe_nonfinite(position, settings.init_attempts))

    phases, windows = kernel.schedule(warmup, draws * thinning)
    steps = np.arange(warmup + draws * thinning, dtype=np.int32)
    advance = functools.partial(_advance, compiled=compiled, settings=settings, plan=plan)
    loop = {"progress_bar": progress_bar, "unit": "draw", "scale": chains, "step_axis": 1}
    warmup_divergences = np.zeros(plan.padded_replicas, np.int64)

    def count_divergences(carry, outputs, stop):
        # only the divergence counts leave the devices during warmup
        warmup_divergences[:] += to_host(outputs[1].diverging.sum(axis=1))

    def thinned(x):
        x = x[warmup:]
        return x if thinning == 1 else x.reshape((draws, thinning) + x.shape[1:])

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
        advance, carry, (thinned(steps), thinned(phases), thinned(windows)), description="sampling", **loop
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
    discrete_key = jax.random.fold_in(key, 2**31 - 1)  # not a chain's index
    values, loglik = to_host(constrain_draws(compiled, positions.reshape(-1, compiled.dim), discrete_key))
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
            "thinning": thinning,
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
    thinning: int = 1,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    dense_mass: bool = False,
    init: dict | Posterior | None = None,
    init_strategy: Callable | None = None,
    step_size: float | None = None,
    inverse_mass_matrix: Any = None,
    devices: int | None = None,
    chain_method: str = "vectorized",
    progress_bar: bool | None = None,
    static: tuple[str, ...] = (),
    **kwargs: Any,
) -> Posterior:
    """Sample ``model(*args, **kwargs)`` with NUTS (BlackJAX) after Stan's window adaptation.

    Chains are spread over ``devices`` devices (default: every device of every
    process, at most one per chain) with ``jax.shard_map``, and mapped within a device
    as ``chain_method`` says; any number of chains runs on any number of devices.
    Discrete latent sites with enumerate support are summed out and drawn back into
    the posterior (:mod:`ppl.model.enumeration`). Warns with counts on divergences,
    R-hat > 1.01 and low bulk ESS.

    Args:
        model: a model function; ``*args`` and ``**kwargs`` are its data.
        key: a ``jax.random.key``; chain ``i`` uses ``fold_in(key, i)``.
        chains: number of chains.
        warmup: adaptation transitions per chain (discarded).
        draws: kept draws per chain.
        target_accept: dual-averaging target acceptance rate, in ``(0, 1)``.
        max_tree_depth: maximum number of trajectory doublings, ``1..30``.
        dense_mass: adapt a dense (instead of diagonal) inverse mass matrix.
        devices: number of devices to use (default: all, at most ``chains``).
        chain_method: ``"vectorized"`` (default: the chains of a device run as one
            ``vmap``-ped program, as fast as a hand-written BlackJAX loop on the models
            measured; a chain's draws are equal in distribution across device counts) or
            ``"sequential"``
            (``lax.map``: a chain's draws are bit-identical on any number of devices or
            processes; can be faster for expensive models whose trees differ in depth).
        progress_bar: ``None`` = on in a terminal unless ``CI`` is set.
        init: where the chains start: ``None`` (uniform in ``(-2, 2)`` in unconstrained
            space, NumPyro's ``init_to_uniform``); a dict of constrained values by site,
            each of the site's shape (shared) or with a leading ``chains`` axis (one per
            chain), the other sites from ``init_strategy``; or a :class:`Posterior` of the
            same model to continue from its last draws, with its adapted step sizes and
            mass matrices (``warmup=0`` continues the chains; ``warmup > 0`` warm-starts a
            new adaptation there).
        init_strategy: a NumPyro init strategy (``init_to_median()``, ``init_to_sample``,
            ``init_to_feasible``, ...) for the sites ``init`` does not give.
        thinning: keep every ``thinning``-th transition; ``draws`` is the number kept
            (NumPyro counts ``num_samples`` before thinning).
        step_size: the step size where adaptation starts (a scalar, or one per chain);
            with ``warmup=0``, the step size used.
        inverse_mass_matrix: likewise, ``(dim,)`` (or ``(dim, dim)`` with
            ``dense_mass``), shared or per chain.
        static: names of array arguments the model inspects with NumPy or Python,
            compiled in as constants (found automatically, with a warning, otherwise).

    Returns:
        A :class:`Posterior`; ``posterior.to_arviz()`` gives ArviZ data.

    Raises:
        ModelError: a malformed model, a latent discrete site that cannot be enumerated,
            or a log density that is non-finite at every initialisation attempt (the
            message names the site).
        ValueError, TypeError: a bad driver argument (the message names it).

    Example:
        >>> import jax, ppl
        >>> from ppl import dist
        >>> def model(y=None):
        ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        ...     ppl.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> post = ppl.nuts(model, y=jax.numpy.array(0.5), key=jax.random.key(0),
        ...                 chains=2, warmup=50, draws=50)  # doctest: +SKIP
        >>> more = ppl.nuts(model, y=jax.numpy.array(0.5), key=jax.random.key(1),
        ...                 chains=2, warmup=0, draws=50, init=post)  # doctest: +SKIP
    """
    settings = _settings(
        "nuts",
        target_accept=target_accept,
        max_tree_depth=max_tree_depth,
        dense_mass=dense_mass,
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
        thinning=thinning,
        settings=settings,
        devices=devices,
        progress_bar=progress_bar,
        init=init,
        init_strategy=init_strategy,
        step_size=step_size,
        inverse_mass_matrix=inverse_mass_matrix,
        static=static,
    )


def hmc(
    model: Callable,
    *args: Any,
    key: jax.Array,
    num_integration_steps: int = 16,
    chains: int = 4,
    warmup: int = 1000,
    draws: int = 1000,
    thinning: int = 1,
    target_accept: float = 0.8,
    dense_mass: bool = False,
    init: dict | Posterior | None = None,
    init_strategy: Callable | None = None,
    step_size: float | None = None,
    inverse_mass_matrix: Any = None,
    devices: int | None = None,
    chain_method: str = "vectorized",
    progress_bar: bool | None = None,
    static: tuple[str, ...] = (),
    **kwargs: Any,
) -> Posterior:
    """Sample with static-trajectory HMC (``num_integration_steps`` leapfrog steps).

    Same driver, adaptation, devices, initialisation, thinning and output as
    :func:`nuts`; ``tree_depth`` is absent from ``sample_stats``.
    """
    settings = _settings(
        "hmc",
        target_accept=target_accept,
        num_integration_steps=num_integration_steps,
        dense_mass=dense_mass,
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
        thinning=thinning,
        settings=settings,
        devices=devices,
        progress_bar=progress_bar,
        init=init,
        init_strategy=init_strategy,
        step_size=step_size,
        inverse_mass_matrix=inverse_mass_matrix,
        static=static,
    )
