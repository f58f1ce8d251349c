"""NNGP and NTK kernels of infinitely wide networks, in neural-tangents' conventions.

Describe an architecture with a small ``stax``-like combinator language and get its
kernels on your inputs::

    net = serial(Dense(512, W_std=1.5, b_std=0.05), Relu(), Dense(512, W_std=1.5), Relu(),
                 Dense(1, W_std=1.0))
    k = net.kernel(x1, x2)                      # NNGP, (n1, n2)
    k, theta = net.kernel(x1, x2, get=("nngp", "ntk"))
    params = net.init(key, x1.shape[1:])        # a finite network of these widths
    f = net.apply(params, x1)                   # (n1, 1)

Conventions (neural-tangents' ``'ntk'`` parameterisation; the NNGP is the same in the
``'standard'`` one): a Dense or Conv layer computes ``W_std / sqrt(fan_in) * W x +
b_std * b`` with standard-normal ``W, b``, so its kernel map is
``K -> W_std^2 * mean(K over fan-in) + b_std^2`` (the input layer sees ``x . x' / d``).
An elementwise activation maps ``K -> E[phi(u) phi(v)]`` (:mod:`ppl.processes.activations`),
and the NTK follows ``Theta -> K_new + W_std^2 Theta`` through affine layers and
``Theta -> E[phi' phi'] * Theta`` through activations. Widths (``out_dim``, channels)
only matter for finite networks.

Images are ``(n, height, width, channels)`` and 1-D signals ``(n, length, channels)``
(channels last, as in neural-tangents and Flax). Convolutions have stride 1 and
``"SAME"`` (zero padding, ``(k - 1) // 2`` before) or ``"VALID"`` padding; a convolutional
stack ends in :class:`Flatten` or :class:`GlobalAvgPool` before its readout. With
``Flatten`` only the diagonal of the spatial covariance is tracked (``(n1, n2, *spatial)``
per layer); ``GlobalAvgPool`` needs the full spatial covariance (``(*spatial, *spatial)``
per pair), so keep images small there.

Kernels are computed in tiles of at most ``block_size`` rows and columns under
``jax.jit``, row tiles spread over devices with the runtime's device plan; every entry
is the same computation whatever the tiling, so 1 or N devices give the same matrix.
They are computed in the dtype of the inputs: enable ``jax_enable_x64`` and pass
float64 arrays for float64 kernels.

Example:
    >>> import jax.numpy as jnp
    >>> from ppl.processes import nngp
    >>> net = nngp.serial(nngp.Dense(1, W_std=1.0), nngp.Relu(), nngp.Dense(1, W_std=1.0))
    >>> net.kernel(jnp.ones((2, 3)), get="nngp").shape
    (2, 2)
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppl.processes import activations
from ppl.runtime.devices import DevicePlan, map_replicas, plan_devices

__all__ = [
    "Conv",
    "Dense",
    "Elementwise",
    "Erf",
    "Flatten",
    "Gelu",
    "GlobalAvgPool",
    "Identity",
    "Network",
    "Relu",
    "Tanh",
    "kernel",
    "mlp",
    "serial",
]

GETS = ("nngp", "ntk")
#: Elements a tile may hold before :func:`kernel` splits it (times the activation's
#: quadrature nodes); 2^24 float64 values are 128 MiB.
TILE_ELEMENTS = 2**24


class _Pair(NamedTuple):
    """The kernel of one input pair at some layer.

    ``v1``, ``v2``: each input's own covariance (per position; per position pair when
    ``full``); ``k``: the NNGP cross covariance; ``t``: the NTK (zeros before the first
    affine layer). Dense stacks: scalars.
    """

    v1: Any
    v2: Any
    k: Any
    t: Any


class _Layout(NamedTuple):
    spatial: int  # number of spatial axes still present (0 after a readout)
    full: bool  # track the full spatial covariance (GlobalAvgPool needs it)


def _check_std(name: str, value) -> None:
    if isinstance(value, jax.core.Tracer):
        return
    array = np.asarray(value)
    if array.shape != () or not np.isfinite(array) or array < 0:
        raise ValueError(
            f"{name} must be a finite scalar >= 0 (a standard deviation; variance = {name}^2), got {value!r}"
        )


def _check_dim(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _diagonal(full, spatial: int):
    """The ``(s, s)`` entries of a ``(*S, *S)`` array, as ``S``."""
    shape = full.shape[:spatial]
    size = math.prod(shape)
    return jnp.diagonal(full.reshape(size, size)).reshape(shape)


def _affine(state: _Pair, w_std, b_std, average) -> _Pair:
    w2, b2 = jnp.square(w_std), jnp.square(b_std)
    v1, v2, k = (w2 * average(a) + b2 for a in (state.v1, state.v2, state.k))
    t = None if state.t is None else k + w2 * average(state.t)
    return _Pair(v1, v2, k, t)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["W_std", "b_std"], meta_fields=["out_dim"])
@dataclasses.dataclass(frozen=True)
class Dense:
    """A fully connected layer of width ``out_dim`` on the last axis.

    Kernel map: ``K -> W_std^2 K + b_std^2`` (the input layer sees ``x . x' / d``).
    ``W_std`` and ``b_std`` may be traced (empirical Bayes, NUTS over them).
    """

    out_dim: int = 1
    W_std: Any = 1.0
    b_std: Any = 0.0

    def __post_init__(self):
        _check_dim("Dense out_dim", self.out_dim)
        _check_std("W_std", self.W_std)
        _check_std("b_std", self.b_std)

    def _kernel(self, state: _Pair, layout: _Layout) -> tuple[_Pair, _Layout]:
        return _affine(state, self.W_std, self.b_std, lambda a: a), layout

    def _init(self, key, in_shape):
        wkey, bkey = jax.random.split(key)
        params = {
            "W": jax.random.normal(wkey, (in_shape[-1], self.out_dim)),
            "b": jax.random.normal(bkey, (self.out_dim,)),
        }
        return (*in_shape[:-1], self.out_dim), params

    def _apply(self, params, x):
        fan_in = x.shape[-1]
        return self.W_std / math.sqrt(fan_in) * (x @ params["W"]) + self.b_std * params["b"]


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["W_std", "b_std"],
    meta_fields=["out_chan", "filter_shape", "padding"],
)
@dataclasses.dataclass(frozen=True)
class Conv:
    """A stride-1 convolution with ``out_chan`` channels and a 1-D or 2-D ``filter_shape``.

    Kernel map: ``K(s, s') -> W_std^2 * mean over offsets d of K(s + d, s' + d) + b_std^2``,
    zero padded for ``"SAME"`` (border positions average fewer terms but divide by the
    full filter size, as a zero-padded finite network does).
    """

    out_chan: int = 1
    filter_shape: tuple = (3, 3)
    padding: str = "SAME"
    W_std: Any = 1.0
    b_std: Any = 0.0

    def __post_init__(self):
        _check_dim("Conv out_chan", self.out_chan)
        shape = tuple(self.filter_shape)
        if len(shape) not in (1, 2) or not all(isinstance(k, int | np.integer) and k >= 1 for k in shape):
            raise ValueError(f"Conv filter_shape must be 1 or 2 positive integers, got {self.filter_shape!r}")
        object.__setattr__(self, "filter_shape", tuple(int(k) for k in shape))
        if self.padding not in ("SAME", "VALID"):
            raise ValueError(f"Conv padding must be 'SAME' or 'VALID', got {self.padding!r}")
        _check_std("W_std", self.W_std)
        _check_std("b_std", self.b_std)

    def _average(self, array, groups: int):
        rank = len(self.filter_shape)
        if self.padding == "SAME":
            array = jnp.pad(array, [((k - 1) // 2, k // 2) for k in self.filter_shape] * groups)
        out = [array.shape[axis] - self.filter_shape[axis % rank] + 1 for axis in range(array.ndim)]
        total = 0.0
        for offset in itertools.product(*(range(k) for k in self.filter_shape)):
            index = tuple(
                slice(offset[axis % rank], offset[axis % rank] + out[axis]) for axis in range(array.ndim)
            )
            total = total + array[index]
        return total / math.prod(self.filter_shape)

    def _kernel(self, state: _Pair, layout: _Layout) -> tuple[_Pair, _Layout]:
        # Network._check_input has matched the input's spatial axes to the filter.
        groups = 2 if layout.full else 1
        state = _affine(state, self.W_std, self.b_std, lambda a: self._average(a, groups))
        return state, layout

    def _init(self, key, in_shape):
        rank = len(self.filter_shape)
        wkey, bkey = jax.random.split(key)
        params = {
            "W": jax.random.normal(wkey, (*self.filter_shape, in_shape[-1], self.out_chan)),
            "b": jax.random.normal(bkey, (self.out_chan,)),
        }
        spatial = in_shape[:rank]
        if self.padding == "VALID":
            spatial = tuple(s - k + 1 for s, k in zip(spatial, self.filter_shape, strict=True))
        return (*spatial, self.out_chan), params

    def _apply(self, params, x):
        rank = len(self.filter_shape)
        names = ("NWC", "WIO", "NWC") if rank == 1 else ("NHWC", "HWIO", "NHWC")
        fan_in = x.shape[-1] * math.prod(self.filter_shape)
        y = jax.lax.conv_general_dilated(x, params["W"], (1,) * rank, self.padding, dimension_numbers=names)
        return self.W_std / math.sqrt(fan_in) * y + self.b_std * params["b"]


class _Activation:
    """An elementwise nonlinearity; subclasses give ``_expectations(a, b, c)``."""

    def _kernel(self, state: _Pair, layout: _Layout) -> tuple[_Pair, _Layout]:
        if layout.full:
            d1, d2 = _diagonal(state.v1, layout.spatial), _diagonal(state.v2, layout.spatial)
            tail = (1,) * layout.spatial
            a1, b1 = d1.reshape(d1.shape + tail), d1.reshape(tail + d1.shape)
            a2, b2 = d2.reshape(d2.shape + tail), d2.reshape(tail + d2.shape)
            ak, bk = a1, b2
        else:
            a1 = b1 = state.v1
            a2 = b2 = state.v2
            ak, bk = state.v1, state.v2
        v1 = self._expectations(a1, b1, state.v1)[0]
        v2 = self._expectations(a2, b2, state.v2)[0]
        k, slope = self._expectations(ak, bk, state.k)
        t = None if state.t is None else slope * state.t
        return _Pair(v1, v2, k, t), layout

    def _init(self, key, in_shape):
        return in_shape, {}

    def _apply(self, params, x):
        return self.fn(x)


def _stateless(cls):
    return jax.tree_util.register_dataclass(
        dataclasses.dataclass(frozen=True)(cls), data_fields=[], meta_fields=[]
    )


@_stateless
class Relu(_Activation):
    """``max(x, 0)``: the arc-cosine kernel of order 1 (closed form)."""

    fn = staticmethod(jax.nn.relu)
    _expectations = staticmethod(activations.relu_expectations)


@_stateless
class Erf(_Activation):
    """``erf(x)``: Williams' arcsine kernel (closed form)."""

    fn = staticmethod(jax.scipy.special.erf)
    _expectations = staticmethod(activations.erf_expectations)


@_stateless
class Identity(_Activation):
    """The identity (a linear network; closed form)."""

    fn = staticmethod(lambda x: x)
    _expectations = staticmethod(activations.identity_expectations)


@functools.partial(jax.tree_util.register_dataclass, data_fields=[], meta_fields=["fn", "degree"])
@dataclasses.dataclass(frozen=True)
class Elementwise(_Activation):
    """Any elementwise ``fn`` (written in ``jax.numpy``), by ``degree x degree``
    Gauss-Hermite quadrature (:func:`~ppl.processes.activations.gauss_hermite_expectations`).

    Example: ``Elementwise(jnp.sin)``. Gradients in the weight variances need ``fn`` twice
    differentiable. Pass a named function rather than a new lambda per call to reuse
    compiled kernels.
    """

    fn: Callable
    degree: int = 48

    def __post_init__(self):
        if not callable(self.fn):
            raise TypeError(f"Elementwise needs a callable activation, got {self.fn!r}")
        _check_dim("Elementwise degree", self.degree)

    def _expectations(self, a, b, c):
        return activations.gauss_hermite_expectations(self.fn, a, b, c, self.degree)


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


def Gelu(degree: int = 48) -> Elementwise:  # noqa: N802 (a layer constructor, as in stax)
    """The exact GELU ``x Phi(x)``, by quadrature."""
    return Elementwise(_gelu, degree)


def Tanh(degree: int = 48) -> Elementwise:  # noqa: N802
    """``tanh(x)``, by quadrature."""
    return Elementwise(jnp.tanh, degree)


@_stateless
class Flatten:
    """Readout of a convolutional stack: all positions and channels as one vector.

    Kernel: the mean over positions of ``K(s, s)``.
    """

    def _kernel(self, state: _Pair, layout: _Layout) -> tuple[_Pair, _Layout]:
        def mean(a):
            return jnp.mean(_diagonal(a, layout.spatial) if layout.full else a)

        return _Pair(*(None if a is None else mean(a) for a in state)), _Layout(0, False)

    def _init(self, key, in_shape):
        return (math.prod(in_shape),), {}

    def _apply(self, params, x):
        return x.reshape(x.shape[0], -1)


@_stateless
class GlobalAvgPool:
    """Readout of a convolutional stack: the mean over positions of every channel.

    Kernel: the mean of ``K(s, s')`` over all position pairs (tracks the full spatial
    covariance through the stack: memory ``(positions)^2`` per input pair).
    """

    def _kernel(self, state: _Pair, layout: _Layout) -> tuple[_Pair, _Layout]:
        return _Pair(*(None if a is None else jnp.mean(a) for a in state)), _Layout(0, False)

    def _init(self, key, in_shape):
        return (in_shape[-1],), {}

    def _apply(self, params, x):
        return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


@functools.partial(jax.tree_util.register_dataclass, data_fields=["layers"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class Network:
    """A sequence of layers (from :func:`serial`): its kernels, and finite networks of it.

    A pytree whose leaves are the layers' ``W_std`` / ``b_std``, so ``jax.grad`` and
    ``jax.jit`` see through it (empirical Bayes differentiates the log marginal likelihood
    with respect to a ``Network``).
    """

    layers: tuple

    @property
    def _full(self) -> bool:
        return any(isinstance(layer, GlobalAvgPool) for layer in self.layers)

    def kernel(
        self, x1, x2=None, *, get="nngp", diagonal: bool = False, block_size: int | None = None, devices=None
    ):
        """Shorthand for :func:`kernel` ``(self, x1, x2, ...)``."""
        return kernel(self, x1, x2, get=get, diagonal=diagonal, block_size=block_size, devices=devices)

    def init(self, key, input_shape: tuple) -> list:
        """Standard-normal parameters of a finite network with the layers' widths, for
        inputs of shape ``input_shape`` (without the batch axis)."""
        params, shape = [], tuple(input_shape)
        for layer, layer_key in zip(self.layers, jax.random.split(key, len(self.layers)), strict=True):
            shape, layer_params = layer._init(layer_key, shape)
            params.append(layer_params)
        return params

    def apply(self, params: list, x):
        """The finite network's outputs on a batch ``x`` of shape ``(n, *input_shape)``."""
        for layer, layer_params in zip(self.layers, params, strict=True):
            x = layer._apply(layer_params, x)
        return x

    def _pair(self, x, xp, ntk: bool):
        """``(nngp, ntk)`` of one input pair (``ntk`` is ``None`` unless asked for)."""
        spatial = x.ndim - 1
        full = self._full
        if spatial == 0:
            v1, v2, k = (jnp.dot(a, b) / x.shape[-1] for a, b in ((x, x), (xp, xp), (x, xp)))
        elif full:
            v1, v2, k = (
                jnp.tensordot(a, b, axes=([-1], [-1])) / x.shape[-1] for a, b in ((x, x), (xp, xp), (x, xp))
            )
        else:
            v1, v2, k = (jnp.sum(a * b, axis=-1) / x.shape[-1] for a, b in ((x, x), (xp, xp), (x, xp)))
        state = _Pair(v1, v2, k, jnp.zeros_like(k) if ntk else None)
        layout = _Layout(spatial, full)
        for layer in self.layers:
            state, layout = layer._kernel(state, layout)
        return state.k, state.t

    def _check_input(self, name: str, x) -> None:
        spatial = x.ndim - 2
        layout = spatial
        for layer in self.layers:
            if isinstance(layer, Conv):
                if layout != len(layer.filter_shape):
                    raise ValueError(
                        f"{name} has shape {tuple(x.shape)}: Conv with filter_shape {layer.filter_shape} "
                        f"needs {len(layer.filter_shape)} spatial axis/axes before the channels"
                    )
                if layer.padding == "VALID":
                    small = [s for s, k in zip(x.shape[1:-1], layer.filter_shape, strict=True) if s < k]
                    if small:
                        raise ValueError(
                            f"{name} has shape {tuple(x.shape)}: too small for a VALID Conv "
                            f"{layer.filter_shape}"
                        )
            elif isinstance(layer, Flatten | GlobalAvgPool):
                layout = 0
        if layout:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)} with {layout} spatial axis/axes, but the network has no "
                "Flatten() or GlobalAvgPool() readout: add one before the last Dense"
            )


