"""Compile a model plus data into pure JAX functions over one flat unconstrained vector.

This is the only place where a model is interpreted. It runs the model once under
NumPyro's handlers to learn its sites (names, shapes, supports, plates), checks them,
and lays the latent continuous sites out in one flat vector ``u`` of length ``dim``.
Every inference algorithm consumes the pure functions built here.

The log density includes the log-Jacobian of every constraining transform (NumPyro's
``biject_to``), so ``logdensity(u)`` is the density of ``u`` itself.
"""

from __future__ import annotations

import inspect
import math
import weakref
from collections.abc import Callable, Collection
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import distributions as dist
from numpyro import handlers
from numpyro.distributions import MaskedDistribution
from numpyro.distributions.transforms import biject_to
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.util import constrain_fn, potential_energy, unconstrain_fn

from ppl.errors import ModelError, warn
from ppl.model import enumeration
from ppl.model.data import (
    TRACER_ERRORS,
    StaticData,
    argument_names,
    as_data,
    find_constants,
    is_array,
    merge_data,
    split_data,
)

__all__ = [
    "CompiledModel",
    "ModelStructure",
    "SiteInfo",
    "compile",
    "constrain_draws",
    "find_initial_position",
    "flatten",
    "make_log_likelihood",
    "make_logdensity",
    "make_pointwise_log_likelihood",
    "sample_sites",
    "unflatten",
]

Layout = tuple[tuple[str, tuple[int, ...]], ...]
"""Static description of the flat vector: ``((site_name, unconstrained_shape), ...)``."""


# -------------------------------------------------------------------- flat layout


def unflatten(u: jax.Array, layout: Layout) -> dict[str, jax.Array]:
    """Cut the flat vector ``u`` (shape ``(dim,)``) into named unconstrained blocks."""
    values, offset = {}, 0
    for name, shape in layout:
        size = math.prod(shape)
        values[name] = u[offset : offset + size].reshape(shape)
        offset += size
    return values


def flatten(values: dict[str, jax.Array], layout: Layout) -> jax.Array:
    """Concatenate named unconstrained blocks into one flat vector of shape ``(dim,)``."""
    if not layout:
        return jnp.zeros((0,))
    return jnp.concatenate([jnp.reshape(values[name], (-1,)) for name, _ in layout])


def make_logdensity(
    model: Callable, layout: Layout, args: tuple, kwargs: dict, enum_dim: int | None = None
) -> Callable:
    """The log density of the flat unconstrained vector, Jacobians included.

    ``args``/``kwargs`` may be tracers: drivers call this inside ``jit`` with the data
    as arguments so that new data of the same shape reuses the compiled program. With
    ``enum_dim`` (see :mod:`ppl.model.enumeration`) discrete latent sites are summed out.

    One deliberate difference from NumPyro: NumPyro's ``obs_mask`` makes a latent site
    ``{name}_unobserved`` of the full shape whose observed entries have no density (they
    never enter the model, and wander without bound under NUTS, which then runs every
    tree to its maximum depth). Here those entries get a standard normal density, which
    leaves the posterior of everything else unchanged and lets NUTS take short trees.
    """
    model = _PinUnused(model)
    if enum_dim is not None:
        enumerated = enumeration.enumerated(model, enum_dim)

        def logdensity(u):
            return -potential_energy(enumerated, args, kwargs, unflatten(u, layout), enum=True)

        return logdensity

    def logdensity(u):
        return -potential_energy(model, args, kwargs, unflatten(u, layout))

    return logdensity


class _PinnedMasked(MaskedDistribution):
    """A masked distribution whose masked-out entries have a standard normal density."""

    def log_prob(self, value):
        scored = super().log_prob(value)
        reference = dist.Normal(0.0, 1.0).log_prob(value)
        if self.event_dim:
            reference = jnp.sum(reference, axis=tuple(range(-self.event_dim, 0)))
        return jnp.where(self._mask, scored, reference)


class _PinUnused(handlers.Messenger):
    """Give the unused entries of ``obs_mask``'s ``{name}_unobserved`` sites (real support)
    a standard normal density (see :func:`make_logdensity`)."""

    def process_message(self, msg):
        fn = msg.get("fn")
        if (
            msg["type"] == "sample"
            and not msg["is_observed"]
            and msg["name"].endswith("_unobserved")
            and isinstance(fn, MaskedDistribution)
            and not isinstance(fn, _PinnedMasked)
            and not isinstance(fn._mask, bool)
            and fn.base_dist.support is dist.constraints.real
        ):
            msg["fn"] = _PinnedMasked(fn.base_dist, fn._mask)


