"""Copula density estimation and its martingale posterior (univariate and multivariate).

:func:`density` fits the copula predictive ``p_n`` of ``n`` points in ``d`` dimensions
(the factorised multivariate form of :mod:`~ppl.processes.martingale.copula`), one
bandwidth or one per feature chosen by prequential log-likelihood averaged over random
orderings. :meth:`CopulaDensity.resample` imputes the rest of the population by
predictive resampling and returns draws of the density (and, in 1-D, of its CDF and
mean) on a grid: the martingale posterior.

Example:
    >>> import jax, numpy as np
    >>> from ppl.processes import martingale
    >>> rng = np.random.default_rng(0)
    >>> y = np.concatenate([rng.normal(-2, 0.5, 20), rng.normal(1, 0.5, 10)])  # bimodal
    >>> fit = martingale.density(y, key=jax.random.key(0), num_permutations=2)
    >>> grid = np.linspace(-3, 3, 7)
    >>> fit.log_density(grid).shape
    (7,)
    >>> draws = fit.resample(grid, key=jax.random.key(1), num_paths=4, num_steps=50)
    >>> draws["density"].shape
    (4, 7)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from ppl.processes.martingale import copula, fitting
from ppl.processes.martingale.data import Standardiser, as_rows, check_count, warn_outside
from ppl.processes.martingale.resampling import Resampled, grid_mean, run_paths
from ppl.runtime import keys as runtime_keys

__all__ = ["CopulaDensity", "density", "prequential_log_likelihood"]


def _data_pass(rho, rows):
    """One ordering: the conditional CDFs ``v (n, d)`` of each point under ``P_{i-1}`` and
    the prequential terms ``log p_{i-1}(y_i) (n,)``."""
    log_cdf, log_pdf = jax.vmap(copula.standard_normal_state)(rows)
    update_all = jax.vmap(copula.update, (0, 0, None, None, None))

    def observe(state, i):
        log_cdf, log_pdf = state
        v = jnp.exp(log_cdf[i])
        return update_all(log_cdf, log_pdf, v, copula.log_alpha(i), rho), (v, log_pdf[i])

    _, (v, scores) = jax.lax.scan(observe, (log_cdf, log_pdf), jnp.arange(rows.shape[0]))
    return v, scores


def prequential_log_likelihood(rho, rows, orderings):
    """Mean over orderings of ``(1/n) sum_i log p_{i-1}(y_i)`` on standardised ``rows (n, d)``;
    ``orderings (P, n)``; ``rho`` scalar or ``(d,)``."""
    scores = jax.vmap(lambda order: _data_pass(rho, rows[order])[1])(orderings)
    return jnp.mean(scores)


def _point_pass(rho, v, point):
    """The state of ``point (d,)`` under ``P_n`` of one ordering whose CDFs are ``v (n, d)``."""

    def observe(state, inputs):
        i, v_i = inputs
        return copula.update(*state, v_i, copula.log_alpha(i), rho), None

    state, _ = jax.lax.scan(observe, copula.standard_normal_state(point), (jnp.arange(v.shape[0]), v))
    return state


@jax.jit
def _averaged_state(rho, v, points):
    """Permutation-averaged ``(log_cdf (m, d), log_pdf (m,))`` at ``points (m, d)``."""
    per_order = jax.vmap(jax.vmap(_point_pass, (None, None, 0)), (None, 0, None))(rho, v, points)
    num = v.shape[0]
    return jax.tree.map(lambda a: logsumexp(a, axis=0) - jnp.log(num), per_order)


@functools.partial(jax.jit, static_argnames=("fit_bandwidth", "max_steps"))
def _fit(rows, orderings, theta, *, fit_bandwidth, max_steps):
    def objective(theta):
        return prequential_log_likelihood(jax.nn.sigmoid(theta), rows, orderings)

    if fit_bandwidth:
        theta = fitting.maximise(objective, theta, max_steps=max_steps)
    rho = jax.nn.sigmoid(theta)
    v, scores = jax.vmap(lambda order: _data_pass(rho, rows[order]))(orderings)
    return rho, v, jnp.mean(scores)


class CopulaDensity(NamedTuple):
    """A fitted copula predictive density (from :func:`density`).

    Attributes:
        rho: the bandwidth, ``()`` or ``(d,)``.
        cdfs: ``(P, n, d)`` conditional CDFs of the ordered data under ``P_{i-1}`` per
            ordering (all that prediction and resampling need).
        log_score: prequential log-likelihood per point (standardised scale, averaged
            over orderings) at ``rho``.
        scaler: the standardisation of the data.
        data: ``(n, d)`` the data as given.
    """

    rho: jax.Array
    cdfs: jax.Array
    log_score: jax.Array
    scaler: Standardiser
    data: np.ndarray

    @property
    def num_features(self) -> int:
        return self.data.shape[1]

    def _standardised(self, name, points):
        points = as_rows(name, points, features=self.num_features)
        return self.scaler.apply(points), points

    def log_density(self, points) -> np.ndarray:
        """``log p_n`` at ``points (m,)`` or ``(m, d)`` on the data's scale, ``(m,)``."""
        rows, _ = self._standardised("points", points)
        _, log_pdf = _averaged_state(self.rho, self.cdfs, jnp.asarray(rows, self.cdfs.dtype))
        return np.asarray(log_pdf) + self.scaler.log_jacobian()

    def conditional_cdf(self, points) -> np.ndarray:
        """``P_n(y_j | y_<j)`` at ``points``, ``(m, d)`` (averaged over orderings)."""
        rows, _ = self._standardised("points", points)
        log_cdf, _ = _averaged_state(self.rho, self.cdfs, jnp.asarray(rows, self.cdfs.dtype))
        return np.exp(np.asarray(log_cdf))

    def resample(
        self,
        grid,
        *,
        key,
        num_paths: int = 1000,
        num_steps: int = 5000,
        devices: int | None = None,
        progress_bar: bool | None = None,
    ) -> Resampled:
        """Martingale-posterior draws of the density on ``grid`` by predictive resampling.

        Args:
            grid: ``(g,)`` (1-D data) or ``(g, d)`` points.
            key: a JAX PRNG key; path ``b`` uses ``fold_in(key, b)``.
            num_paths: posterior draws ``B``; num_steps: imputed points per path ``T``
                (the authors use 5000; convergence is reported in ``change``).
            devices: spread the paths over this many devices (``None``: all).

        Returns:
            :class:`~ppl.processes.martingale.resampling.Resampled` with ``density
            (B, grid_point)`` on the data's scale, and in 1-D ``cdf (B, grid_point)`` and
            ``mean (B,)`` (trapezoid rule on the grid: make it cover the mass).

        Raises:
            ValueError: on a bad grid, ``num_paths`` or ``num_steps`` below 1.
        """
        key = runtime_keys.validate_key(key)
        num_paths, num_steps = check_count("num_paths", num_paths), check_count("num_steps", num_steps)
        rows, points = self._standardised("grid", grid)
        warn_outside("grid", points, self.data)
        state = _averaged_state(self.rho, self.cdfs, jnp.asarray(rows, self.cdfs.dtype))
        data = (self.rho, jnp.asarray(self.cdfs.shape[1]))
        (log_cdf, _), density, change = run_paths(
            _resample_step,
            _density_readout,
            state,
            data,
            key=key,
            num_paths=num_paths,
            num_steps=num_steps,
            devices=devices,
            progress_bar=progress_bar,
            description="martingale density",
        )
        jacobian = float(np.exp(self.scaler.log_jacobian()))
        draws = {"density": density * jacobian}
        dims = {"density": ("grid_point",)}
        coords = {"grid_point": np.arange(len(points))}
        if self.num_features == 1:
            draws |= {"cdf": np.exp(log_cdf[..., 0]), "mean": grid_mean(points[:, 0], draws["density"])}
            dims |= {"cdf": ("grid_point",), "mean": ()}
            coords = {"grid_point": points[:, 0]}
        return Resampled(
            draws=draws,
            change=change * jacobian,
            num_steps=num_steps,
            dims=dims,
            coords=coords,
            method="copula density",
        )


