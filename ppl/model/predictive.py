"""Prior and posterior predictive draws."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from ppl.model.compile import sample_sites
from ppl.runtime.keys import validate_key
from ppl.runtime.results import Draws

__all__ = ["predictive"]


def predictive(
    model: Callable,
    posterior,
    *args,
    key: jax.Array,
    num_samples: int = 500,
    **kwargs,
) -> dict[str, np.ndarray]:
    """Draws of the model's sites, observed ones included.

    With ``posterior=None`` this is the prior predictive: ``num_samples`` runs of the
    model, every site sampled; the result has shape ``(num_samples, *site_shape)``.
    With a :class:`~ppl.Posterior` (draws of a compiled model) each posterior draw is
    substituted for the latent sites and the observed sites are re-sampled; the result
    holds the observed sites with shape ``(chains, draws, *site_shape)``. ``args``/``kwargs`` are the model's
    data (pass new inputs here for out-of-sample predictions).

    Pass the results to ``posterior.to_arviz(prior=..., posterior_predictive=...)``.

    Example:
        >>> prior = ppl.predictive(model, None, sigma, key=jax.random.key(1))  # doctest: +SKIP
        >>> ppc = ppl.predictive(model, post, sigma, key=jax.random.key(2))     # doctest: +SKIP
    """
    key = validate_key(key)
    if posterior is not None and not (isinstance(posterior, Draws) and hasattr(posterior, "compiled")):
        raise TypeError(
            "predictive: posterior must be None (prior predictive) or a ppl.Posterior, "
            f"got {type(posterior).__name__}"
        )
    if posterior is None:
        return jax.device_get(sample_sites(model, args, kwargs, key, num_samples))
    # Sites observed in the fitted model are re-sampled even if the new call leaves
    # their data out (``y=None``); its latent sites take the posterior draws.
    observed = {site["name"] for site in posterior.compiled.observed_sites}
    latent_names = dict(posterior.compiled.layout)
    chains, draws = posterior.num_chains, posterior.num_draws
    latents = {
        name: value.reshape((chains * draws,) + value.shape[2:])
        for name, value in posterior.samples.items()
        if name in latent_names
    }
    draws_out = sample_sites(model, args, kwargs, key, chains * draws, latents=latents)
    return {
        name: np.asarray(value).reshape((chains, draws) + value.shape[1:])
        for name, value in jax.device_get(draws_out).items()
        if name in observed
    }
