"""Discrete latent sites summed out by enumeration, and drawn back afterwards.

A discrete latent site with enumerate support (``Bernoulli``, ``Categorical``,
``DiscreteUniform``, ...) is summed out of the log density exactly, as NumPyro's
``MCMC(NUTS)`` does: the model runs under NumPyro's ``enum(config_enumerate(model))``
and its funsor-based ``log_density`` contracts the enumerated dimensions (variable
elimination over plates). Gradient-based samplers then see only the continuous sites.
Afterwards :func:`draw_discrete` draws each discrete site from its conditional
posterior given the continuous draws (NumPyro's ``infer_discrete``, forward-filter
backward-sample), so the ArviZ posterior holds the discrete sites too.

NumPyro's machinery is used rather than hand-written enumeration because it already
handles nested plates, ``markov`` chains and shared discrete sites through funsor
(an optional dependency, ``pip install funsor``, imported only for such models).

Example:
    >>> import jax, jax.numpy as jnp, ppl
    >>> from ppl import dist
    >>> def mixture(y):
    ...     mu = ppl.sample("mu", dist.Normal(jnp.zeros(2), 3.0).to_event(1))
    ...     with ppl.plate("data", len(y)):
    ...         z = ppl.sample("z", dist.Bernoulli(0.5))
    ...         ppl.sample("y", dist.Normal(mu[z.astype(int)], 1.0), obs=y)
    >>> ppl.compile(mixture, jnp.array([-2.0, 2.0])).enumerated   # doctest: +SKIP
    ('z',)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from numpyro import handlers

from ppl.errors import ModelError

__all__ = ["draw_discrete", "enumerated", "first_available_dim", "require_funsor"]


def first_available_dim(trace: dict) -> int:
    """The first dimension (from the right) free for enumeration: left of every plate."""
    dims = [
        frame.dim
        for site in trace.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.dim is not None
    ]
    return min(dims, default=0) - 1


def require_funsor(sites: list[str]) -> None:
    """Raise :class:`ModelError` with the install hint if funsor is missing."""
    try:
        import funsor  # noqa: F401
    except ImportError as err:
        raise ModelError(
            f"latent discrete site(s) {sites} are summed out by enumeration, which needs funsor: "
            "pip install funsor"
        ) from err


def enumerated(model: Callable, dim: int) -> Callable:
    """``model`` under NumPyro's ``enum(config_enumerate(model), dim)``: every discrete
    latent site with enumerate support runs over all its values, in dimensions left of
    ``dim`` (:func:`first_available_dim`); NumPyro's ``potential_energy(..., enum=True)``
    then sums them out."""
    from numpyro.contrib.funsor import config_enumerate, enum

    return enum(config_enumerate(model), dim)


def draw_discrete(model: Callable, args: tuple, kwargs: dict, values: dict, key, dim: int, names) -> dict:
    """Draw the discrete sites ``names`` from their posterior given continuous ``values``.

    Returns:
        dict site name -> value (the site's shape), one joint draw.
    """
    from numpyro.contrib.funsor import config_enumerate
    from numpyro.contrib.funsor.discrete import infer_discrete

    conditioned = handlers.substitute(model, data=values)
    sampler = infer_discrete(
        config_enumerate(conditioned), first_available_dim=dim, temperature=1, rng_key=key
    )
    trace = handlers.trace(handlers.seed(sampler, jax.random.fold_in(key, 1))).get_trace(*args, **kwargs)
    return {name: trace[name]["value"] for name in names}