def _observed_trace(model: Callable, layout: Layout, args: tuple, kwargs: dict, u: jax.Array, enum_dim=None):
    """The model's trace with the latent sites at ``u`` (constrained): observed sites scored.

    With ``enum_dim`` the discrete latent sites run over all their values (NumPyro's
    ``enum``): their values and the observed sites' log-probabilities carry the
    enumeration dimensions on the left.
    """
    values = constrain_fn(handlers.seed(model, 0), args, kwargs, unflatten(u, layout))
    substituted = handlers.substitute(model, values)
    if enum_dim is not None:
        return handlers.trace(enumeration.enumerated(substituted, enum_dim)).get_trace(*args, **kwargs)
    return handlers.trace(handlers.seed(substituted, 0)).get_trace(*args, **kwargs)


def _pointwise(trace: dict, enum_dim: int | None, with_factors: bool) -> dict[str, jax.Array]:
    """Observed site -> log-probability per element of its batch shape (scale not applied).

    Enumerated discrete sites are summed out per element: ``log sum_z p(z) p(y_i | z)``,
    exact when the discrete sites sit in the observed site's plates (mixtures); with a
    discrete site shared by several observations the terms are its per-element marginals.
    """
    observed = {
        name: site["fn"].log_prob(site["value"])
        for name, site in trace.items()
        if site["type"] == "sample" and site["is_observed"] and (with_factors or not is_factor(site))
    }
    if enum_dim is None:
        return observed
    discrete = [
        site["fn"].log_prob(site["value"])
        for site in trace.values()
        if site["type"] == "sample" and not site["is_observed"] and site["fn"].support.is_discrete
    ]
    batch_ndim = -enum_dim - 1
    out = {}
    for name, logp in observed.items():
        try:
            total = logp + sum(discrete)
        except ValueError as err:
            raise ModelError(
                f"observed site '{name}': its log-probability {jnp.shape(logp)} does not broadcast with "
                f"the enumerated discrete sites' {[jnp.shape(d) for d in discrete]}; the pointwise "
                "log-likelihood needs them in the same plates"
            ) from err
        enum_axes = tuple(range(max(jnp.ndim(total) - batch_ndim, 0)))
        total = jax.scipy.special.logsumexp(total, axis=enum_axes) if enum_axes else total
        # what is left has one dim per plate level: drop the size-1 ones the site lacks
        value = trace[name]["value"]
        value_batch = jnp.shape(value)[: jnp.ndim(value) - trace[name]["fn"].event_dim]
        out[name] = jnp.reshape(total, value_batch) if total.size == math.prod(value_batch) else total
    return out


def make_log_likelihood(
    model: Callable, layout: Layout, args: tuple, kwargs: dict, enum_dim: int | None = None
) -> Callable:
    """``u (dim,) ->`` the summed log-probability of the observed sites and factors
    (``handlers.scale`` applied): the likelihood part of :func:`make_logdensity`."""

    def log_likelihood(u):
        trace = _observed_trace(model, layout, args, kwargs, u, enum_dim)
        total = 0.0
        for name, logp in _pointwise(trace, enum_dim, with_factors=True).items():
            scale = trace[name]["scale"]
            total = total + jnp.sum(logp * (1.0 if scale is None else scale))
        return total

    return log_likelihood


def make_pointwise_log_likelihood(
    model: Callable, layout: Layout, args: tuple, kwargs: dict, enum_dim: int | None = None
) -> Callable:
    """``u (dim,) -> {observed site: log p(value | latents)}``, one entry per element of the
    site's batch shape (event dimensions summed, no ``scale``; factors left out; masked
    elements 0; enumerated discrete sites summed out): what ArviZ's ``log_likelihood``
    group holds, for ``loo`` and ``compare``."""

    def pointwise(u):
        trace = _observed_trace(model, layout, args, kwargs, u, enum_dim)
        return _pointwise(trace, enum_dim, with_factors=False)

    return pointwise


# ------------------------------------------------------------------ model tracing


class _UniqueTrace(handlers.trace):
    """NumPyro's ``trace`` that reports duplicate site names as a :class:`ModelError`."""

    def postprocess_message(self, msg):
        if "name" not in msg:  # helper messages (e.g. of ``scan``), as NumPyro's trace skips them
            return
        name = msg["name"]
        if msg["type"] == "plate" and self.trace.get(name, {}).get("type") == "plate":
            first = self.trace[name]["args"]
            if first != msg["args"]:
                raise ModelError(
                    f"plate '{name}' is entered twice with different sizes (first {first[0]}, then "
                    f"{msg['args'][0]}); give the second plate another name"
                )
            return  # re-entering a plate of the same size is allowed, as in NumPyro
        if name in self.trace and msg["type"] in ("sample", "deterministic", "param", "plate"):
            first = self.trace[name]["type"]
            raise ModelError(
                f"site name '{name}' is used twice (first a {first} site, then a "
                f"{msg['type']} site); every site needs a unique name"
            )
        super().postprocess_message(msg)