def serial(*layers) -> Network:
    """Compose layers into a :class:`Network` (``stax.serial``).

    Raises:
        ValueError: if no layers are given, or an entry is not a layer.
    """
    if not layers:
        raise ValueError("serial() needs at least one layer (a network of depth 0 has no kernel)")
    for position, layer in enumerate(layers):
        if not hasattr(layer, "_kernel"):
            raise TypeError(f"serial(...) argument {position} is not a layer: {layer!r}")
    return Network(tuple(layers))


ACTIVATIONS = {"relu": Relu, "erf": Erf, "identity": Identity, "gelu": Gelu, "tanh": Tanh}


def mlp(
    depth: int, activation: str = "relu", *, W_std=1.0, b_std=0.0, last_W_std=1.0, width: int = 512
) -> Network:  # noqa: N803
    """``depth`` hidden layers ``[Dense(width, W_std, b_std), activation]`` and a
    ``Dense(1, last_W_std)`` readout without bias: the authors' regression architecture.

    Args:
        depth: number of hidden layers (>= 1).
        activation: one of ``"relu"``, ``"erf"``, ``"identity"``, ``"gelu"``, ``"tanh"``.
    """
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1 (hidden layers), got {depth!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    hidden = []
    for _ in range(int(depth)):
        hidden += [Dense(width, W_std=W_std, b_std=b_std), ACTIVATIONS[activation]()]
    return serial(*hidden, Dense(1, W_std=last_W_std))


def _as_input(name: str, x):
    if not hasattr(x, "shape"):
        x = np.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = jnp.asarray(x, dtype=float)
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have a leading batch axis: (n, features) or (n, *spatial, channels), "
            f"got shape {tuple(x.shape)}"
        )
    if not isinstance(x, jax.core.Tracer) and not bool(np.all(np.isfinite(np.asarray(x)))):
        bad = np.argwhere(~np.isfinite(np.asarray(x)))
        raise ValueError(
            f"{name} has {len(bad)} non-finite entries (first at index {tuple(int(i) for i in bad[0])}); "
            f"shape {tuple(x.shape)}"
        )
    return jnp.asarray(x)


