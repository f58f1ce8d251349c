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
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.util import constrain_fn, potential_energy, unconstrain_fn

from ppl.errors import ModelError

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
    "merge_data",
    "sample_sites",
    "split_data",
    "unflatten",
]

Layout = tuple[tuple[str, tuple[int, ...]], ...]
"""Static description of the flat vector: ``((site_name, unconstrained_shape), ...)``."""


# ----------------------------------------------------------------------------- data


class StaticData(NamedTuple):
    """The hashable half of a model's arguments: tree structure and non-array leaves.

    Arrays and Python floats are *data*: they are passed to compiled functions as
    arguments, so new data of the same shape never recompiles. Python ints, bools,
    strings and ``None`` are *configuration* (sizes, flags): they are part of the
    compiled function's cache key.
    """

    treedef: Any
    leaves: tuple  # the static leaves, with None where an array leaf goes


def _is_array(leaf) -> bool:
    return isinstance(leaf, np.ndarray | jax.Array | np.generic)


def _is_data(leaf) -> bool:
    # Python floats are data too (observations, hyperparameters): changing one never
    # recompiles, and NumPyro's support checks see a JAX array rather than a float.
    return _is_array(leaf) or isinstance(leaf, float)


def split_data(args: tuple, kwargs: dict) -> tuple[list, StaticData]:
    """Split ``(args, kwargs)`` into a list of array leaves and a hashable remainder.

    Returns:
        ``(arrays, static)`` where ``arrays`` is a list of ``jax.Array`` and ``static``
        a :class:`StaticData`; :func:`merge_data` inverts the split.
    """
    leaves, treedef = jax.tree_util.tree_flatten((tuple(args), dict(kwargs)))
    arrays, static = [], []
    for leaf in leaves:
        if _is_data(leaf):
            arrays.append(jnp.asarray(leaf))
            static.append(None)
        else:
            try:
                hash(leaf)
            except TypeError as err:
                raise TypeError(
                    f"model argument of type {type(leaf).__name__} is neither an array nor "
                    "hashable; pass arrays for data and hashable values for configuration"
                ) from err
            static.append(leaf)
    return arrays, StaticData(treedef, tuple(static))


def merge_data(arrays: list, static: StaticData) -> tuple[tuple, dict]:
    """Inverse of :func:`split_data`: rebuild ``(args, kwargs)``."""
    it = iter(arrays)
    leaves = [next(it) if leaf is None else leaf for leaf in static.leaves]
    args, kwargs = jax.tree_util.tree_unflatten(static.treedef, leaves)
    return args, kwargs


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


def make_logdensity(model: Callable, layout: Layout, args: tuple, kwargs: dict) -> Callable:
    """The log density of the flat unconstrained vector, Jacobians included.

    ``args``/``kwargs`` may be tracers: drivers call this inside ``jit`` with the data
    as arguments so that new data of the same shape reuses the compiled program.
    """

    def logdensity(u):
        return -potential_energy(model, args, kwargs, unflatten(u, layout))

    return logdensity


def _observed_trace(model: Callable, layout: Layout, args: tuple, kwargs: dict, u: jax.Array) -> dict:
    """The model's trace with the latent sites at ``u`` (constrained): observed sites scored."""
    values = constrain_fn(model, args, kwargs, unflatten(u, layout))
    return handlers.trace(handlers.seed(handlers.substitute(model, values), 0)).get_trace(*args, **kwargs)


def make_log_likelihood(model: Callable, layout: Layout, args: tuple, kwargs: dict) -> Callable:
    """``u (dim,) ->`` the summed log-probability of the observed sites and factors
    (``handlers.scale`` applied): the likelihood part of :func:`make_logdensity`."""

    def log_likelihood(u):
        total = 0.0
        for site in _observed_trace(model, layout, args, kwargs, u).values():
            if site["type"] == "sample" and site["is_observed"]:
                scale = 1.0 if site["scale"] is None else site["scale"]
                total = total + jnp.sum(site["fn"].log_prob(site["value"]) * scale)
        return total

    return log_likelihood