def _resample_step(state, step_key, t, data):
    rho, num_data = data
    log_cdf, log_pdf = state
    v = jax.random.uniform(step_key, log_cdf.shape[-1:], log_cdf.dtype)
    update_all = jax.vmap(copula.update, (0, 0, None, None, None))
    return update_all(log_cdf, log_pdf, v, copula.log_alpha(num_data + t), rho)


def _density_readout(state, data):
    return jnp.exp(state[1])


def density(
    y,
    *,
    key,
    num_permutations: int = 10,
    rho=None,
    per_feature: bool = False,
    max_steps: int = 100,
) -> CopulaDensity:
    """Fit the copula predictive density of ``y``.

    Args:
        y: ``(n,)`` or ``(n, d)`` data (standardised internally with the mean and the
            ``ddof = 0`` standard deviation).
        key: a JAX PRNG key for the orderings (ordering ``p`` from ``fold_in(key, p)``).
        num_permutations: orderings averaged over (the authors use 10).
        rho: a fixed bandwidth in ``(0, 1)`` (scalar, or ``(d,)`` with ``per_feature``);
            ``None`` fits it by prequential log-likelihood from 0.9 (the authors' start).
        per_feature: one bandwidth per feature instead of one for all.
        max_steps: L-BFGS iterations at most.

    Raises:
        ValueError: on empty or non-finite data, a constant feature, ``rho`` outside
            ``(0, 1)`` or of the wrong shape.
    """
    key = runtime_keys.validate_key(key)
    data = as_rows("y", y, min_rows=2)
    num_permutations = check_count("num_permutations", num_permutations)
    scaler = Standardiser.fit("y", data)
    rows = jnp.asarray(scaler.apply(data), jnp.result_type(float))
    shape = (data.shape[1],) if per_feature else ()
    theta = fitting.logit(fitting.initial_rho(rho, shape, default=0.9))
    fit_bandwidth = rho is None
    orderings = fitting.orderings(key, len(data), num_permutations)
    rho, cdfs, score = _fit(rows, orderings, theta, fit_bandwidth=fit_bandwidth, max_steps=max_steps)
    if fit_bandwidth:
        fitting.warn_if_degenerate(rho, "density")
    return CopulaDensity(rho, cdfs, score, scaler, data)