def trace_model(model: Callable, args: tuple, kwargs: dict, rng_key=None) -> dict:
    """Run ``model`` once under ``seed`` and ``trace``; return NumPyro's trace dict."""
    seeded = handlers.seed(model, rng_seed=0 if rng_key is None else rng_key)
    # Latent values come from init_to_uniform (uniform in unconstrained space), so
    # sites whose distribution cannot be sampled (improper priors) still trace.
    substituted = handlers.substitute(seeded, substitute_fn=init_to_uniform)
    tracer = _UniqueTrace(substituted)
    try:
        return tracer.get_trace(*args, **kwargs)
    except (ModelError, *TRACER_ERRORS):  # tracer errors: the data must be constants (find_constants)
        raise
    except (ValueError, TypeError) as err:
        last = next(reversed(tracer.trace), None)
        where = f"after site '{last}'" if last else "before its first site"
        raise ModelError(f"the model failed {where}: {err}") from err


def is_factor(site: dict) -> bool:
    """A ``factor`` statement appears as an auxiliary observed sample site."""
    return site["type"] == "sample" and site["infer"].get("is_auxiliary", False)


def site_dims(site: dict, event_ndim: int) -> tuple[str, ...]:
    """ArviZ dimension names of one site's value: plate names where a plate covers a
    batch dimension, ``{site}_dim_{i}`` elsewhere (event dimensions included)."""
    name, shape = site["name"], jnp.shape(site["value"])
    batch_ndim = len(shape) - event_ndim
    plates = {frame.dim: frame for frame in site.get("cond_indep_stack", [])}
    dims = []
    for axis, size in enumerate(shape):
        frame = plates.get(axis - batch_ndim) if axis < batch_ndim else None
        dims.append(frame.name if frame is not None and frame.size == size else f"{name}_dim_{axis}")
    return tuple(dims)


def _plate_text(site: dict) -> str:
    frames = site.get("cond_indep_stack", [])
    if not frames:
        return "no plate"
    return ", ".join(f"plate '{f.name}' (size {f.size}, dim {f.dim})" for f in frames)


def _check_observed(site: dict) -> None:
    """Shape checks for one observed site (numpyro#1230-style broadcasting bugs)."""
    name, fn, value = site["name"], site["fn"], site["value"]
    if isinstance(value, jax.core.Tracer):
        return  # compiled under an outer transformation: nothing concrete to check
    shape, event_shape = jnp.shape(value), tuple(fn.event_shape)
    event_ndim = len(event_shape)
    if len(shape) < event_ndim or tuple(shape[len(shape) - event_ndim :]) != event_shape:
        raise ModelError(
            f"observed site '{name}': value of shape {shape} does not end in the "
            f"distribution's event shape {event_shape}"
        )
    value_batch = tuple(shape[: len(shape) - event_ndim])
    try:
        logprob_shape = jnp.broadcast_shapes(tuple(fn.batch_shape), value_batch)
    except ValueError:
        logprob_shape = None
    if logprob_shape != value_batch:
        raise ModelError(
            f"observed site '{name}': value of batch shape {value_batch} does not match the "
            f"distribution's batch shape {tuple(fn.batch_shape)} ({_plate_text(site)}); "
            + (
                "they cannot be broadcast together"
                if logprob_shape is None
                else f"broadcasting would score a log-prob of shape {logprob_shape}, "
                "counting observations more than once"
            )
        )


def _outside_support(site: dict) -> np.ndarray:
    """Mask of observed values outside the site's support (shape of the value's batch);
    elements masked out (``obs_mask``, ``handlers.mask``) never count."""
    if isinstance(site["value"], jax.core.Tracer):
        return np.zeros((), bool)
    fn = site["fn"]
    mask = getattr(fn, "_mask", None)
    base = fn.base_dist if isinstance(fn, MaskedDistribution) else fn
    outside = ~np.asarray(base.support(site["value"]))
    if mask is not None and mask is not True:
        outside = outside & np.broadcast_to(np.asarray(mask), outside.shape)
    return outside