def make_pointwise_log_likelihood(model: Callable, layout: Layout, args: tuple, kwargs: dict) -> Callable:
    """``u (dim,) -> {observed site: log p(value | latents)}``, one entry per element of the
    site's batch shape (event dimensions summed, no ``scale``; factors left out): what
    ArviZ's ``log_likelihood`` group holds, for ``loo`` and ``compare``."""

    def pointwise(u):
        return {
            name: site["fn"].log_prob(site["value"])
            for name, site in _observed_trace(model, layout, args, kwargs, u).items()
            if site["type"] == "sample" and site["is_observed"] and not is_factor(site)
        }

    return pointwise


# ------------------------------------------------------------------ model tracing


class _UniqueTrace(handlers.trace):
    """NumPyro's ``trace`` that reports duplicate site names as a :class:`ModelError`."""

    def postprocess_message(self, msg):
        name = msg["name"]
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
    except ModelError:
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
    """Mask of observed values outside the site's support (shape of the value's batch)."""
    if isinstance(site["value"], jax.core.Tracer):
        return np.zeros((), bool)
    return ~np.asarray(site["fn"].support(site["value"]))


def _check_support(model: Callable, args: tuple, kwargs: dict, site: dict) -> None:
    """Observed values outside the support raise, unless the support moves with the
    latent values (e.g. ``Uniform(0, theta)``): a violation must persist across three
    different prototype draws of the latents to be reported here. Otherwise the
    initialisation diagnosis names the site if no valid start exists."""
    outside = _outside_support(site)
    if not outside.any():
        return
    for seed in (1, 2):
        again = _outside_support(trace_model(model, args, kwargs, rng_key=jax.random.key(seed))[site["name"]])
        if again.shape != outside.shape or not np.array_equal(again, outside):
            return
    bad = np.argwhere(outside.reshape(outside.shape or (1,)))
    fn = site["fn"]
    raise ModelError(
        f"observed site '{site['name']}': {len(bad)} value(s) outside the support "
        f"{fn.support} of {type(fn).__name__}, first at index {tuple(bad[0].tolist())}"
    )


def _unconstrained_shape(site: dict) -> tuple[int, ...]:
    transform = biject_to(site["fn"].support)
    return tuple(transform.inverse_shape(jnp.shape(site["value"])))


# -------------------------------------------------------------------- the object


