"""Conditional copula regression ``p(y | x)`` and its martingale posterior.

The predictive of ``y`` at covariates ``x`` moves after each observation ``(x_i, y_i)``
by the univariate copula update with a covariate-dependent weight ``alpha_i(x)``
(:func:`~ppl.processes.martingale.copula.log_covariate_alpha`): one bandwidth ``rho``
for ``y`` and one ``rho_x`` per covariate (or one shared), fitted by the conditional
prequential log-likelihood averaged over orderings, from 0.8 as the authors do.
Predictive resampling draws each new covariate from the data with Bayesian-bootstrap
weights (one Dirichlet draw per path) and its ``y`` from the current predictive.

Example:
    >>> import jax, numpy as np
    >>> from ppl.processes import martingale
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(40, 2)); y = x[:, 0] + 0.3 * rng.normal(size=40)
    >>> fit = martingale.regression(x, y, key=jax.random.key(0), num_permutations=2)
    >>> fit.log_density(x[:3], y[:3]).shape
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
from ppl.processes.martingale.resampling import Resampled, grid_mean, run_paths
from ppl.runtime import keys as runtime_keys

__all__ = ["CopulaRegression", "prequential_log_likelihood", "regression"]


def _data_pass(rho, rho_x, x, y):
    """One ordering of ``x (n, p)``, ``y (n, 1)``: CDFs ``v (n, 1)`` of each ``y_i`` under
    ``P_{i-1}(. | x_i)`` and the prequential terms ``log p_{i-1}(y_i | x_i) (n,)``."""
    log_cdf, log_pdf = jax.vmap(copula.standard_normal_state)(y)
    update_all = jax.vmap(copula.update, (0, 0, None, 0, None))

    def observe(state, i):
        log_cdf, log_pdf = state
        v = jnp.exp(log_cdf[i])
        weights = copula.log_covariate_alphas(i, x, x[i], rho_x)
        return update_all(log_cdf, log_pdf, v, weights, rho), (v, log_pdf[i])

    _, (v, scores) = jax.lax.scan(observe, (log_cdf, log_pdf), jnp.arange(len(y)))
    return v, scores


def prequential_log_likelihood(rho, rho_x, x, y, orderings):
    """Mean over orderings of ``(1/n) sum_i log p_{i-1}(y_i | x_i)`` on standardised
    ``x (n, p)``, ``y (n, 1)``; ``orderings (P, n)``."""
    return fitting.conditional_prequential(_data_pass, rho, rho_x, x, y, orderings)


def _point_pass(rho, rho_x, v, x_data, x_point, y_point):
    """State of ``y_point (1,)`` at ``x_point (p,)`` under ``P_n`` of one ordering."""

    def observe(state, inputs):
        i, v_i, x_i = inputs
        weight = copula.log_covariate_alpha(copula.log_alpha(i), x_point, x_i, rho_x)
        return copula.update(*state, v_i, weight, rho), None

    n = v.shape[0]
    state, _ = jax.lax.scan(observe, copula.standard_normal_state(y_point), (jnp.arange(n), v, x_data))
    return state


@jax.jit
def _averaged_state(rho, rho_x, v, x_ordered, x_points, y_points):
    """Permutation-averaged states at the pairs ``(x_points (m, p), y_points (m, 1))``."""
    per_point = jax.vmap(_point_pass, (None, None, None, None, 0, 0))
    per_order = jax.vmap(per_point, (None, None, 0, 0, None, None))(
        rho, rho_x, v, x_ordered, x_points, y_points
    )
    return jax.tree.map(lambda a: logsumexp(a, axis=0) - jnp.log(v.shape[0]), per_order)


class CopulaRegression(NamedTuple):
    """A fitted conditional copula regression (from :func:`regression`).

    Attributes:
        rho: bandwidth of ``y``; rho_x: ``(p,)`` bandwidths of the covariates.
        cdfs: ``(P, n, 1)`` CDFs of the ordered ``y_i`` under ``P_{i-1}(. | x_i)``.
        x_ordered: ``(P, n, p)`` the standardised covariates in each ordering.
        log_score: conditional prequential log-likelihood per point (standardised scale).
        x_scaler, y_scaler: the standardisations; x, y: the data as given.
    """

    rho: jax.Array
    rho_x: jax.Array
    cdfs: jax.Array
    x_ordered: jax.Array
    log_score: jax.Array
    x_scaler: Standardiser
    y_scaler: Standardiser
    x: np.ndarray
    y: np.ndarray

    def _states(self, x_points, y_points):
        dtype = self.cdfs.dtype
        return _averaged_state(
            self.rho,
            self.rho_x,
            self.cdfs,
            self.x_ordered,
            jnp.asarray(x_points, dtype),
            jnp.asarray(y_points, dtype),
        )

    def _covariates(self, name, x_points):
        points = as_rows(name, x_points, features=self.x.shape[1])
        return self.x_scaler.apply(points), points

    def log_density(self, x_points, y_points) -> np.ndarray:
        """``log p_n(y | x)`` at pairs ``x_points (m, p)``, ``y_points (m,)`` on the data's scale."""
        x_rows, _ = self._covariates("x_points", x_points)
        y_rows = as_rows("y_points", y_points, features=1)
        if len(y_rows) != len(x_rows):
            raise ValueError(f"x_points has {len(x_rows)} rows and y_points {len(y_rows)}: they must match")
        _, log_pdf = self._states(x_rows, self.y_scaler.apply(y_rows))
        return np.asarray(log_pdf) + self.y_scaler.log_jacobian()

    def cdf(self, x_points, y_points) -> np.ndarray:
        """``P_n(y | x)`` at the pairs, ``(m,)``."""
        x_rows, _ = self._covariates("x_points", x_points)
        y_rows = as_rows("y_points", y_points, features=1)
        if len(y_rows) != len(x_rows):
            raise ValueError(f"x_points has {len(x_rows)} rows and y_points {len(y_rows)}: they must match")
        log_cdf, _ = self._states(x_rows, self.y_scaler.apply(y_rows))
        return np.exp(np.asarray(log_cdf)[:, 0])

    def resample(
        self,
        x_test,
        y_grid,
        *,
        key,
        num_paths: int = 1000,
        num_steps: int = 5000,
        devices: int | None = None,
        progress_bar: bool | None = None,
    ) -> Resampled:
        """Martingale-posterior draws of ``p(y | x)`` on ``y_grid`` at each row of ``x_test``.

        Args:
            x_test: ``(m, p)`` covariates; y_grid: ``(g,)`` sorted response values.
            key, num_paths, num_steps, devices, progress_bar: as
                :meth:`~ppl.processes.martingale.CopulaDensity.resample`.

        Returns:
            :class:`~ppl.processes.martingale.resampling.Resampled` with ``density
            (B, test_point, grid_point)``, ``cdf`` (same) and the regression function
            ``mean (B, test_point)`` (trapezoid rule on ``y_grid``), on the data's scale.
        """
        key = runtime_keys.validate_key(key)
        num_paths, num_steps = check_count("num_paths", num_paths), check_count("num_steps", num_steps)
        x_rows, x_points = self._covariates("x_test", x_test)
        warn_outside("x_test", x_points, self.x)
        grid = as_rows("y_grid", y_grid, features=1)
        warn_outside("y_grid", grid, self.y)
        m, g = len(x_rows), len(grid)
        pairs_x = np.repeat(x_rows, g, axis=0)
        pairs_y = np.tile(self.y_scaler.apply(grid), (m, 1))
        state = jax.tree.map(lambda a: a.reshape(m, g, *a.shape[1:]), self._states(pairs_x, pairs_y))
        x_data = jnp.asarray(self.x_scaler.apply(self.x), self.cdfs.dtype)
        data = (self.rho, self.rho_x, x_data, jnp.asarray(x_rows, self.cdfs.dtype), jnp.asarray(len(self.x)))
        (state, _), density, change = run_paths(
            _resample_step,
            _density_readout,
            (state, jnp.zeros(len(self.x), self.cdfs.dtype)),
            data,
            key=key,
            num_paths=num_paths,
            num_steps=num_steps,
            start=_bootstrap_start,
            devices=devices,
            progress_bar=progress_bar,
            description="martingale regression",
        )
        jacobian = float(np.exp(self.y_scaler.log_jacobian()))
        density = density * jacobian
        log_cdf = state[0]
        draws = {"density": density, "cdf": np.exp(log_cdf[..., 0]), "mean": grid_mean(grid[:, 0], density)}
        dims = {
            "density": ("test_point", "grid_point"),
            "cdf": ("test_point", "grid_point"),
            "mean": ("test_point",),
        }
        coords = {"test_point": np.arange(m), "grid_point": grid[:, 0]}
        return Resampled(
            draws=draws,
            change=change * jacobian,
            num_steps=num_steps,
            dims=dims,
            coords=coords,
            method="copula regression",
        )