def _check_support(model: Callable, args: tuple, kwargs: dict, site: dict) -> None:
    """Observed values outside the support raise, unless the support moves with the
    latent values (e.g. ``Uniform(0, theta)``): a violation must persist across three
    different prototype draws of the latents to be reported here. Otherwise the
    initialisation diagnosis names the site if no valid start exists. NaN is named as
    NaN, with NumPyro's pattern for missing values."""
    outside = _outside_support(site)
    if not outside.any():
        return
    name, fn = site["name"], site["fn"]
    value = np.asarray(site["value"])
    event_ndim = fn.event_dim
    nan = (
        np.isnan(value).any(axis=tuple(range(value.ndim - event_ndim, value.ndim)))
        if value.dtype.kind == "f"
        else None
    )
    nan = None if nan is None else nan & outside
    if nan is not None and nan.any():
        at = np.argwhere(nan.reshape(nan.shape or (1,)))
        raise ModelError(
            f"observed site '{name}': {len(at)} NaN value(s), first at index {tuple(at[0].tolist())}. "
            "For missing values, pass obs_mask=~np.isnan(data) to the site (NumPyro's imputation "
            "pattern: the missing entries become a latent site) or drop them"
        )
    for seed in (1, 2):
        again = _outside_support(trace_model(model, args, kwargs, rng_key=jax.random.key(seed))[name])
        if again.shape != outside.shape or not np.array_equal(again, outside):
            return
    bad = np.argwhere(outside.reshape(outside.shape or (1,)))
    raise ModelError(
        f"observed site '{name}': {len(bad)} value(s) outside the support "
        f"{fn.support} of {type(fn).__name__}, first at index {tuple(bad[0].tolist())}"
    )


def _unconstrained_shape(site: dict) -> tuple[int, ...]:
    transform = biject_to(site["fn"].support)
    return tuple(transform.inverse_shape(jnp.shape(site["value"])))


# -------------------------------------------------------------------- the object


