"""Prior and posterior predictive draws, and the pointwise log-likelihood of new data.

:func:`predictive` is NumPyro's ``Predictive``: with no posterior it runs the model
forward; with draws (a :class:`~ppl.Posterior`, any :class:`~ppl.runtime.results.Draws`
such as a guide's, or a dict of arrays) it substitutes them for the latent sites and
runs the model on the data given here (new inputs, longer horizons), returning every
site the draws do not fix: observed sites, deterministic sites (recomputed) and
sample sites that exist only in this call (forecasts). ``return_sites`` picks sites.

:func:`log_likelihood` scores new observations (held-out data) under each draw, for
ArviZ's ``log_likelihood`` group (``posterior.to_arviz(log_likelihood=...)``) and
``az.loo`` / ``az.compare`` on test data.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

import jax
import numpy as np
from numpyro import handlers

from ppl.model.compile import compile, is_factor, sample_sites
from ppl.runtime.keys import validate_key
from ppl.runtime.results import Draws

__all__ = ["log_likelihood", "predictive"]


def _draws(posterior, name: str = "posterior") -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
    """``(flat draws (n, ...), batch shape)`` of a Draws (``(chains, draws)``) or a dict
    of arrays with one leading sample axis."""
    if isinstance(posterior, Draws):
        batch = (posterior.num_chains, posterior.num_draws)
        samples = posterior.samples
    elif isinstance(posterior, Mapping):
        samples = {k: np.asarray(v) for k, v in posterior.items()}
        sizes = {k: v.shape[0] if v.ndim else None for k, v in samples.items()}
        if not samples or None in sizes.values() or len(set(sizes.values())) != 1:
            raise ValueError(
                f"{name}: a dict of draws needs arrays with one common leading sample axis; got shapes "
                f"{ {k: v.shape for k, v in samples.items()} }"
            )
        batch = (next(iter(sizes.values())),)
    else:
        raise TypeError(
            f"{name} must be None (prior predictive), a ppl.Posterior or other ppl Draws, or a dict of "
            f"draws with a leading sample axis; got {type(posterior).__name__}"
        )
    n = int(np.prod(batch))
    return {k: np.reshape(v, (n,) + np.shape(v)[len(batch) :]) for k, v in samples.items()}, batch


def _sample_site_names(model, args, kwargs, key) -> dict[str, str]:
    """Every site of one prior run: name -> ``"sample"``, ``"observed"`` or ``"deterministic"``."""
    trace = handlers.trace(handlers.seed(model, key)).get_trace(*args, **kwargs)
    return {
        name: "deterministic"
        if site["type"] == "deterministic"
        else "observed"
        if site["is_observed"]
        else "sample"
        for name, site in trace.items()
        if (site["type"] == "sample" and not is_factor(site)) or site["type"] == "deterministic"
    }


def predictive(
    model: Callable,
    posterior=None,
    *args,
    key: jax.Array,
    num_samples: int = 500,
    return_sites: Collection[str] | None = None,
    **kwargs,
) -> dict[str, np.ndarray]:
    """Prior or posterior predictive draws of the model's sites.

    Args:
        model: the model; ``*args``/``**kwargs`` are its data (new inputs here give
            out-of-sample predictions; leave observed arguments out to draw them).
        posterior: ``None`` for the prior predictive (``num_samples`` forward runs); a
            :class:`~ppl.Posterior` or other :class:`~ppl.runtime.results.Draws` (e.g.
            ``vi_result.draws(...)``), whose draws are substituted for the latent sites
            (deterministic sites are recomputed); or a dict of draws with one leading
            sample axis.
        key: a ``jax.random.key``.
        num_samples: draws of the prior predictive.
        return_sites: the sites to return; by default every site the posterior does not
            fix: observed sites, deterministic sites and sample sites new in this call
            (all sites for the prior predictive).

    Returns:
        dict site -> draws: ``(chains, draws, *site_shape)`` for Draws,
        ``(num_samples, *site_shape)`` for the prior or a dict of draws.

    Raises:
        ValueError: a name in ``return_sites`` that is no site of the model.

    Example:
        >>> prior = ppl.predictive(model, None, sigma, key=jax.random.key(1))  # doctest: +SKIP
        >>> ppc = ppl.predictive(model, post, sigma, key=jax.random.key(2))     # doctest: +SKIP
        >>> ppc = ppl.predictive(model, post, x_new, key=k, return_sites=["y", "mu"])  # doctest: +SKIP
    """
    key = validate_key(key)
    if return_sites is not None and isinstance(return_sites, str):
        return_sites = [return_sites]
    names = _sample_site_names(model, args, kwargs, jax.random.fold_in(key, 1))
    if return_sites is not None:
        unknown = sorted(set(return_sites) - set(names))
        if unknown:
            raise ValueError(
                f"return_sites: {unknown} are not sites of the model (its sites: {sorted(names)})"
            )
    if posterior is None:
        draws = jax.device_get(sample_sites(model, args, kwargs, key, num_samples))
        wanted = names if return_sites is None else return_sites
        return {name: np.asarray(draws[name]) for name in wanted if name in draws}
    flat, batch = _draws(posterior)
    n = int(np.prod(batch))
    # substitute the draws of the model's sample sites (deterministic ones are recomputed)
    latents = {name: value for name, value in flat.items() if names.get(name) == "sample"}
    draws = jax.device_get(sample_sites(model, args, kwargs, key, n, latents=latents))
    if return_sites is None:
        wanted = [name for name in names if name not in latents]
    else:
        wanted = list(return_sites)
    return {name: np.asarray(draws[name]).reshape(batch + np.shape(draws[name])[1:]) for name in wanted}


@jax.jit
def _pointwise(compiled, positions):
    return jax.vmap(compiled.pointwise_log_likelihood)(positions)


@jax.jit
def _unconstrain(compiled, values):
    return jax.vmap(compiled.unconstrain)(values)


def log_likelihood(model: Callable, posterior, *args, static: Collection[str] = (), **kwargs) -> dict:
    """Pointwise log-likelihood of the observed sites of ``model(*args, **kwargs)`` (e.g. held-out
    data) under each posterior draw.

    Enumerated discrete sites are summed out, as in the posterior's own
    ``log_likelihood`` group. Pass the result to ``posterior.to_arviz(log_likelihood=...)``
    for ``az.loo`` / ``az.compare`` on the new data.

    Args:
        model: the model; ``*args``/``**kwargs`` hold the new data, observed sites included.
        posterior: a :class:`~ppl.Posterior`, other Draws, or a dict of draws ``(n, ...)``
            holding every latent continuous site of the model.
        static: as in :func:`~ppl.compile`.

    Returns:
        dict observed site -> ``(chains, draws, *batch)`` (or ``(n, *batch)`` for a dict).

    Example:
        >>> test_ll = ppl.log_likelihood(model, post, x_test, y=y_test)        # doctest: +SKIP
        >>> az.loo(post.to_arviz(log_likelihood=test_ll))                       # doctest: +SKIP
    """
    compiled = compile(model, *args, static=static, **kwargs)
    flat, batch = _draws(posterior)
    missing = [name for name, _ in compiled.layout if name not in flat]
    if missing:
        raise ValueError(f"log_likelihood: the posterior has no draws of latent site(s) {missing}")
    positions = _unconstrain(compiled, {name: flat[name] for name, _ in compiled.layout})
    values = jax.device_get(_pointwise(compiled, positions))
    return {name: np.asarray(v).reshape(batch + np.shape(v)[1:]) for name, v in values.items()}
