"""Noise schedules: the forward process ``x_t = alpha(t) x_0 + sigma(t) eps``.

Two families: the variance-preserving ``vp`` schedule (DDPM's continuous limit,
``alpha^2 + sigma^2 = 1``) and the variance-exploding ``ve`` schedule of EDM
(``alpha = 1``, ``sigma = t``). Every sampler sees a schedule only through
``alpha``, ``sigma``, the SDE coefficients ``drift`` ``f(t)`` and ``diffusion_squared``
``g(t)^2`` of ``dx = f x dt + g dW`` (obtained by autodiff, so a new schedule needs
only ``alpha``, ``sigma`` and the inverse of the noise-to-signal ratio), and a shared
time grid from :meth:`Schedule.timesteps`.

Example:
    >>> from ppl.smc.diffusion import vp
    >>> schedule = vp()
    >>> grid = schedule.timesteps(20)
    >>> grid.shape, float(grid[0]), float(grid[-1])
    ((21,), 1.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Schedule", "ve", "vp"]


@dataclass(frozen=True, eq=False)
class Schedule:
    """A forward noising process on ``t in [0, t_max]``, with ``alpha(0) = 1, sigma(0) = 0``.

    Attributes:
        name: ``"vp"`` or ``"ve"`` (or a user name).
        alpha: ``t -> alpha(t)``, the signal scale.
        sigma: ``t -> sigma(t)``, the noise scale.
        time_at: inverse of the noise-to-signal ratio ``lambda(t) = sigma / alpha``.
        t_max: the noise end.
        t_min: the smallest positive time of the grid (the last step goes to 0).
    """

    name: str
    alpha: Callable
    sigma: Callable
    time_at: Callable
    t_max: float
    t_min: float
    parameters: tuple = ()

    # Schedules are static configuration of jitted samplers: equal parameters must
    # hash equal, so that ``vp()`` called twice does not recompile a sampler.
    def __eq__(self, other):
        return isinstance(other, Schedule) and (self.name, self.parameters) == (other.name, other.parameters)

    def __hash__(self):
        return hash((self.name, self.parameters))

    def noise_to_signal(self, t):
        """``sigma(t) / alpha(t)``: 0 at the data end, large at the noise end."""
        return self.sigma(t) / self.alpha(t)

    def drift(self, t):
        """``f(t) = d log alpha / dt`` of the forward SDE ``dx = f x dt + g dW``."""
        return jax.grad(lambda u: jnp.log(self.alpha(u)))(jnp.asarray(t, jnp.float32))

    def diffusion_squared(self, t):
        """``g(t)^2 = d sigma^2 / dt - 2 f(t) sigma(t)^2``."""
        t = jnp.asarray(t, jnp.float32)
        return jax.grad(lambda u: self.sigma(u) ** 2)(t) - 2 * self.drift(t) * self.sigma(t) ** 2

    def timesteps(self, num_steps: int, rho: float = 7.0) -> np.ndarray:
        """Decreasing grid ``t_max = t_0 > ... > t_{num_steps} = 0``, shape ``(num_steps + 1,)``.

        The first ``num_steps`` points are spaced uniformly in ``lambda^(1/rho)`` between
        ``lambda(t_max)`` and ``lambda(t_min)`` (EDM's rule: dense near the data), the
        last point is ``0``.
        """
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        lam_max = float(self.noise_to_signal(self.t_max)) ** (1 / rho)
        lam_min = float(self.noise_to_signal(self.t_min)) ** (1 / rho)
        if num_steps == 1:
            return np.array([self.t_max, 0.0], np.float32)
        lam = np.linspace(lam_max, lam_min, num_steps) ** rho
        times = np.array([float(self.time_at(v)) for v in lam])
        times[0] = self.t_max
        return np.concatenate([times, [0.0]]).astype(np.float32)


def vp(beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3) -> Schedule:
    """Variance-preserving schedule: ``alpha(t)^2 = exp(-B(t))``.

    ``B(t) = beta_min t + (beta_max - beta_min) t^2 / 2``.

    The continuous limit of DDPM's linear ``beta`` schedule, ``t in [0, 1]``.
    """
    if not 0 < beta_min < beta_max:
        raise ValueError(f"vp needs 0 < beta_min < beta_max, got {beta_min}, {beta_max}")

    def integrated_beta(t):
        return beta_min * t + 0.5 * (beta_max - beta_min) * t**2

    def alpha(t):
        return jnp.exp(-0.5 * integrated_beta(t))

    def sigma(t):
        return jnp.sqrt(-jnp.expm1(-integrated_beta(t)))

    def time_at(noise_to_signal):
        # lambda^2 = exp(B) - 1, so B = log1p(lambda^2); solve the quadratic in t.
        b = np.log1p(np.float64(noise_to_signal) ** 2)
        slope = beta_max - beta_min
        return (-beta_min + np.sqrt(beta_min**2 + 2 * slope * b)) / slope

    return Schedule("vp", alpha, sigma, time_at, 1.0, t_min, (beta_min, beta_max, t_min))


def ve(sigma_max: float = 80.0, sigma_min: float = 2e-3) -> Schedule:
    """Variance-exploding schedule of EDM: ``alpha = 1``, ``sigma(t) = t``, ``t in [0, sigma_max]``."""
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"ve needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")

    def alpha(t):
        return jnp.ones_like(jnp.asarray(t, jnp.float32))

    def sigma(t):
        return jnp.asarray(t, jnp.float32)

    return Schedule("ve", alpha, sigma, float, sigma_max, sigma_min, (sigma_max, sigma_min))