def _input_names(model: Callable, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Map argument names to the array arguments the model was called with."""
    values = list(args) + list(kwargs.values())
    return {k: v for k, v in zip(argument_names(model, args, kwargs), values, strict=True) if is_array(v)}


class ModelStructure(NamedTuple):
    """The hashable half of a :class:`CompiledModel`: what a compiled program is specialised to.

    Two compiled models with equal structures (same model function, same non-array
    arguments, same site shapes) run the same jitted programs: data are leaves.
    """

    model: Callable
    static_data: StaticData
    layout: Layout
    discrete_sites: tuple[tuple[str, str, tuple[int, ...]], ...]  # (name, distribution, shape)
    enum_dim: int | None = None  # set when every discrete latent site is summed out by enumeration


class SiteInfo(NamedTuple):
    """Host-side metadata of a model's sites, read from one traced run."""

    trace: dict
    latent_sites: list
    discrete_sites: list
    observed_sites: list
    deterministic_sites: list
    dims: dict[str, tuple[str, ...]]
    log_likelihood_dims: dict[str, tuple[str, ...]]
    coords: dict[str, np.ndarray]


def _site_info(trace: dict) -> SiteInfo:
    def event_ndim(site):
        return len(site["fn"].event_shape)

    latent = [s for s in trace.values() if s["type"] == "sample" and not s["is_observed"]]
    observed = [s for s in trace.values() if s["type"] == "sample" and s["is_observed"] and not is_factor(s)]
    continuous = [s for s in latent if not s["fn"].support.is_discrete]
    deterministic = [s for s in trace.values() if s["type"] == "deterministic"]
    discrete = [s for s in latent if s["fn"].support.is_discrete]
    dims = {s["name"]: site_dims(s, event_ndim(s)) for s in continuous + discrete + observed}
    dims |= {s["name"]: site_dims(s, 0) for s in deterministic}
    loglik_dims = {s["name"]: dims[s["name"]][: len(dims[s["name"]]) - event_ndim(s)] for s in observed}
    coords = {
        frame.name: np.arange(frame.size) for s in trace.values() for frame in s.get("cond_indep_stack", [])
    }
    return SiteInfo(
        trace=trace,
        latent_sites=continuous,
        discrete_sites=discrete,
        observed_sites=observed,
        deterministic_sites=deterministic,
        dims=dims,
        log_likelihood_dims=loglik_dims,
        coords=coords,
    )


@jax.tree_util.register_pytree_node_class
class CompiledModel:
    """A model bound to its data, as pure JAX functions over a flat vector.

    A JAX pytree: the data arrays are its leaves and a :class:`ModelStructure` (model
    function, non-array arguments, flat layout) its static part, so a jitted program
    that takes a ``CompiledModel`` runs new data of the same shape without re-tracing.
    Site metadata (``trace``, ``dims``, ``observed_sites``, ...) lives on the host only:
    it is not available on a model rebuilt inside a JAX transformation.

    Attributes:
        model: the model function.
        args, kwargs: the data it was compiled with.
        arrays: the array leaves of ``(args, kwargs)``.
        layout: ``((site_name, unconstrained_shape), ...)`` in model order.
        dim: length of the flat unconstrained vector ``u``.
        trace: NumPyro's trace of one prior run (site metadata).
        dims: ArviZ dimension names of every latent, deterministic and observed site.
        log_likelihood_dims: dimension names of each observed site's pointwise
            log-likelihood (its batch dimensions).
        coords: coordinate values for plate dimensions (``arange(size)``).

    Example:
        >>> import jax, ppl
        >>> from ppl import dist
        >>> def model(y=None):
        ...     scale = ppl.sample("scale", dist.HalfNormal(1.0))
        ...     with ppl.plate("obs", 3):
        ...         ppl.sample("y", dist.Normal(0.0, scale), obs=y)
        >>> cm = ppl.compile(model, y=jax.numpy.array([0.1, -0.3, 0.2]))
        >>> cm.dim
        1
        >>> float(cm.logdensity(jax.numpy.zeros(1))) < 0
        True
    """

    def __init__(self, structure: ModelStructure, arrays, sites: SiteInfo | None = None):
        self.structure, self.arrays, self._sites = structure, tuple(arrays), sites

    # -- pytree: data are leaves; the structure is static; site metadata stays on the host
    def tree_flatten(self):
        return self.arrays, self.structure

    @classmethod
    def tree_unflatten(cls, structure, arrays):
        return cls(structure, arrays)

    # -- structure
    @property
    def model(self) -> Callable:
        return self.structure.model

    @property
    def static_data(self) -> StaticData:
        return self.structure.static_data

    @property
    def layout(self) -> Layout:
        return self.structure.layout

    @property
    def dim(self) -> int:
        return sum(math.prod(shape) for _, shape in self.layout)

    @property
    def args(self) -> tuple:
        return merge_data(list(self.arrays), self.static_data)[0]

    @property
    def kwargs(self) -> dict:
        return merge_data(list(self.arrays), self.static_data)[1]

    # -- host metadata
    @property
    def sites(self) -> SiteInfo:
        if self._sites is None:
            raise RuntimeError(
                "site metadata (trace, dims, observed sites) exists only on the host; this "
                "CompiledModel was rebuilt inside a JAX transformation"
            )
        return self._sites

    trace = property(lambda self: self.sites.trace)
    latent_sites = property(lambda self: self.sites.latent_sites)
    discrete_sites = property(lambda self: self.sites.discrete_sites)
    observed_sites = property(lambda self: self.sites.observed_sites)
    deterministic_sites = property(lambda self: self.sites.deterministic_sites)
    dims = property(lambda self: self.sites.dims)
    log_likelihood_dims = property(lambda self: self.sites.log_likelihood_dims)
    coords = property(lambda self: self.sites.coords)

    @property
    def observed_data(self) -> dict[str, np.ndarray]:
        """Values of the observed sites, by site name."""
        return {s["name"]: np.asarray(s["value"]) for s in self.observed_sites}

    @property
    def constant_data(self) -> dict[str, np.ndarray]:
        """Array inputs of the model that are not observed values, by argument name."""
        observed = self.observed_data
        inputs = _input_names(self.model, self.args, self.kwargs)
        return {
            name: np.asarray(value)
            for name, value in inputs.items()
            if name not in observed and not any(value is s["value"] for s in self.observed_sites)
        }

    @property
    def enumerated(self) -> tuple[str, ...]:
        """Names of the discrete latent sites summed out of :meth:`logdensity` by enumeration."""
        return tuple(name for name, _, _ in self.structure.discrete_sites) if self.structure.enum_dim else ()

    def require_continuous(self, algorithm: str, enumeration: bool = True) -> None:
        """Raise :class:`ModelError` if a latent site is discrete and cannot be summed out
        (no enumerate support, or ``enumeration=False`` for algorithms that need a
        likelihood separate from the prior)."""
        for name, distribution, shape in self.structure.discrete_sites:
            if enumeration and self.structure.enum_dim is not None:
                continue
            how = (
                f"{distribution} has no enumerate support, so it cannot be summed out"
                if enumeration
                else f"{algorithm} does not sum out discrete sites by enumeration"
            )
            raise ModelError(
                f"latent site '{name}' is discrete ({distribution}, shape {shape}); {how}. {algorithm} needs "
                "continuous latent sites: marginalise it out by hand, observe it, or use NUTS/HMC, which "
                "enumerate sites such as Bernoulli and Categorical"
            )

    # -- pure functions of u (jit-able, vmap-able)
    def logdensity(self, u: jax.Array) -> jax.Array:
        """Log joint density of ``u`` (shape ``(dim,)``), Jacobians included; a scalar."""
        self.require_continuous("a log density over a flat continuous vector")
        return make_logdensity(self.model, self.layout, self.args, self.kwargs, self.structure.enum_dim)(u)

    def log_likelihood(self, u: jax.Array) -> jax.Array:
        """Summed log-probability of the observed sites and factors at ``u``; a scalar."""
        return make_log_likelihood(self.model, self.layout, self.args, self.kwargs, self.structure.enum_dim)(
            u
        )

    def pointwise_log_likelihood(self, u: jax.Array) -> dict[str, jax.Array]:
        """Observed site -> log-likelihood per element of its batch shape at ``u``."""
        return make_pointwise_log_likelihood(
            self.model, self.layout, self.args, self.kwargs, self.structure.enum_dim
        )(u)

    def constrain(self, u: jax.Array, key: jax.Array | None = None) -> dict[str, jax.Array]:
        """Constrained values of every latent and deterministic site at ``u`` (shape ``(dim,)``).

        Enumerated discrete sites (:attr:`enumerated`) are drawn from their posterior
        given ``u`` with ``key`` (default ``jax.random.key(0)``), and deterministic sites
        computed with those draws.
        """
        params = unflatten(u, self.layout)
        model = handlers.seed(self.model, 0)
        if not self.enumerated:
            return constrain_fn(model, self.args, self.kwargs, params, return_deterministic=True)
        values = constrain_fn(model, self.args, self.kwargs, params)
        key = jax.random.key(0) if key is None else key
        values |= enumeration.draw_discrete(
            self.model, self.args, self.kwargs, values, key, self.structure.enum_dim, self.enumerated
        )
        trace = handlers.trace(handlers.seed(handlers.substitute(self.model, values), 0)).get_trace(
            *self.args, **self.kwargs
        )
        return values | {
            name: site["value"] for name, site in trace.items() if site["type"] == "deterministic"
        }

    def unconstrain(self, values: dict[str, jax.Array]) -> jax.Array:
        """Flat unconstrained vector (shape ``(dim,)``) of constrained latent ``values``."""
        missing = [name for name, _ in self.layout if name not in values]
        if missing:
            raise ValueError(f"unconstrain: no value given for latent site(s) {missing}")
        latent = {name: values[name] for name, _ in self.layout}
        return flatten(unconstrain_fn(self.model, self.args, self.kwargs, latent), self.layout)

    def initial_position(
        self, rng_key: jax.Array, radius: float = 2.0, num_attempts: int = 100
    ) -> tuple[jax.Array, jax.Array]:
        """``(u, ok)``: the first of ``num_attempts`` uniform draws in ``(-radius, radius)^dim``
        with a finite log density and gradient; pure (jit/vmap-able), ``ok`` False if none."""
        return find_initial_position(rng_key, self.logdensity, self.dim, radius, num_attempts)

    # -- host helpers
    def init(self, key: jax.Array, radius: float = 2.0, num_attempts: int = 100) -> jax.Array:
        """A valid starting point: uniform in ``(-radius, radius)`` in unconstrained space.

        Draws until the log density and its gradient are finite (like NumPyro's
        ``init_to_uniform``); raises :class:`ModelError` naming the non-finite site(s)
        if all ``num_attempts`` fail.
        """
        u, ok = self.initial_position(key, radius, num_attempts)
        if not bool(ok):
            raise ModelError(self.describe_nonfinite(u, num_attempts))
        return u

    def describe_nonfinite(self, u: jax.Array, num_attempts: int) -> str:
        """Explain which site makes the log density or its gradient non-finite at ``u``,
        the last of ``num_attempts`` initialisation attempts."""
        return (
            f"the log density is non-finite at all {num_attempts} initialisation attempts "
            f"(uniform in unconstrained space); at the last attempt the culprit is: {self.nonfinite_sites(u)}"
        )

    def nonfinite_sites(self, u: jax.Array) -> str:
        """The sites whose log-probability or gradient is non-finite at ``u``, in words."""
        values = self.constrain(u)
        tr = handlers.trace(handlers.substitute(handlers.seed(self.model, 0), values)).get_trace(
            *self.args, **self.kwargs
        )
        grads = unflatten(jax.grad(self.logdensity)(u), self.layout)
        problems = []
        for site in tr.values():
            if site["type"] != "sample":
                continue
            logp = jnp.sum(site["fn"].log_prob(site["value"]))
            if not jnp.isfinite(logp):
                kind = "factor" if is_factor(site) else "observed" if site["is_observed"] else "latent"
                problems.append(f"'{site['name']}' ({kind}, log-prob {float(logp)})")
            elif site["name"] in grads and not jnp.all(jnp.isfinite(grads[site["name"]])):
                problems.append(f"'{site['name']}' (non-finite gradient)")
        return "; ".join(problems) if problems else "no single site (check deterministic code)"

    def sample_prior(self, key: jax.Array, num_samples: int) -> dict[str, jax.Array]:
        """Draw ``num_samples`` times from the prior (observed sites included).

        Returns:
            dict site name -> array of shape ``(num_samples, *site_shape)``.
        """
        return sample_sites(self.model, self.args, self.kwargs, key, num_samples)


@jax.jit
def constrain_draws(compiled: CompiledModel, positions: jax.Array, key: jax.Array | None = None):
    """``(values, log_likelihood)`` of flat draws ``positions`` ``(n, dim)``: every latent and
    deterministic site constrained ``(n, ...)``, and the pointwise log-likelihood of every
    observed site ``(n, *batch)``. Enumerated discrete sites are drawn with ``fold_in(key, i)``
    for draw ``i``. One compiled program per model structure."""
    key = jax.random.key(0) if key is None else key
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(positions.shape[0]))
    return jax.vmap(lambda u, k: (compiled.constrain(u, k), compiled.pointwise_log_likelihood(u)))(
        positions, keys
    )


