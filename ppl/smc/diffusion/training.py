"""Denoising score matching: fit a noise-prediction network to data, get a :class:`DiffusionPrior`.

The loss is DDPM's ``eps``-matching objective (Ho et al. 2020; Vincent 2011),

    L(theta) = E_{t, x_0, eps} |eps_theta(alpha_t x_0 + sigma_t eps, t) - eps|^2 / d,

minimised with any Optax optimiser. Its minimiser is ``eps*(x, t) = -sigma_t grad log p_t(x)``,
so the fitted network is a score model of the data's noised laws. Times are drawn
uniformly on ``[t_min, t_max]`` for ``vp`` (DDPM) and log-uniformly in ``sigma = t`` for
``ve``; pass ``time_sampler`` for another law.

:class:`NoiseMLP` is a small residual MLP for vector data (sinusoidal features of
``log(sigma / alpha)``, inputs scaled by ``1 / sqrt(alpha^2 + sigma^2)``, zero-initialised
output). Any ``(params, x (d,), t) -> (d,)`` function with its own parameters works instead.

Example:
    >>> import jax
    >>> from ppl.smc.diffusion import train_score, vp
    >>> data = jax.random.normal(jax.random.key(0), (500, 2))
    >>> fit = train_score(data, vp(), key=jax.random.key(1), num_steps=200)
    >>> fit.prior.denoise(data[0], 0.5).shape, fit.losses.shape
    ((2,), (200,))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ppl.runtime.cache import ByValue, by_value
from ppl.runtime.keys import validate_key
from ppl.runtime.loop import scan_in_chunks, strongly_typed
from ppl.smc.diffusion.prior import DiffusionPrior
from ppl.smc.diffusion.schedule import Schedule

__all__ = ["NoiseMLP", "ScoreFit", "TrainState", "dsm_loss", "train_score", "train_step"]


@dataclass(frozen=True)
class NoiseMLP:
    """Residual MLP ``(params, x (dim,), t) -> eps (dim,)`` conditioned on the noise level.

    Frozen and compared by configuration, so two priors built from equal networks share
    compiled samplers.

    Args:
        schedule: the schedule whose ``alpha``, ``sigma`` the network conditions on.
        dim: length of ``x``.
        hidden: width of the hidden layers.
        depth: number of residual blocks.
        time_features: sinusoidal features of ``log(sigma / alpha)`` (an even number).
    """

    schedule: Schedule
    dim: int
    hidden: int = 256
    depth: int = 3
    time_features: int = 32

    def init(self, rng_key) -> dict:
        """Parameters: ``{"input", "blocks", "output"}``; the output layer starts at zero."""
        keys = jax.random.split(rng_key, 2 + 2 * self.depth)

        def dense(key, fan_in, fan_out):
            return {"w": jax.random.normal(key, (fan_in, fan_out)) / np.sqrt(fan_in), "b": jnp.zeros(fan_out)}

        blocks = [
            {
                "hidden": dense(keys[2 + 2 * i], self.hidden + self.time_features, self.hidden),
                "out": dense(keys[3 + 2 * i], self.hidden, self.hidden),
            }
            for i in range(self.depth)
        ]
        output = {"w": jnp.zeros((self.hidden, self.dim)), "b": jnp.zeros(self.dim)}
        return {
            "input": dense(keys[0], self.dim + self.time_features, self.hidden),
            "blocks": blocks,
            "output": output,
        }

    def __call__(self, params, x, t):
        alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)
        half = self.time_features // 2
        frequencies = jnp.exp(jnp.linspace(0.0, jnp.log(100.0), half))
        phase = jnp.log(sigma / alpha) * frequencies
        features = jnp.concatenate([jnp.sin(phase), jnp.cos(phase)])
        h = _dense(params["input"], jnp.concatenate([x / jnp.sqrt(alpha**2 + sigma**2), features]))
        for block in params["blocks"]:
            inner = jax.nn.silu(_dense(block["hidden"], jnp.concatenate([jax.nn.silu(h), features])))
            h = h + _dense(block["out"], inner)
        return _dense(params["output"], jax.nn.silu(h))


def _dense(layer, x):
    return x @ layer["w"] + layer["b"]


def _default_time_sampler(schedule: Schedule) -> Callable:
    if schedule.name == "ve":
        low, high = np.log(schedule.t_min), np.log(schedule.t_max)
        return lambda key, shape: jnp.exp(jax.random.uniform(key, shape, minval=low, maxval=high))
    return lambda key, shape: jax.random.uniform(key, shape, minval=schedule.t_min, maxval=schedule.t_max)


def dsm_loss(network: Callable, params, rng_key, batch, schedule: Schedule, time_sampler=None) -> jax.Array:
    """The ``eps``-matching loss on a batch ``(B, d)``, averaged over the batch and ``d``.

    Args:
        network: ``(params, x (d,), t) -> eps (d,)``.
        params: its parameters.
        rng_key: for the times and the noise.
        batch: clean data ``(B, d)``.
        schedule: the forward process.
        time_sampler: ``(key, shape) -> t``; default as described in the module docstring.
    """
    time_key, noise_key = jax.random.split(rng_key)
    sampler = time_sampler or _default_time_sampler(schedule)
    t = sampler(time_key, batch.shape[:1])
    noise = jax.random.normal(noise_key, batch.shape)
    noised = schedule.alpha(t)[:, None] * batch + schedule.sigma(t)[:, None] * noise
    predicted = jax.vmap(network, in_axes=(None, 0, 0))(params, noised, t)
    return jnp.mean((predicted - noise) ** 2)


class ScoreFit(NamedTuple):
    """What :func:`train_score` returns.

    Attributes:
        prior: the fitted :class:`DiffusionPrior` (noise parameterisation).
        params: the network's parameters.
        losses: the minibatch loss at every step ``(num_steps,)``.
    """

    prior: DiffusionPrior
    params: object
    losses: jax.Array


class TrainState(NamedTuple):
    """The network's parameters and the optimiser's state."""

    params: object
    opt_state: object


def train_step(
    rng_key, state: TrainState, data, *, network, optimizer, schedule: Schedule, time_sampler, batch_size: int
) -> tuple[TrainState, jax.Array]:
    """One optimiser step on the :func:`dsm_loss` of a minibatch drawn with replacement;
    returns ``(state, loss)``."""
    batch_key, loss_key = jax.random.split(rng_key)
    batch = data[jax.random.randint(batch_key, (batch_size,), 0, data.shape[0])]
    loss, grads = jax.value_and_grad(dsm_loss, argnums=1)(
        network, state.params, loss_key, batch, schedule, time_sampler
    )
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state), loss


@partial(jax.jit, static_argnames=("network", "optimizer", "schedule", "time_sampler", "batch_size"))
def _advance(state, steps, data, key, *, network, optimizer: ByValue, schedule, time_sampler, batch_size):
    def body(state, t):
        return train_step(
            jax.random.fold_in(key, t),
            state,
            data,
            network=network,
            optimizer=optimizer.value,
            schedule=schedule,
            time_sampler=time_sampler,
            batch_size=batch_size,
        )

    return jax.lax.scan(body, state, steps)


def train_score(
    data,
    schedule: Schedule,
    *,
    key,
    network: Callable | None = None,
    params=None,
    optimizer: optax.GradientTransformation | None = None,
    num_steps: int = 5000,
    batch_size: int = 256,
    time_sampler: Callable | None = None,
    progress_bar: bool | None = None,
) -> ScoreFit:
    """Fit a noise-prediction network to ``data`` by denoising score matching.

    Args:
        data: training points ``(n, d)``, of roughly unit scale (standardise first).
        schedule: the forward process, e.g. :func:`~ppl.smc.diffusion.vp`.
        key: a ``jax.random`` key (initialisation, minibatches, times, noise); step ``i``
            uses ``fold_in(fit_key, i)``.
        network: ``(params, x (d,), t) -> eps (d,)``, hashable; default ``NoiseMLP(schedule, d)``.
        params: initial parameters; default ``network.init(key)``.
        optimizer: an Optax transformation; default Adam with a cosine-decayed step from ``1e-3``.
        num_steps: optimisation steps (``lax.scan`` in the runtime's chunked loop).
        batch_size: minibatch size (drawn with replacement).
        time_sampler: ``(key, shape) -> t``; see :func:`dsm_loss`.
        progress_bar: ``None`` shows a bar in an interactive terminal.

    Returns:
        A :class:`ScoreFit`; ``fit.prior`` goes into any sampler of :mod:`ppl.smc.diffusion`.

    Raises:
        ValueError: if ``data`` is not ``(n, d)`` or not finite, or ``num_steps``/``batch_size`` < 1.
    """
    data = jnp.asarray(data, jnp.float32)
    if data.ndim != 2 or data.shape[0] < 1:
        raise ValueError(f"data must have shape (n, d) with n >= 1, got {data.shape}")
    if not bool(jnp.all(jnp.isfinite(data))):
        raise ValueError(
            f"data of shape {data.shape} has {int(jnp.sum(~jnp.isfinite(data)))} non-finite entries"
        )
    if int(num_steps) < 1 or int(batch_size) < 1:
        raise ValueError(f"num_steps and batch_size must be >= 1, got {num_steps} and {batch_size}")
    init_key, fit_key = jax.random.split(validate_key(key))
    network = network or NoiseMLP(schedule, data.shape[1])
    if params is None:
        if not hasattr(network, "init"):
            raise ValueError("pass params= for a network without an init(key) method")
        params = network.init(init_key)
    optimizer = optimizer or optax.adam(optax.cosine_decay_schedule(1e-3, int(num_steps)))
    advance = partial(
        _advance,
        data=data,
        key=fit_key,
        network=network,
        optimizer=by_value(optimizer, params),
        schedule=schedule,
        time_sampler=time_sampler,
        batch_size=int(batch_size),
    )
    state, losses = scan_in_chunks(
        advance,
        strongly_typed(TrainState(params, optimizer.init(params))),
        np.arange(int(num_steps), dtype=np.int32),
        progress_bar=progress_bar,
        description="score matching",
    )
    prior = DiffusionPrior(schedule, data.shape[1], noise_fn=network, params=state.params)
    return ScoreFit(prior, state.params, losses)
