"""A diffusion model of a prior: a network in one of three parameterisations plus its schedule.

With ``x_t = alpha x_0 + sigma eps`` the three parameterisations are interchangeable:

* score ``s(x, t) ~ grad log p_t(x)``,
* noise prediction ``eps(x, t) = -sigma s(x, t)``,
* denoiser (Tweedie's ``x0``) ``D(x, t) = (x + sigma^2 s(x, t)) / alpha``.

:class:`DiffusionPrior` takes any one and exposes all three, for one particle
(``x`` of shape ``(dim,)``, ``t`` a scalar); samplers ``vmap`` over particles. It is a
JAX pytree whose leaves are the network parameters, so a sampler compiled for one
prior runs another prior of the same structure (new weights, a new Gaussian mixture)
without recompiling.

Example:
    >>> import jax.numpy as jnp
    >>> from ppl.smc.diffusion import DiffusionPrior, vp
    >>> prior = DiffusionPrior(vp(), dim=2, score_fn=lambda x, t: -x)  # N(0, I) at every t
    >>> prior.noise(jnp.ones(2), 0.5).shape
    (2,)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ppl.smc.diffusion.mixture import GaussianMixture
from ppl.smc.diffusion.schedule import Schedule

__all__ = ["DiffusionPrior"]


@jax.tree_util.register_pytree_node_class
class DiffusionPrior:
    """Prior defined by a score, noise-prediction or denoiser function and a schedule.

    Args:
        schedule: the :class:`~ppl.smc.diffusion.Schedule` the network was trained with.
        dim: length of ``x``.
        score_fn, noise_fn, denoiser_fn: exactly one; ``(x (dim,), t ()) -> (dim,)``, or
            ``(params, x, t) -> (dim,)`` when ``params`` is given.
        params: network parameters (any pytree), passed to the function as its first argument.
        noise_end: the law of ``x_{t_max}`` as a
            :class:`~ppl.smc.diffusion.GaussianMixture`; default ``N(0, (alpha^2 + sigma^2) I)``
            at ``t_max`` (data of unit scale). Samplers start from it.
        denoiser_variance: ``tr Cov[x_0 | x_t = x] / dim``, which the shared reverse kernel adds
            to its variance (see :meth:`denoiser_variance`): a function ``(x, t) -> ()`` (or
            ``(params, x, t)``), ``"jacobian"`` (default: from the denoiser's Jacobian,
            ``Cov[x_0 | x_t] = (sigma^2 / alpha) dD/dx``; its trace exactly for
            ``dim <= 32`` (``dim`` JVPs per particle and step), else by one Rademacher probe
            (one JVP)),
            or ``"zero"`` (the plain DDPM / DDIM kernel, which treats ``x_0`` as known given ``x_t``).

    Raises:
        ValueError: if not exactly one network is given, or its output shape is not ``(dim,)``.
    """

    def __init__(
        self,
        schedule: Schedule,
        dim: int,
        *,
        score_fn: Callable | None = None,
        noise_fn: Callable | None = None,
        denoiser_fn: Callable | None = None,
        params=None,
        noise_end=None,
        denoiser_variance: Callable | str = "jacobian",
    ):
        given = {"score_fn": score_fn, "noise_fn": noise_fn, "denoiser_fn": denoiser_fn}
        named = [name for name, fn in given.items() if fn is not None]
        if len(named) != 1:
            raise ValueError(
                f"DiffusionPrior needs exactly one of score_fn, noise_fn, denoiser_fn; got {named or 'none'}"
            )
        if not isinstance(schedule, Schedule):
            raise TypeError(
                f"schedule must be a ppl.smc.diffusion.Schedule (vp() or ve()), got {type(schedule).__name__}"
            )
        self.schedule, self.dim, self.parameterisation = schedule, int(dim), named[0][: -len("_fn")]
        self.network, self.params = given[named[0]], params
        if not (callable(denoiser_variance) or denoiser_variance in ("jacobian", "zero")):
            raise ValueError(
                f"denoiser_variance must be a function, 'jacobian' or 'zero', got {denoiser_variance!r}"
            )
        self.variance_fn = denoiser_variance
        if noise_end is None:
            t = schedule.t_max
            variance = float(schedule.alpha(t) ** 2 + schedule.sigma(t) ** 2)
            noise_end = GaussianMixture(jnp.ones(1), jnp.zeros((1, self.dim)), variance)
        self.noise_end = noise_end
        x, t = jax.ShapeDtypeStruct((self.dim,), jnp.float32), jax.ShapeDtypeStruct((), jnp.float32)
        out = jax.eval_shape(self._network, x, t)
        if getattr(out, "shape", None) != (self.dim,):
            raise ValueError(
                f"the {named[0]} returns shape {getattr(out, 'shape', type(out).__name__)} for x of shape "
                f"({self.dim},) and a scalar t; it must return shape ({self.dim},) (is dim right, and does "
                "the network take one particle, not a batch?)"
            )
        if noise_end.dim != self.dim:
            raise ValueError(f"noise_end has dimension {noise_end.dim}, the prior has dim = {self.dim}")

    # -- pytree: parameters and the noise-end law are data; the rest is static.
    def tree_flatten(self):
        static = (self.schedule, self.dim, self.parameterisation, self.network, self.variance_fn)
        return (self.params, self.noise_end), static

    @classmethod
    def tree_unflatten(cls, static, children):
        prior = object.__new__(cls)
        prior.schedule, prior.dim, prior.parameterisation, prior.network, prior.variance_fn = static
        prior.params, prior.noise_end = children
        return prior

    def _network(self, x, t):
        return self.network(x, t) if self.params is None else self.network(self.params, x, t)

    def score(self, x: jax.Array, t) -> jax.Array:
        """``grad log p_t(x)``, shape ``(dim,)``."""
        alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)
        if self.parameterisation == "score":
            return self._network(x, t)
        if self.parameterisation == "noise":
            return -self._network(x, t) / sigma
        return (alpha * self._network(x, t) - x) / sigma**2

    def noise(self, x: jax.Array, t) -> jax.Array:
        """Predicted noise ``eps = -sigma(t) * score``, shape ``(dim,)``."""
        if self.parameterisation == "noise":
            return self._network(x, t)
        return -self.schedule.sigma(t) * self.score(x, t)

    def denoise(self, x: jax.Array, t) -> jax.Array:
        """Tweedie's posterior mean ``E[x_0 | x_t = x] = (x + sigma^2 score) / alpha``, shape ``(dim,)``."""
        if self.parameterisation == "denoiser":
            return self._network(x, t)
        alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)
        if self.parameterisation == "noise":
            return (x - sigma * self._network(x, t)) / alpha
        return (x + sigma**2 * self._network(x, t)) / alpha

    def denoiser_variance(self, x: jax.Array, t) -> jax.Array:
        """``tr Cov[x_0 | x_t = x] / dim``, shape ``()`` (see the ``denoiser_variance`` argument).

        The reverse kernel's variance is the bridge variance plus ``a^2`` times this
        (:func:`~ppl.smc.diffusion.base.ddim_moments`), which is exact for isotropic Gaussian data.
        """
        if callable(self.variance_fn):
            fn = self.variance_fn
            return fn(x, t) if self.params is None else fn(self.params, x, t)
        if self.variance_fn == "zero":
            return jnp.zeros((), x.dtype)
        scale = self.schedule.sigma(t) ** 2 / self.schedule.alpha(t)
        return jnp.maximum(scale * self._jacobian_trace(x, t) / self.dim, 0.0)

    def _jacobian_trace(self, x, t):
        """``tr dD/dx`` at ``x``: exact (``dim`` JVPs) for ``dim <= 32``, else Hutchinson's
        estimate with one Rademacher probe seeded by the bits of ``x[0]`` and ``t`` (a
        deterministic function of the particle, so the kernel stays a function of ``(x, t)``,
        while the probe's off-diagonal error changes from particle to particle and step to
        step instead of repeating: one fixed probe was 38% low on a correlated Gaussian)."""

        def along(probe):
            return probe @ jax.jvp(lambda z: self.denoise(z, t), (x,), (probe,))[1]

        if self.dim <= 32:
            return jnp.sum(jax.vmap(along)(jnp.eye(self.dim, dtype=x.dtype)))
        bits = [jax.lax.bitcast_convert_type(jnp.asarray(v, jnp.float32), jnp.uint32) for v in (x[0], t)]
        seed = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), bits[0]), bits[1])
        return along(jax.random.rademacher(seed, (self.dim,), x.dtype))

    def sample_initial(self, rng_key: jax.Array, num_samples: int) -> jax.Array:
        """Draws from the noise end ``p_{t_max}``, shape ``(num_samples, dim)``."""
        return self.noise_end.sample(rng_key, num_samples)
