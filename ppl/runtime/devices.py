"""Device plans: replicas spread over every device of every process.

A *replica* is one independent copy of a kernel's work: a chain (MCMC), an island
(an independent particle system in SMC), a gradient estimate (VI), a path or an
episode in the families to come. Kernels are written for one replica; this module
maps them over replicas with ``vmap`` or ``lax.map`` inside a device and
``jax.shard_map`` across a one-dimensional mesh of **global** devices
(``jax.devices()``), so the same call runs unchanged on one CPU, N host devices,
N GPUs, or N processes under ``jax.distributed.initialize``.

The number of replicas is always a setting of the algorithm, never a consequence of
the device count: :func:`plan_devices` uses at most one device per replica and pads
the replicas to a multiple of the devices; padded replicas are computed and dropped.
With ``method="sequential"`` every replica runs the same unbatched program whatever
the device count; XLA may still fuse that program's arithmetic differently when a device
holds one replica instead of several, so results are bit-identical across device counts
and processes where the compiled arithmetic is (measured: NUTS/HMC, VI, tempered SMC)
and agree to float rounding elsewhere (the diffusion samplers' denoisers).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ppl.runtime import devices
    >>> plan = devices.plan_devices(3)            # 3 replicas over all devices (at most 3)
    >>> mapped = devices.map_replicas(lambda x, shift: x + shift, plan)
    >>> devices.to_host(jax.jit(mapped)(jnp.arange(plan.padded_replicas), 10))[:3]
    array([10, 11, 12], dtype=int32)
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, PartitionSpec

__all__ = [
    "METHODS",
    "REPLICA_AXIS",
    "DevicePlan",
    "map_replicas",
    "ordered_devices",
    "plan_devices",
    "set_host_device_count",
    "to_host",
]

#: The mesh axis that replicas are spread over.
REPLICA_AXIS = "replica"
#: How replicas that share a device run: ``vmap`` (one batched program) or ``lax.map``
#: (one after another, the same unbatched program whatever the device count).
METHODS = ("vectorized", "sequential")


@dataclasses.dataclass(frozen=True)
class DevicePlan:
    """``num_replicas`` replicas on ``devices`` (a tuple of global ``jax.Device``),
    ``replicas_per_device`` each; the last ``padded_replicas - num_replicas`` are padding.

    Hashable, so a plan is static configuration of a jitted program.
    """

    num_replicas: int
    devices: tuple

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def replicas_per_device(self) -> int:
        return math.ceil(self.num_replicas / self.num_devices)

    @property
    def padded_replicas(self) -> int:
        return self.num_devices * self.replicas_per_device

    @property
    def mesh(self) -> Mesh:
        return Mesh(np.array(self.devices), (REPLICA_AXIS,))


def ordered_devices() -> list:
    """Every device of every process, taken round-robin over processes (the first device
    of each process, then the second of each, ...), so the first ``k`` devices of the
    list share the work between processes as evenly as ``k`` allows."""
    position: dict[int, int] = {}
    ranked = []
    for device in jax.devices():
        index = position.get(device.process_index, 0)
        position[device.process_index] = index + 1
        ranked.append(((index, device.process_index), device))
    return [device for _, device in sorted(ranked, key=lambda pair: pair[0])]


def plan_devices(num_replicas: int, devices: int | None = None, *, replicas: str = "replicas") -> DevicePlan:
    """Spread ``num_replicas`` replicas over at most ``devices`` global devices.

    Args:
        num_replicas: chains, islands, estimates, ... (``replicas`` names them in errors).
        devices: ``None`` for every device of every process, or how many to use. A run
            never uses more devices than replicas; under several processes every process
            gets at least one device (replicas are padded if needed).

    Raises:
        ValueError: naming the argument, if ``num_replicas < 1`` or ``devices`` is not
            ``None`` or an integer between 1 and ``jax.device_count()``.
    """
    if not isinstance(num_replicas, int | np.integer) or num_replicas < 1:
        raise ValueError(f"{replicas} must be an integer >= 1, got {num_replicas!r}")
    available, processes = jax.device_count(), jax.process_count()
    if devices is None:
        requested = available
    elif isinstance(devices, int | np.integer) and processes <= devices <= available:
        requested = int(devices)
    else:
        lowest = max(1, processes)
        raise ValueError(
            f"devices must be None (all {available} devices of {processes} process(es)) or an integer "
            f"between {lowest} and {available}, got {devices!r}"
        )
    count = min(requested, max(int(num_replicas), processes))
    return DevicePlan(int(num_replicas), tuple(ordered_devices()[:count]))


def map_replicas(fn: Callable, plan: DevicePlan, method: str = "sequential") -> Callable:
    """``fn(per_replica, shared) -> out`` becomes ``mapped(batched, shared) -> batched_out``.

    ``batched`` and ``batched_out`` are pytrees whose leaves carry a leading replica axis
    of length ``plan.padded_replicas``; ``shared`` (data, parameters, schedules) is the
    same for every replica. Call the result inside ``jax.jit``. Reductions over the
    replica axis (e.g. a mean of gradient estimates) are plain ``jnp`` operations on the
    output; XLA inserts the collectives.

    Args:
        fn: the one-replica function.
        plan: from :func:`plan_devices`.
        method: ``"sequential"`` (``lax.map``: every replica runs the same unbatched
            program on any number of devices, and no replica waits for another's
            data-dependent loop; see the module docstring on bit-identity) or
            ``"vectorized"`` (``vmap``: one batched program per device, faster when
            per-step overhead dominates, e.g. small models or accelerators).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "vectorized":
        local = jax.vmap(fn, in_axes=(0, None))
    else:

        def local(batched, shared):
            return jax.lax.map(lambda per_replica: fn(per_replica, shared), batched)

    if plan.num_devices == 1 and jax.process_count() == 1:
        return local
    return jax.shard_map(
        local,
        mesh=plan.mesh,
        in_specs=(PartitionSpec(REPLICA_AXIS), PartitionSpec()),
        out_specs=PartitionSpec(REPLICA_AXIS),
        # Replicas never communicate, so per-device values need no varying-axis typing;
        # without this, loop carries built from constants (initial states) fail to type.
        check_vma=False,
    )


def to_host(tree):
    """Every array leaf as a NumPy array holding the *global* value.

    Under several processes an output sharded over the mesh is gathered from all of
    them (a collective: every process calls this in the same order, as every process
    runs the same driver code).
    """

    def one(leaf):
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return np.asarray(leaf)
        if leaf.is_fully_replicated:
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree.map(one, tree)


def set_host_device_count(count: int) -> None:
    """Expose ``count`` CPU devices to JAX so replicas run in parallel on a CPU.

    Must run before JAX initialises its backends (before the first computation);
    warns if called too late, because XLA reads the flag only once.

    Example:
        >>> import ppl
        >>> ppl.set_host_device_count(4)  # doctest: +SKIP
    """
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", os.environ.get("XLA_FLAGS", ""))
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized() and jax.local_device_count() != count:
        warnings.warn(
            f"set_host_device_count({count}) was called after JAX initialised "
            f"({jax.local_device_count()} device(s)); it takes effect only in a new process. "
            "Call it before any JAX computation.",
            stacklevel=2,
        )
