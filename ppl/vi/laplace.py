"""MAP and Laplace approximations in ppl's flat unconstrained space.

Both take a plain model, as ``ppl.nuts`` does (``model(*args, **kwargs)``), compile it
(:func:`ppl.compile`: one flat unconstrained vector ``u`` of length ``dim``) and find a
mode with :func:`ppl.vi.fit` on a deterministic objective:

* :func:`map_estimate` maximises ``log p(x, z)`` at ``z = constrain(u)``, without the
  Jacobian, so its mode is the posterior mode of the constrained values (what NumPyro's
  ``AutoDelta`` finds);
* :func:`laplace` maximises the density of ``u`` itself (Jacobian included), polishes
  the optimum with Newton steps, and returns the Gaussian
  ``N(u*, H^-1)`` with ``H = -hessian(log p(u))(u*)`` (NumPyro's
  ``AutoLaplaceApproximation``); for a posterior that is Gaussian in ``u`` it is exact.

The results give draws and ArviZ data as every other result does (constrained values,
deterministic sites, pointwise log-likelihood, plate dims), through the same
:func:`ppl.model.compile.constrain_draws` as MCMC and SMC.

Example:
    >>> import jax, ppl
    >>> from ppl import dist
    >>> def model(y):
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ...     ppl.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> estimate = ppl.vi.map_estimate(model, 2.0, key=jax.random.key(0), steps=500)
    >>> round(float(estimate.mode["mu"]), 2)   # posterior N(1, 1/2)
    1.0
    >>> approx = ppl.vi.laplace(model, 2.0, key=jax.random.key(0), steps=500)
    >>> round(float(approx.precision[0, 0]), 2)
    2.0
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro.distributions.util import cholesky_of_inverse
from numpyro.infer.util import log_density

from ppl.errors import ModelError
from ppl.model.compile import CompiledModel, compile, constrain_draws
from ppl.runtime.devices import to_host
from ppl.runtime.keys import validate_key
from ppl.runtime.results import Draws
from ppl.vi.fit import VIResult, fit
from ppl.vi.language import expectation

__all__ = ["LaplaceResult", "MAPResult", "laplace", "map_estimate"]

# Newton steps that polish the optimiser's end point for laplace, each kept only if it
# raises the log density; one suffices for a Gaussian, a few for a smooth mode.
MAX_NEWTON_STEPS = 5
# A Newton decrement g' H^-1 g above this (the mode more than 0.01 posterior sd away) warns.
CONVERGED_DECREMENT = 1e-4


@expectation
def constrained_log_joint(position, compiled: CompiledModel):
    """``log p(x, constrain(u))``: the log joint at the constrained values, no Jacobian."""
    values = compiled.constrain(position)
    latent = {name: values[name] for name, _ in compiled.layout}
    return log_density(compiled.model, compiled.args, compiled.kwargs, latent)[0]


@expectation
def unconstrained_log_density(position, compiled: CompiledModel):
    """``log p(u)``: the density of the flat vector, Jacobians included."""
    return compiled.logdensity(position)


def _default_optimizer(steps: int) -> optax.GradientTransformation:
    """Adam with the step size decayed from 0.1 to 0.001 over ``steps``: large moves in
    unconstrained space first, then a settled end point."""
    return optax.adam(optax.exponential_decay(0.1, int(steps), 0.01))


@jax.jit
def _newton_terms(compiled: CompiledModel, position):
    value, gradient = jax.value_and_grad(compiled.logdensity)(position)
    return value, gradient, jax.hessian(compiled.logdensity)(position)


@dataclasses.dataclass(frozen=True)
class MAPResult:
    """A point estimate: what :func:`map_estimate` returns.

    Attributes:
        compiled: the :class:`~ppl.CompiledModel` (model and data).
        position: ``(dim,)`` the estimate in the flat unconstrained space.
        mode: site name -> constrained value at ``position`` (latent and deterministic
            sites, each shaped as the site).
        fit: the :class:`~ppl.vi.VIResult` of the optimisation (objective trace,
            non-finite steps).
    """

    compiled: CompiledModel
    position: np.ndarray
    mode: dict[str, np.ndarray]
    fit: VIResult

    inference = "map"

    def positions(self, rng_key: jax.Array, num_samples: int) -> jax.Array:
        """``(num_samples, dim)`` draws in the flat space: every one is ``position``."""
        return jnp.broadcast_to(jnp.asarray(self.position), (int(num_samples), self.position.shape[0]))

    def draws(self, rng_key: jax.Array, num_samples: int) -> Draws:
        """``num_samples`` draws as :class:`~ppl.runtime.results.Draws` (one chain):
        constrained latent and deterministic sites, pointwise log-likelihood, plate dims;
        ``sample_stats`` holds the objective trace (dims ``chain``, ``fit_step``)."""
        values, loglik = to_host(constrain_draws(self.compiled, self.positions(rng_key, num_samples)))
        compiled = self.compiled
        return Draws(
            samples={name: value[None] for name, value in values.items()},
            sample_stats={"objective": np.asarray(self.fit.objective)[None]},
            stats_dims={"objective": ("chain", "fit_step")},
            log_likelihood={name: value[None] for name, value in loglik.items()},
            observed_data=compiled.observed_data,
            constant_data=compiled.constant_data,
            dims=compiled.dims,
            log_likelihood_dims=compiled.log_likelihood_dims,
            coords=compiled.coords,
            attrs={"inference": self.inference, "final_objective": float(self.fit.objective[-1])},
        )

    def to_arviz(self, rng_key: jax.Array, num_samples: int, *, dims=None, coords=None):
        """ArviZ data of :meth:`draws`."""
        return self.draws(rng_key, num_samples).to_arviz(dims=dims, coords=coords)


@dataclasses.dataclass(frozen=True)
class LaplaceResult(MAPResult):
    """The Gaussian ``N(position, precision^-1)`` in the flat unconstrained space: what
    :func:`laplace` returns (a :class:`MAPResult` whose ``position`` is the mode of the
    density of ``u``, Jacobian included).

    Attributes:
        precision: ``(dim, dim)`` minus the Hessian of ``log p(u)`` at ``position``.
        scale_tril: ``(dim, dim)`` lower Cholesky factor of the covariance
            ``precision^-1``.
    """

    precision: np.ndarray
    scale_tril: np.ndarray

    inference = "laplace"

    @property
    def covariance(self) -> np.ndarray:
        """``(dim, dim)`` ``precision^-1``."""
        return self.scale_tril @ self.scale_tril.T

    def positions(self, rng_key: jax.Array, num_samples: int) -> jax.Array:
        """``(num_samples, dim)`` draws ``position + scale_tril @ eps``, ``eps ~ N(0, I)``."""
        rng_key = validate_key(rng_key, "rng_key")
        noise = jax.random.normal(rng_key, (int(num_samples), self.position.shape[0]))
        return jnp.asarray(self.position) + noise @ jnp.asarray(self.scale_tril).T


def _find_mode(objective, model, args, kwargs, *, key, steps, optimizer, progress_bar, what):
    key = validate_key(key)
    compiled = compile(model, *args, **kwargs)
    compiled.require_continuous(what, enumeration=False)
    if compiled.dim == 0:
        raise ModelError(f"{what}: the model has no latent continuous site")
    start = compiled.init(jax.random.fold_in(key, 0))
    result = fit(
        objective,
        start,
        compiled,
        optimizer=_default_optimizer(steps) if optimizer is None else optimizer,
        steps=steps,
        key=jax.random.fold_in(key, 1),
        progress_bar=progress_bar,
    )
    return compiled, result


def _mode_values(compiled: CompiledModel, position) -> dict[str, np.ndarray]:
    values, _ = to_host(constrain_draws(compiled, jnp.asarray(position)[None]))
    return {name: value[0] for name, value in values.items()}


def map_estimate(
    model: Callable,
    *args: Any,
    key: jax.Array,
    steps: int = 1000,
    optimizer: optax.GradientTransformation | None = None,
    progress_bar: bool | None = None,
    **kwargs: Any,
) -> MAPResult:
    """The posterior mode of ``model(*args, **kwargs)``: ``argmax_z log p(x, z)``.

    The search runs in the flat unconstrained space (``z = constrain(u)``, so every
    step stays in the support) from :meth:`~ppl.CompiledModel.init`, with
    :func:`ppl.vi.fit`; the objective has no Jacobian, so the mode is that of the
    constrained values (NumPyro's ``AutoDelta``), not of ``u``.

    Args:
        model: a model function; ``*args`` and ``**kwargs`` are its data.
        key: ``jax.random`` key (the starting point, and the fit's).
        steps: optimisation steps.
        optimizer: any Optax transformation (default: Adam with the step size decayed
            from 0.1 to 0.001 over ``steps``).
        progress_bar: ``None`` shows a bar in an interactive terminal.

    Returns:
        :class:`MAPResult`: ``mode`` (site -> value), ``position`` ``(dim,)``, draws and
        ArviZ export (every draw is the mode).

    Example::

        estimate = ppl.vi.map_estimate(eight_schools, sigma, y=y, key=jax.random.key(0))
        estimate.mode["mu"]
    """
    compiled, result = _find_mode(
        constrained_log_joint,
        model,
        args,
        kwargs,
        key=key,
        steps=steps,
        optimizer=optimizer,
        progress_bar=progress_bar,
        what="map_estimate",
    )
    position = np.asarray(result.params)
    return MAPResult(compiled, position, _mode_values(compiled, position), result)


def _polish(compiled: CompiledModel, position):
    """Newton steps from ``position``; returns the point, its gradient and Hessian."""
    value, gradient, hessian = _newton_terms(compiled, position)
    for _ in range(MAX_NEWTON_STEPS):
        try:
            step = np.linalg.solve(-np.asarray(hessian, np.float64), np.asarray(gradient, np.float64))
        except np.linalg.LinAlgError:
            break
        candidate = position + step.astype(position.dtype)
        new_value, new_gradient, new_hessian = _newton_terms(compiled, candidate)
        if not (np.isfinite(new_value) and new_value >= value):
            break
        position, value, gradient, hessian = candidate, new_value, new_gradient, new_hessian
    return position, np.asarray(gradient, np.float64), np.asarray(hessian, np.float64)


def _site_of(compiled: CompiledModel, index: int) -> str:
    offset = 0
    for name, shape in compiled.layout:
        offset += int(np.prod(shape))
        if index < offset:
            return name
    return compiled.layout[-1][0]


def laplace(
    model: Callable,
    *args: Any,
    key: jax.Array,
    steps: int = 1000,
    optimizer: optax.GradientTransformation | None = None,
    progress_bar: bool | None = None,
    **kwargs: Any,
) -> LaplaceResult:
    """The Laplace approximation of ``model(*args, **kwargs)`` in the flat unconstrained space.

    ``u* = argmax_u log p(u)`` (Jacobians included), found with :func:`ppl.vi.fit` and
    polished with at most :data:`MAX_NEWTON_STEPS` Newton steps, and the Gaussian
    ``N(u*, H^-1)``, ``H = -hessian(log p)(u*)`` (``dim x dim``: meant for models with up
    to a few thousand coordinates). Draws are ``constrain(u)`` of its draws.

    Args: as :func:`map_estimate`.

    Returns:
        :class:`LaplaceResult`: ``position`` ``(dim,)``, ``precision`` and
        ``scale_tril`` ``(dim, dim)``, ``mode`` (``constrain(position)``), draws and
        ArviZ export.

    Raises:
        ModelError: ``H`` is not positive definite at the optimum (a saddle, a flat
            direction, or an unfinished optimisation), naming the site most involved.

    Warns:
        RuntimeWarning: the optimum is not converged (Newton decrement
            ``g' H^-1 g`` above :data:`CONVERGED_DECREMENT`).
    """
    compiled, result = _find_mode(
        unconstrained_log_density,
        model,
        args,
        kwargs,
        key=key,
        steps=steps,
        optimizer=optimizer,
        progress_bar=progress_bar,
        what="laplace",
    )
    position, gradient, hessian = _polish(compiled, jnp.asarray(result.params))
    precision = -(hessian + hessian.T) / 2
    eigenvalues, eigenvectors = np.linalg.eigh(precision)
    if not np.all(np.isfinite(eigenvalues)) or eigenvalues[0] <= 0:
        site = _site_of(compiled, int(np.argmax(np.abs(eigenvectors[:, 0]))))
        raise ModelError(
            f"laplace: the log density's Hessian at the optimum is not negative definite (curvature "
            f"{eigenvalues[0]:.3g} along a direction mostly in site '{site}'): a saddle, a flat "
            "direction, or an unfinished optimisation (raise steps)"
        )
    decrement = float(gradient @ np.linalg.solve(precision, gradient))
    if decrement > CONVERGED_DECREMENT:
        warnings.warn(
            f"laplace: the optimum is not converged: the mode is about {np.sqrt(decrement):.2g} posterior "
            "standard deviations away; raise steps or pass another optimizer",
            RuntimeWarning,
            stacklevel=2,
        )
    position = np.asarray(position)
    scale_tril = np.asarray(cholesky_of_inverse(jnp.asarray(precision, position.dtype)))
    return LaplaceResult(
        compiled,
        position,
        _mode_values(compiled, position),
        result,
        precision=precision.astype(position.dtype),
        scale_tril=scale_tril,
    )