def _tile_size(net: Network, example, requested: int | None) -> int:
    if requested is not None:
        return _check_dim("block_size", requested)
    positions = math.prod(example.shape[1:-1]) if example.ndim > 2 else 1
    per_entry = positions**2 if net._full else positions
    nodes = max([layer.degree**2 for layer in net.layers if isinstance(layer, Elementwise)], default=1)
    return max(8, 2 ** int(math.log2(math.sqrt(TILE_ELEMENTS / (per_entry * nodes)))))


def _pad_rows(x, total: int):
    """``x`` with its last row repeated up to ``total`` rows (padding rows are dropped)."""
    extra = total - x.shape[0]
    return jnp.pad(x, [(0, extra)] + [(0, 0)] * (x.ndim - 1), mode="edge") if extra else x


@functools.partial(jax.jit, static_argnames=("gets", "diagonal", "block", "plan"))
def _kernel_program(net: Network, x1, x2, gets: tuple, diagonal: bool, block: int, plan: DevicePlan):
    ntk = "ntk" in gets

    def select(pair):
        nngp, theta = pair
        return tuple(nngp if g == "nngp" else theta for g in gets)

    n1 = x1.shape[0]
    rows = min(block, n1)
    row_blocks = _pad_rows(x1, rows * plan.padded_replicas).reshape(plan.padded_replicas, rows, *x1.shape[1:])
    if diagonal:
        paired = _pad_rows(x2, rows * plan.padded_replicas).reshape(row_blocks.shape)

        def one(blocks, shared):
            return jax.vmap(lambda x, xp: select(net._pair(x, xp, ntk)))(*blocks)

        out = map_replicas(one, plan)((row_blocks, paired), None)
        return tuple(o.reshape(-1)[:n1] for o in out)

    n2 = x2.shape[0]
    cols = min(block, n2)
    col_blocks = _pad_rows(x2, -(-n2 // cols) * cols).reshape(-1, cols, *x2.shape[1:])

    def tile(a, b):
        return jax.vmap(lambda x: jax.vmap(lambda xp: select(net._pair(x, xp, ntk)))(b))(a)

    def one(row_block, columns):
        return jax.lax.map(lambda col_block: tile(row_block, col_block), columns)

    out = map_replicas(one, plan)(row_blocks, col_blocks)  # (row blocks, col blocks, rows, cols)
    return tuple(o.transpose(0, 2, 1, 3).reshape(o.shape[0] * rows, -1)[:n1, :n2] for o in out)


def kernel(
    net: Network,
    x1,
    x2=None,
    *,
    get="nngp",
    diagonal: bool = False,
    block_size: int | None = None,
    devices=None,
):
    """The NNGP and/or NTK of ``net`` between the rows of ``x1`` and ``x2``.

    Args:
        net: from :func:`serial` or :func:`mlp`.
        x1: inputs ``(n1, d)``, or ``(n1, *spatial, channels)`` for convolutional nets.
        x2: inputs ``(n2, ...)`` of the same feature shape; ``None`` for ``x1`` (the Gram).
        get: ``"nngp"``, ``"ntk"``, or a tuple of them (then a tuple is returned).
        diagonal: return ``k(x1[i], x2[i])`` ``(n1,)`` only (``x2=None``: the variances).
        block_size: rows and columns per tile (default: tiles of at most
            :data:`TILE_ELEMENTS` values, quadrature nodes included).
        devices: how many devices share the row tiles (``None``: all).

    Returns:
        ``(n1, n2)`` (or ``(n1,)`` with ``diagonal``), or a tuple of them.

    Raises:
        ValueError: naming ``x1`` / ``x2`` and their shapes, on mismatched feature shapes,
            non-finite entries, or inputs the architecture cannot take.
    """
    gets = (get,) if isinstance(get, str) else tuple(get)
    if not gets or any(g not in GETS for g in gets):
        raise ValueError(f"get must be 'nngp', 'ntk' or a tuple of them, got {get!r}")
    if not isinstance(net, Network):
        raise TypeError(f"net must be a Network from serial(...) or mlp(...), got {type(net).__name__}")
    x1 = _as_input("x1", x1)
    x2 = x1 if x2 is None else _as_input("x2", x2)
    if x1.shape[1:] != x2.shape[1:]:
        raise ValueError(
            f"x1 and x2 must have the same feature shape: x1 {tuple(x1.shape)}, x2 {tuple(x2.shape)}"
        )
    if diagonal and x1.shape[0] != x2.shape[0]:
        raise ValueError(
            f"diagonal=True pairs rows: x1 {tuple(x1.shape)} and x2 {tuple(x2.shape)} need the same n"
        )
    dtype = jnp.result_type(x1, x2)
    x1, x2 = x1.astype(dtype), x2.astype(dtype)
    net._check_input("x1", x1)
    block = _tile_size(net, x1, block_size)
    rows = min(block, x1.shape[0])
    plan = plan_devices(-(-x1.shape[0] // rows), devices, replicas="row tiles")
    out = _kernel_program(net, x1, x2, gets, bool(diagonal), block, plan)
    return out[0] if isinstance(get, str) else out