def sample_sites(model, args, kwargs, key, num_samples, latents=None) -> dict[str, jax.Array]:
    """Run the model ``num_samples`` times with every site sampled (observed ones too).

    ``latents``, if given, is a dict of arrays with leading axis ``num_samples`` whose
    values are substituted (posterior predictive); otherwise latents come from the prior.
    """

    def one(rng_key, substituted):
        run = handlers.uncondition(handlers.substitute(model, substituted))
        tr = handlers.trace(handlers.seed(run, rng_key)).get_trace(*args, **kwargs)
        return {
            name: site["value"]
            for name, site in tr.items()
            if (site["type"] == "sample" and not is_factor(site)) or site["type"] == "deterministic"
        }

    keys = jax.random.split(key, num_samples)
    return jax.vmap(one)(keys, latents if latents is not None else {})


def find_initial_position(key, logdensity, dim, radius=2.0, num_attempts=100):
    """First draw, uniform in ``(-radius, radius)^dim``, with finite log density and gradient.

    Pure and jit/vmap-able. Returns ``(u, ok)``; ``ok`` is False if every attempt failed.
    """
    value_and_grad = jax.value_and_grad(logdensity)

    def attempt(i):
        u = jax.random.uniform(jax.random.fold_in(key, i), (dim,), minval=-radius, maxval=radius)
        value, grad = value_and_grad(u)
        return u, jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))

    def not_done(carry):
        i, _, ok = carry
        return (~ok) & (i < num_attempts)

    def body(carry):
        i, _, _ = carry
        u, ok = attempt(i)
        return i + 1, u, ok

    _, u, ok = jax.lax.while_loop(not_done, body, (0, jnp.zeros(dim), jnp.array(False)))
    return u, ok


