"""The Bayesian-bootstrap martingale posterior: predictive resampling with the empirical
predictive (a Pólya urn), the baseline every copula posterior is compared with.

Each imputed point is a copy of one of the ``n + t`` points seen so far, chosen
uniformly; after ``T`` steps data point ``j`` carries weight ``(1 + c_j) / (n + T)``
(``c_j`` its copies). As ``T -> infinity`` the weights are ``Dirichlet(1, ..., 1)``:
Rubin's Bayesian bootstrap, so functionals ``theta(sum_j w_j delta_{y_j})`` have the
Bayesian-bootstrap distribution.

Example:
    >>> import jax, numpy as np
    >>> from ppl.processes import martingale
    >>> y = np.arange(5.0)
    >>> draws = martingale.bayesian_bootstrap(y, key=jax.random.key(0), num_paths=3, num_steps=100)
    >>> draws["weights"].shape, draws["mean"].shape
    ((3, 5), (3,))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ppl.processes.martingale.data import as_rows, check_count
from ppl.processes.martingale.resampling import Resampled, run_paths
from ppl.runtime import keys as runtime_keys

__all__ = ["bayesian_bootstrap"]


def _urn_step(counts, step_key, t, data):
    index = jax.random.categorical(step_key, jnp.log1p(counts))
    return counts.at[index].add(1.0)


def _weights(counts, data):
    return (1.0 + counts) / (counts.shape[0] + jnp.sum(counts))


def bayesian_bootstrap(
    y,
    *,
    key,
    num_paths: int = 1000,
    num_steps: int = 5000,
    devices: int | None = None,
    progress_bar: bool | None = None,
) -> Resampled:
    """Martingale-posterior draws under the empirical predictive.

    Args:
        y: ``(n,)`` or ``(n, d)`` data.
        key, num_paths, num_steps, devices, progress_bar: as
            :meth:`~ppl.processes.martingale.CopulaDensity.resample`.

    Returns:
        :class:`~ppl.processes.martingale.resampling.Resampled` with ``weights
        (B, data_point)`` and the mean ``mean (B,)`` (or ``(B, feature)``); other
        functionals follow from the weights, e.g. ``draws.with_functional("second_moment",
        draws["weights"] @ y**2)``.
    """
    key = runtime_keys.validate_key(key)
    rows = as_rows("y", y)
    num_paths, num_steps = check_count("num_paths", num_paths), check_count("num_steps", num_steps)
    counts = jnp.zeros(len(rows), jnp.result_type(float))
    _, weights, change = run_paths(
        _urn_step,
        _weights,
        counts,
        (),
        key=key,
        num_paths=num_paths,
        num_steps=num_steps,
        devices=devices,
        progress_bar=progress_bar,
        description="Bayesian bootstrap",
    )
    mean = weights @ rows
    one_feature = np.ndim(y) == 1
    return Resampled(
        draws={"weights": weights, "mean": mean[:, 0] if one_feature else mean},
        change=change,
        num_steps=num_steps,
        dims={"weights": ("data_point",), "mean": () if one_feature else ("feature",)},
        method="Bayesian bootstrap",
    )