def _bootstrap_start(state, start_key, data):
    """A path's Bayesian-bootstrap log-weights on the data's covariates."""
    grid_state, log_weights = state
    weights = jax.random.dirichlet(start_key, jnp.ones_like(log_weights))
    return grid_state, jnp.log(weights)


def _resample_step(state, step_key, t, data):
    rho, rho_x, x_data, x_test, num_data = data
    (log_cdf, log_pdf), log_weights = state
    index = jax.random.categorical(jax.random.fold_in(step_key, 0), log_weights)
    v = jax.random.uniform(jax.random.fold_in(step_key, 1), (1,), log_cdf.dtype)
    weights = copula.log_covariate_alphas(num_data + t, x_test, x_data[index], rho_x)
    update = jax.vmap(jax.vmap(copula.update, (0, 0, None, None, None)), (0, 0, None, 0, None))
    return update(log_cdf, log_pdf, v, weights, rho), log_weights


def _density_readout(state, data):
    return jnp.exp(state[0][1])


def regression(
    x,
    y,
    *,
    key,
    num_permutations: int = 10,
    rho=None,
    rho_x=None,
    per_feature: bool = True,
    max_steps: int = 100,
) -> CopulaRegression:
    """Fit the conditional copula regression of ``y`` on ``x``.

    Args:
        x: ``(n, p)`` covariates; y: ``(n,)`` responses (both standardised internally).
        key: a JAX PRNG key for the orderings.
        num_permutations: orderings averaged over (the authors use 10).
        rho, rho_x: fixed bandwidths (``rho_x`` ``(p,)``, or scalar without
            ``per_feature``); ``None`` for both fits them from 0.8.
        per_feature: one covariate bandwidth per feature (the authors' setting for the
            regression benchmarks) or one shared.
        max_steps: L-BFGS iterations at most.

    Raises:
        ValueError: on empty, non-finite or mismatched data, a constant column, or
            bandwidths outside ``(0, 1)``; if only one of ``rho``, ``rho_x`` is given.
    """
    key = runtime_keys.validate_key(key)
    x_rows = as_rows("x", x, min_rows=2)
    y_rows = as_rows("y", y, features=1, min_rows=2)
    if len(x_rows) != len(y_rows):
        raise ValueError(
            f"x has {len(x_rows)} rows (shape {x_rows.shape}) and y {len(y_rows)}: they must match"
        )
    num_permutations = check_count("num_permutations", num_permutations)
    x_scaler, y_scaler = Standardiser.fit("x", x_rows), Standardiser.fit("y", y_rows)
    dtype = jnp.result_type(float)
    xs, ys = jnp.asarray(x_scaler.apply(x_rows), dtype), jnp.asarray(y_scaler.apply(y_rows), dtype)
    theta = fitting.covariate_theta(rho, rho_x, x_rows.shape[1], per_feature=per_feature)
    fit_bandwidth = rho is None
    orderings = fitting.orderings(key, len(x_rows), num_permutations)
    rho, rho_x, cdfs, score = fitting.fit_conditional(
        _data_pass, xs, ys, orderings, theta, fit_bandwidth=fit_bandwidth, max_steps=max_steps
    )
    if fit_bandwidth:
        fitting.warn_if_degenerate(rho, "response")
    return CopulaRegression(
        rho, rho_x, cdfs, xs[orderings], score, x_scaler, y_scaler, x_rows, y_rows[:, 0:1]
    )