_CONSTANTS: dict = {}  # (model, argument structure, shapes) -> (constants, error): one abstract trace each


def _constants(model, args, kwargs, names, static, arrays, static_data):
    """:func:`~ppl.model.data.find_constants` once per model and argument structure."""
    key = (model, static_data, tuple((a.shape, a.dtype) for a in arrays), static)
    try:
        hash(key)
    except TypeError:  # an unhashable model callable: no caching
        return find_constants(partial(trace_model, model), args, kwargs, names, static)
    if key not in _CONSTANTS:
        if len(_CONSTANTS) >= 256:
            _CONSTANTS.pop(next(iter(_CONSTANTS)))
        _CONSTANTS[key] = find_constants(partial(trace_model, model), args, kwargs, names, static)
    return _CONSTANTS[key]


def _warn_about_constants(constants: tuple[str, ...], error: Exception, given: tuple[str, ...]) -> None:
    found = [name for name in constants if name not in given]
    if not found:
        return
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    warn(
        f"model argument(s) {found} are used as constants: the model inspects their values with NumPy "
        f"or Python ({type(error).__name__}: {first_line}). They are compiled into the program, so new "
        f"values recompile; pass static={tuple(found)!r} to say so and silence this warning"
    )


_OBSERVED_BEFORE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> observed site names


