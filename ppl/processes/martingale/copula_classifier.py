"""Binary copula classification ``p(y = 1 | x)`` and its martingale posterior.

Starting from ``p_0(1 | x) = 1/2``, each observation ``(x_i, y_i)`` moves the
probability at every ``x`` by the Bernoulli copula update
(:func:`~ppl.processes.martingale.copula.bernoulli_update`) with the covariate weight
``alpha_i(x)``; the bandwidths (``rho`` and one ``rho_x`` per covariate, or one shared)
maximise the prequential log-likelihood averaged over orderings, from 0.8 as the authors
do. Predictive resampling draws covariates from the data with Bayesian-bootstrap
weights and labels from the current predictive; it tracks the probability at the data's
covariates (where new points are drawn) and at the test covariates.

Example:
    >>> import jax, numpy as np
    >>> from ppl.processes import martingale
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(40, 2)); y = (x[:, 0] + 0.5 * rng.normal(size=40) > 0).astype(int)
    >>> fit = martingale.classification(x, y, key=jax.random.key(0), num_permutations=2)
    >>> fit.probability(x[:3]).shape
    (3,)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from ppl.processes.martingale import copula, fitting
from ppl.processes.martingale.data import Standardiser, as_rows, check_count, warn_outside
from ppl.processes.martingale.resampling import Resampled, run_paths
from ppl.runtime import keys as runtime_keys

__all__ = ["CopulaClassifier", "classification", "prequential_log_likelihood"]

_update_all = jax.vmap(copula.bernoulli_update, (0, None, None, 0, None))


def _log_bernoulli(log_p, y):
    log_p = jnp.clip(log_p, jnp.log(copula.PROBABILITY_CLIP), jnp.log1p(-copula.PROBABILITY_CLIP))
    return jnp.where(y > 0.5, log_p, jnp.log1p(-jnp.exp(log_p)))


def _data_pass(rho, rho_x, x, y):
    """One ordering: ``log p_{i-1}(1 | x_i) (n,)`` and prequential terms ``(n,)``."""
    start = jnp.full(len(y), jnp.log(0.5), x.dtype)

    def observe(log_p, i):
        log_v = log_p[i]
        weights = copula.log_covariate_alphas(i, x, x[i], rho_x)
        return _update_all(log_p, log_v, y[i], weights, rho), (log_v, _log_bernoulli(log_v, y[i]))

    _, (log_v, scores) = jax.lax.scan(observe, start, jnp.arange(len(y)))
    return log_v, scores


def prequential_log_likelihood(rho, rho_x, x, y, orderings):
    """Mean over orderings of ``(1/n) sum_i log p_{i-1}(y_i | x_i)``; standardised
    ``x (n, p)``, labels ``y (n,)`` in ``{0, 1}``, ``orderings (P, n)``."""
    return fitting.conditional_prequential(_data_pass, rho, rho_x, x, y, orderings)


def _point_pass(rho, rho_x, log_v, x_data, y_data, x_point):
    def observe(log_p, inputs):
        i, log_v_i, x_i, y_i = inputs
        weight = copula.log_covariate_alpha(copula.log_alpha(i), x_point, x_i, rho_x)
        return copula.bernoulli_update(log_p, log_v_i, y_i, weight, rho), None

    n = log_v.shape[0]
    log_p, _ = jax.lax.scan(observe, jnp.log(0.5).astype(log_v.dtype), (jnp.arange(n), log_v, x_data, y_data))
    return log_p


@jax.jit
def _averaged_log_probability(rho, rho_x, log_v, x_ordered, y_ordered, x_points):
    per_point = jax.vmap(_point_pass, (None, None, None, None, None, 0))
    per_order = jax.vmap(per_point, (None, None, 0, 0, 0, None))(
        rho, rho_x, log_v, x_ordered, y_ordered, x_points
    )
    return logsumexp(per_order, axis=0) - jnp.log(log_v.shape[0])


class CopulaClassifier(NamedTuple):
    """A fitted binary copula classifier (from :func:`classification`).

    Attributes:
        rho, rho_x: the bandwidths (``rho_x`` ``(p,)``).
        log_v: ``(P, n)`` ``log p_{i-1}(1 | x_i)`` of the ordered data per ordering.
        x_ordered, y_ordered: ``(P, n, p)`` standardised covariates and ``(P, n)`` labels
            in each ordering.
        log_score: prequential log-likelihood per point at the bandwidths.
        x_scaler: the covariates' standardisation; x, y: the data as given.
    """

    rho: jax.Array
    rho_x: jax.Array
    log_v: jax.Array
    x_ordered: jax.Array
    y_ordered: jax.Array
    log_score: jax.Array
    x_scaler: Standardiser
    x: np.ndarray
    y: np.ndarray

    def _log_probability(self, rows):
        return _averaged_log_probability(
            self.rho,
            self.rho_x,
            self.log_v,
            self.x_ordered,
            self.y_ordered,
            jnp.asarray(rows, self.log_v.dtype),
        )

    def probability(self, x_points) -> np.ndarray:
        """``p_n(y = 1 | x)`` at ``x_points (m, p)``, averaged over orderings, ``(m,)``."""
        rows = self.x_scaler.apply(as_rows("x_points", x_points, features=self.x.shape[1]))
        return np.exp(np.asarray(self._log_probability(rows)))

    def log_likelihood(self, x_points, y_points) -> np.ndarray:
        """``log p_n(y | x)`` of labels ``y_points (m,)`` in ``{0, 1}`` at ``x_points``."""
        rows = self.x_scaler.apply(as_rows("x_points", x_points, features=self.x.shape[1]))
        labels = _labels("y_points", y_points, len(rows))
        return np.asarray(_log_bernoulli(self._log_probability(rows), jnp.asarray(labels)))

    def resample(
        self,
        x_test,
        *,
        key,
        num_paths: int = 1000,
        num_steps: int = 5000,
        devices: int | None = None,
        progress_bar: bool | None = None,
    ) -> Resampled:
        """Martingale-posterior draws of ``p(y = 1 | x)`` at ``x_test (m, p)``.

        Returns:
            :class:`~ppl.processes.martingale.resampling.Resampled` with ``probability
            (B, test_point)``. Arguments as
            :meth:`~ppl.processes.martingale.CopulaDensity.resample`.
        """
        key = runtime_keys.validate_key(key)
        num_paths, num_steps = check_count("num_paths", num_paths), check_count("num_steps", num_steps)
        points = as_rows("x_test", x_test, features=self.x.shape[1])
        warn_outside("x_test", points, self.x)
        dtype = self.log_v.dtype
        x_data = jnp.asarray(self.x_scaler.apply(self.x), dtype)
        x_rows = jnp.asarray(self.x_scaler.apply(points), dtype)
        state = (self._log_probability(x_data), self._log_probability(x_rows), jnp.zeros(len(self.x), dtype))
        data = (self.rho, self.rho_x, x_data, x_rows, jnp.asarray(len(self.x)))
        _, probability, change = run_paths(
            _resample_step,
            _probability_readout,
            state,
            data,
            key=key,
            num_paths=num_paths,
            num_steps=num_steps,
            start=_bootstrap_start,
            devices=devices,
            progress_bar=progress_bar,
            description="martingale classification",
        )
        return Resampled(
            draws={"probability": probability},
            change=change,
            num_steps=num_steps,
            dims={"probability": ("test_point",)},
            coords={"test_point": np.arange(len(points))},
            method="copula classification",
        )


def _bootstrap_start(state, start_key, data):
    at_data, at_test, log_weights = state
    return at_data, at_test, jnp.log(jax.random.dirichlet(start_key, jnp.ones_like(log_weights)))


def _resample_step(state, step_key, t, data):
    rho, rho_x, x_data, x_test, num_data = data
    at_data, at_test, log_weights = state
    index = jax.random.categorical(jax.random.fold_in(step_key, 0), log_weights)
    log_v = at_data[index]
    y_new = (jnp.log(jax.random.uniform(jax.random.fold_in(step_key, 1), (), at_data.dtype)) <= log_v).astype(
        at_data.dtype
    )
    x_new, i = x_data[index], num_data + t
    at_data = _update_all(at_data, log_v, y_new, copula.log_covariate_alphas(i, x_data, x_new, rho_x), rho)
    at_test = _update_all(at_test, log_v, y_new, copula.log_covariate_alphas(i, x_test, x_new, rho_x), rho)
    return at_data, at_test, log_weights


def _probability_readout(state, data):
    return jnp.exp(state[1])


def _labels(name, values, rows: int) -> np.ndarray:
    labels = np.asarray(values)
    if labels.shape != (rows,):
        raise ValueError(f"{name} must have shape ({rows},) to match the covariates, got {labels.shape}")
    if not np.all(np.isin(labels, (0, 1))):
        bad = np.flatnonzero(~np.isin(labels, (0, 1)))
        raise ValueError(
            f"{name} must hold labels 0 and 1; {bad.size} entries do not (first: row {int(bad[0])})"
        )
    return labels.astype(float)


def classification(
    x,
    y,
    *,
    key,
    num_permutations: int = 10,
    rho=None,
    rho_x=None,
    per_feature: bool = True,
    max_steps: int = 100,
) -> CopulaClassifier:
    """Fit the binary copula classifier of labels ``y`` on covariates ``x``.

    Args:
        x: ``(n, p)`` covariates (standardised internally); y: ``(n,)`` labels in ``{0, 1}``.
        key, num_permutations, rho, rho_x, per_feature, max_steps: as
            :func:`~ppl.processes.martingale.regression`.

    Raises:
        ValueError: on empty, non-finite or mismatched data, labels other than 0 and 1,
            a constant covariate, or bandwidths outside ``(0, 1)``.
    """
    key = runtime_keys.validate_key(key)
    x_rows = as_rows("x", x, min_rows=2)
    labels = _labels("y", y, len(x_rows))
    num_permutations = check_count("num_permutations", num_permutations)
    x_scaler = Standardiser.fit("x", x_rows)
    dtype = jnp.result_type(float)
    xs, ys = jnp.asarray(x_scaler.apply(x_rows), dtype), jnp.asarray(labels, dtype)
    theta = fitting.covariate_theta(rho, rho_x, x_rows.shape[1], per_feature=per_feature)
    fit_bandwidth = rho is None
    orderings = fitting.orderings(key, len(x_rows), num_permutations)
    rho, rho_x, log_v, score = fitting.fit_conditional(
        _data_pass, xs, ys, orderings, theta, fit_bandwidth=fit_bandwidth, max_steps=max_steps
    )
    if fit_bandwidth:
        fitting.warn_if_degenerate(rho, "labels")
    return CopulaClassifier(rho, rho_x, log_v, xs[orderings], ys[orderings], score, x_scaler, x_rows, labels)
