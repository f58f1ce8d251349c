"""The result types every family returns, and their one ArviZ export.

Two kinds of output cover every algorithm in `ppl`:

* :class:`Draws`: equally weighted draws grouped by chain (MCMC; what weighted
  particles and variational guides become once resampled or sampled).
* :class:`WeightedSamples`: weighted particles with a log-evidence estimate and
  per-step diagnostics (SMC); :meth:`WeightedSamples.resample` turns them into
  :class:`Draws`.

Families subclass these (``ppl.Posterior``, ``ppl.smc.TemperedResult``,
``ppl.smc.diffusion.DiffusionResult``) to add what is theirs, and inherit
``to_arviz``: ``posterior``, ``sample_stats`` (per-draw statistics and per-step
histories), ``log_likelihood`` (pointwise, one variable per observed site),
``observed_data``, ``constant_data``, and on request ``prior``, ``prior_predictive``
and ``posterior_predictive``. :func:`to_inference_data` accepts every result.

Example:
    >>> import numpy as np
    >>> from ppl.runtime.results import Draws
    >>> draws = Draws(samples={"mu": np.zeros((2, 100))}, sample_stats={"lp": np.zeros((2, 100))})
    >>> idata = draws.to_arviz()
    >>> idata.posterior["mu"].dims
    ('chain', 'draw')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from blackjax.smc import resampling as blackjax_resampling
from jax.scipy.special import logsumexp

from ppl.runtime.arviz import from_groups, to_dataset

__all__ = ["Draws", "WeightedSamples", "to_inference_data"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Draws:
    """Equally weighted draws grouped by chain.

    Attributes:
        samples: name -> draws ``(chains, draws, *shape)`` (constrained latent and
            deterministic sites).
        sample_stats: name -> per-draw statistics ``(chains, draws)``, or per-step
            histories whose dims (starting with ``"chain"``) are in ``stats_dims``.
        log_likelihood: observed site -> pointwise log-likelihood ``(chains, draws, *batch)``.
        observed_data: observed site -> its value.
        constant_data: the model's other array inputs, by argument name.
        dims: variable -> names of its axes after ``(chain, draw)`` (plates).
        stats_dims: statistic -> all its dims, for statistics that are not per draw.
        log_likelihood_dims: observed site -> names of its batch axes (default ``dims``).
        coords: dim -> coordinate values.
        attrs: recorded on the ``posterior`` group (e.g. ``{"inference": "mcmc"}``).
    """

    samples: dict[str, np.ndarray]
    sample_stats: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    log_likelihood: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    observed_data: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    constant_data: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    dims: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    stats_dims: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    log_likelihood_dims: dict[str, tuple[str, ...]] | None = None
    coords: dict[str, Any] = dataclasses.field(default_factory=dict)
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_chains(self) -> int:
        return next(iter(self.samples.values())).shape[0]

    @property
    def num_draws(self) -> int:
        return next(iter(self.samples.values())).shape[1]

    def to_arviz(
        self,
        *,
        prior: Mapping | None = None,
        posterior_predictive: Mapping | None = None,
        log_likelihood: Mapping | None = None,
        coords: Mapping | None = None,
        dims: Mapping | None = None,
    ):
        """ArviZ data (``InferenceData`` on arviz 0.x, ``DataTree`` on 1.x).

        Args:
            prior: prior draws ``(num_samples, ...)`` from ``ppl.predictive(model, None, ...)``;
                observed sites go to ``prior_predictive``, the others to ``prior``.
            posterior_predictive: draws ``(chains, draws, ...)`` from
                ``ppl.predictive(model, posterior, ...)``.
            log_likelihood: replaces the ``log_likelihood`` group, e.g. the held-out
                pointwise log-likelihood ``(chains, draws, *batch)`` from
                ``ppl.log_likelihood(model, posterior, test data)``, for ``az.loo`` on test data.
            coords: extra or overriding coordinates, e.g. ``{"school": names}``.
            dims: extra or overriding dims per variable.
        """
        coords = dict(self.coords) | dict(coords or {})
        dims = dict(self.dims) | dict(dims or {})
        loglik_dims = dims if self.log_likelihood_dims is None else dict(self.log_likelihood_dims)
        stats_dims = dict(self.stats_dims)
        groups = {
            "posterior": to_dataset(self.samples, dims, coords, attrs=self.attrs),
            "sample_stats": to_dataset(self.sample_stats, stats_dims, coords),
            "log_likelihood": to_dataset(
                self.log_likelihood if log_likelihood is None else dict(log_likelihood),
                loglik_dims,
                coords,
                strict=log_likelihood is None,
            ),
            "observed_data": to_dataset(self.observed_data, dims, coords, sample_dims=()),
            "constant_data": to_dataset(self.constant_data, {}, coords, sample_dims=()),
        }
        if prior is not None:
            with_chain = {name: np.asarray(value)[None] for name, value in prior.items()}
            observed = {k: v for k, v in with_chain.items() if k in self.observed_data}
            latent = {k: v for k, v in with_chain.items() if k not in self.observed_data}
            groups["prior"] = to_dataset(latent, dims, coords)
            groups["prior_predictive"] = to_dataset(observed, dims, coords)
        if posterior_predictive is not None:
            groups["posterior_predictive"] = to_dataset(posterior_predictive, dims, coords, strict=False)
        return from_groups(groups)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WeightedSamples:
    """Weighted particles, a log-evidence estimate and per-step diagnostics.

    Attributes:
        samples: name -> particles ``(N, *shape)``.
        log_weights: normalised log-weights ``(N,)`` (``logsumexp == 0``).
        log_evidence: estimate of ``log p(y)`` (NaN where the method defines none).
        sample_stats: name -> per-step histories (ESS, temperatures, acceptance, ...),
            dims in ``stats_dims`` (without the chain axis).
        log_likelihood: observed site -> pointwise log-likelihood of each particle ``(N, *batch)``.
        observed_data, constant_data, dims, log_likelihood_dims, coords, attrs: as in :class:`Draws`.
    """

    samples: dict[str, np.ndarray]
    log_weights: np.ndarray
    log_evidence: float = float("nan")
    sample_stats: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    stats_dims: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    log_likelihood: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    observed_data: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    constant_data: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    dims: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    log_likelihood_dims: dict[str, tuple[str, ...]] | None = None
    coords: dict[str, Any] = dataclasses.field(default_factory=dict)
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_particles(self) -> int:
        return int(np.shape(self.log_weights)[0])

    @property
    def weights(self) -> np.ndarray:
        """Normalised weights ``(N,)``."""
        return np.exp(np.asarray(self.log_weights, np.float64))

    @property
    def ess(self) -> float:
        """Effective sample size of the final weights, ``1 / sum w^2``."""
        log_weights = np.asarray(self.log_weights, np.float64)
        return float(np.exp(2 * logsumexp(log_weights) - logsumexp(2 * log_weights)))

    def resample_indices(self, rng_key: jax.Array, num_samples: int | None = None) -> np.ndarray:
        """Indices of ``num_samples`` (default ``N``) equally weighted draws (systematic resampling)."""
        num_samples = self.num_particles if num_samples is None else int(num_samples)
        weights = np.exp(np.asarray(self.log_weights) - logsumexp(np.asarray(self.log_weights)))
        return np.asarray(blackjax_resampling.systematic(rng_key, weights, num_samples))

    def resample(self, rng_key: jax.Array, num_samples: int | None = None) -> Draws:
        """Equally weighted :class:`Draws` (one chain of ``num_samples`` draws, default ``N``).

        ``sample_stats`` holds ``log_evidence`` ``(chain,)`` and every history with a
        leading chain axis of length 1.
        """
        index = self.resample_indices(rng_key, num_samples)
        stats = {"log_evidence": np.asarray([self.log_evidence], np.float64)}
        stats_dims = {"log_evidence": ("chain",)}
        for name, history in self.sample_stats.items():
            history = np.asarray(history)
            axes = self.stats_dims.get(name) or tuple(f"{name}_dim_{i}" for i in range(history.ndim))
            stats[name], stats_dims[name] = history[None], ("chain", *axes)
        return Draws(
            samples={name: np.asarray(value)[index][None] for name, value in self.samples.items()},
            sample_stats=stats,
            stats_dims=stats_dims,
            log_likelihood={
                name: np.asarray(value)[index][None] for name, value in self.log_likelihood.items()
            },
            observed_data=self.observed_data,
            constant_data=self.constant_data,
            dims=self.dims,
            log_likelihood_dims=self.log_likelihood_dims,
            coords=self.coords,
            attrs=self.attrs | {"num_particles": self.num_particles, "final_ess": self.ess},
        )

    def to_arviz(self, rng_key: jax.Array, num_samples: int | None = None, **kwargs):
        """ArviZ data of :meth:`resample`'s draws; ``kwargs`` as in :meth:`Draws.to_arviz`."""
        return self.resample(rng_key, num_samples).to_arviz(**kwargs)


def to_inference_data(result, *args, **kwargs):
    """ArviZ data for any `ppl` result: ``result.to_arviz(*args, **kwargs)``.

    :class:`Draws` (``ppl.Posterior``) take keyword options only; :class:`WeightedSamples`
    (SMC results) take the resampling key first; ``ppl.vi.VIResult`` the guide, a key
    and the number of draws.

    Example:
        >>> idata = ppl.to_inference_data(posterior, coords={"school": names})  # doctest: +SKIP
        >>> idata = ppl.to_inference_data(smc_result, jax.random.key(1))         # doctest: +SKIP
    """
    if not callable(getattr(result, "to_arviz", None)):
        raise TypeError(
            f"to_inference_data: expected a ppl result (Posterior, an SMC result, VIResult), "
            f"got {type(result).__name__}"
        )
    return result.to_arviz(*args, **kwargs)