def _warn_about_missing_observations(model: Callable, args: tuple, kwargs: dict, trace: dict) -> None:
    """Latent sites that look like forgotten data (then sampled from their prior): a site
    observed when this model function was compiled before, or a model parameter left at
    its default ``None`` whose name is the site's."""
    latent = {name for name, site in trace.items() if site["type"] == "sample" and not site["is_observed"]}
    observed = {name for name, site in trace.items() if site["type"] == "sample" and site["is_observed"]}
    try:
        before = _OBSERVED_BEFORE.setdefault(model, set())
    except TypeError:  # not weak-referenceable (e.g. a builtin): no memory
        before = set()
    for name in sorted(latent & before):
        warn(
            f"site '{name}' was observed when this model was compiled before, and is latent now (sampled "
            "from its prior): its data were not passed this time"
        )
    before |= observed
    try:
        signature = inspect.signature(model)
        bound = signature.bind(*args, **kwargs).arguments
    except (TypeError, ValueError):
        return
    for name, parameter in signature.parameters.items():
        site = trace.get(name)
        if (
            name not in bound
            and parameter.default is None
            and site is not None
            and site["type"] == "sample"
            and not site["is_observed"]
        ):
            if name not in before or name in observed:
                warn(
                    f"model argument '{name}' was not given, so site '{name}' is a latent variable sampled "
                    f"from its prior; pass {name}=... to condition on data"
                )


def compile(model: Callable, *args, static: Collection[str] = (), **kwargs) -> CompiledModel:  # noqa: A001
    """Compile ``model(*args, **kwargs)`` into a :class:`CompiledModel`.

    Runs the model once under NumPyro's ``seed``/``trace`` handlers, checks every site,
    and fixes the flat layout of the latent continuous sites. Discrete latent sites with
    enumerate support are summed out by enumeration (:mod:`ppl.model.enumeration`).

    Data: arrays and floats are traced (new values of the same shape reuse compiled
    programs); Python lists of numbers and pandas objects become arrays. Arrays that
    the model inspects with NumPy or Python (``np.unique(x)``, ``if y.sum() > 0``) are
    found by tracing the model abstractly once, and compiled in as constants with a
    warning (new values recompile); ``static=("x",)`` names them up front.

    Args:
        model: the model function; ``*args``/``**kwargs`` are its arguments.
        static: names of array arguments to compile in as constants.

    Raises:
        ModelError: duplicate site names; an observed value whose shape does not match
            its distribution and plates; an observed value outside the support or NaN.

    Example:
        >>> import ppl
        >>> from ppl import dist
        >>> def model():
        ...     ppl.sample("p", dist.Dirichlet(jax.numpy.ones(3)))
        >>> import jax
        >>> ppl.compile(model).dim   # a 3-simplex has 2 free coordinates
        2
    """
    if isinstance(static, str):
        static = (static,)
    names = argument_names(model, args, kwargs)
    args = tuple(as_data(value, name) for name, value in zip(names, args, strict=False))
    kwargs = {name: as_data(value, name) for name, value in kwargs.items()}
    unknown = sorted(set(static) - set(names))
    if unknown:
        raise ValueError(f"static={tuple(static)!r}: the model was not called with argument(s) {unknown}")
    arrays, static_data = split_data(args, kwargs, static, names)
    args, kwargs = merge_data(arrays, static_data)
    trace = trace_model(model, args, kwargs)
    constants, error = _constants(model, args, kwargs, names, tuple(static), arrays, static_data)
    if error is not None:
        _warn_about_constants(constants, error, tuple(static))
        arrays, static_data = split_data(args, kwargs, constants, names)
        args, kwargs = merge_data(arrays, static_data)
    for site in trace.values():
        if site["type"] == "sample" and site["is_observed"] and not is_factor(site):
            _check_observed(site)
            _check_support(model, args, kwargs, site)
    _warn_about_missing_observations(model, args, kwargs, trace)
    sites = _site_info(trace)
    enum_dim = None
    if sites.discrete_sites and all(s["fn"].has_enumerate_support for s in sites.discrete_sites):
        enumeration.require_funsor([s["name"] for s in sites.discrete_sites])
        enum_dim = enumeration.first_available_dim(trace)
    structure = ModelStructure(
        model=model,
        static_data=static_data,
        layout=tuple((s["name"], _unconstrained_shape(s)) for s in sites.latent_sites),
        discrete_sites=tuple(
            (s["name"], type(s["fn"]).__name__, tuple(jnp.shape(s["value"]))) for s in sites.discrete_sites
        ),
        enum_dim=enum_dim,
    )
    return CompiledModel(structure, arrays, sites)