def _input_names(model: Callable, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Map argument names to the array arguments the model was called with."""
    try:
        bound = inspect.signature(model).bind(*args, **kwargs).arguments
    except (TypeError, ValueError):
        bound = {f"arg{i}": a for i, a in enumerate(args)} | dict(kwargs)
    return {k: v for k, v in bound.items() if _is_array(v)}


class ModelStructure(NamedTuple):
    """The hashable half of a :class:`CompiledModel`: what a compiled program is specialised to.

    Two compiled models with equal structures (same model function, same non-array
    arguments, same site shapes) run the same jitted programs: data are leaves.
    """

    model: Callable
    static_data: StaticData
    layout: Layout
    discrete_sites: tuple[tuple[str, str, tuple[int, ...]], ...]  # (name, distribution, shape)


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
    dims = {s["name"]: site_dims(s, event_ndim(s)) for s in continuous + observed}
    dims |= {s["name"]: site_dims(s, 0) for s in deterministic}
    loglik_dims = {s["name"]: dims[s["name"]][: len(dims[s["name"]]) - event_ndim(s)] for s in observed}
    coords = {
        frame.name: np.arange(frame.size) for s in trace.values() for frame in s.get("cond_indep_stack", [])
    }
    return SiteInfo(
        trace=trace,
        latent_sites=continuous,
        discrete_sites=[s for s in latent if s["fn"].support.is_discrete],
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

    def require_continuous(self, algorithm: str) -> None:
        """Raise :class:`ModelError` if a latent site is discrete."""
        for name, distribution, shape in self.structure.discrete_sites:
            raise ModelError(
                f"latent site '{name}' is discrete ({distribution}, shape {shape}); {algorithm} needs "
                "continuous latent sites. Marginalise it out, observe it, or use an inference method "
                "with enumeration"
            )

    # -- pure functions of u (jit-able, vmap-able)
    def logdensity(self, u: jax.Array) -> jax.Array:
        """Log joint density of ``u`` (shape ``(dim,)``), Jacobians included; a scalar."""
        self.require_continuous("a log density over a flat continuous vector")
        return make_logdensity(self.model, self.layout, self.args, self.kwargs)(u)

    def log_likelihood(self, u: jax.Array) -> jax.Array:
        """Summed log-probability of the observed sites and factors at ``u``; a scalar."""
        return make_log_likelihood(self.model, self.layout, self.args, self.kwargs)(u)

    def pointwise_log_likelihood(self, u: jax.Array) -> dict[str, jax.Array]:
        """Observed site -> log-likelihood per element of its batch shape at ``u``."""
        return make_pointwise_log_likelihood(self.model, self.layout, self.args, self.kwargs)(u)

    def constrain(self, u: jax.Array) -> dict[str, jax.Array]:
        """Constrained values of every latent and deterministic site at ``u`` (shape ``(dim,)``)."""
        params = unflatten(u, self.layout)
        return constrain_fn(self.model, self.args, self.kwargs, params, return_deterministic=True)

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
        """Explain which site makes the log density or its gradient non-finite at ``u``."""
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
        where = "; ".join(problems) if problems else "no single site (check deterministic code)"
        return (
            f"the log density is non-finite at all {num_attempts} initialisation attempts "
            f"(uniform in unconstrained space); at the last attempt the culprit is: {where}"
        )

    def sample_prior(self, key: jax.Array, num_samples: int) -> dict[str, jax.Array]:
        """Draw ``num_samples`` times from the prior (observed sites included).

        Returns:
            dict site name -> array of shape ``(num_samples, *site_shape)``.
        """
        return sample_sites(self.model, self.args, self.kwargs, key, num_samples)


@jax.jit
def constrain_draws(compiled: CompiledModel, positions: jax.Array):
    """``(values, log_likelihood)`` of flat draws ``positions`` ``(n, dim)``: every latent and
    deterministic site constrained ``(n, ...)``, and the pointwise log-likelihood of every
    observed site ``(n, *batch)``. One compiled program per model structure."""
    return jax.vmap(lambda u: (compiled.constrain(u), compiled.pointwise_log_likelihood(u)))(positions)


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


def compile(model: Callable, *args, **kwargs) -> CompiledModel:  # noqa: A001 (the API name)
    """Compile ``model(*args, **kwargs)`` into a :class:`CompiledModel`.

    Runs the model once under NumPyro's ``seed``/``trace`` handlers, checks every site,
    and fixes the flat layout of the latent continuous sites.

    Raises:
        ModelError: duplicate site names; an observed value whose shape does not match
            its distribution and plates; an observed value outside the support.

    Example:
        >>> import ppl
        >>> from ppl import dist
        >>> def model():
        ...     ppl.sample("p", dist.Dirichlet(jax.numpy.ones(3)))
        >>> import jax
        >>> ppl.compile(model).dim   # a 3-simplex has 2 free coordinates
        2
    """
    arrays, static = split_data(args, kwargs)
    args, kwargs = merge_data(arrays, static)
    trace = trace_model(model, args, kwargs)
    for site in trace.values():
        if site["type"] == "sample" and site["is_observed"] and not is_factor(site):
            _check_observed(site)
            _check_support(model, args, kwargs, site)
    sites = _site_info(trace)
    structure = ModelStructure(
        model=model,
        static_data=static,
        layout=tuple((s["name"], _unconstrained_shape(s)) for s in sites.latent_sites),
        discrete_sites=tuple(
            (s["name"], type(s["fn"]).__name__, tuple(jnp.shape(s["value"]))) for s in sites.discrete_sites
        ),
    )
    return CompiledModel(structure, arrays, sites)
