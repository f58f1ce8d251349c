"""Map a one-chain kernel over chains (``vmap``) and devices (``jax.shard_map``).

Kernels are written for one chain. :func:`map_chains` turns ``fn(per_chain, shared)``
into a function of a batch of chains: chains are split evenly across a 1-D device
mesh and ``vmap``-ped within each device. Chains are padded to a multiple of the
device count by the caller (:func:`plan_devices` says how), so any number of chains
runs on any number of devices.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
from jax.sharding import Mesh, PartitionSpec

__all__ = ["DevicePlan", "map_chains", "plan_devices", "set_host_device_count"]

CHAIN_AXIS = "chain"


class DevicePlan(NamedTuple):
    """How a run of ``num_chains`` chains is spread: ``num_devices`` devices, each
    running ``chains_per_device`` chains; ``padded_chains - num_chains`` are padding."""

    num_chains: int
    num_devices: int
    chains_per_device: int

    @property
    def padded_chains(self) -> int:
        return self.num_devices * self.chains_per_device


def plan_devices(num_chains: int, num_devices: int | None = None) -> DevicePlan:
    """Use up to ``num_devices`` local devices (default: all), never more than chains."""
    if num_chains < 1:
        raise ValueError(f"chains must be >= 1, got {num_chains}")
    available = jax.local_device_count()
    if num_devices is None:
        num_devices = available
    if not 1 <= num_devices <= available:
        raise ValueError(f"devices must be between 1 and {available} (local devices), got {num_devices}")
    num_devices = min(num_devices, num_chains)
    per_device = -(-num_chains // num_devices)
    return DevicePlan(num_chains, num_devices, per_device)


def map_chains(fn: Callable, num_devices: int, vectorized: bool = False) -> Callable:
    """``fn(per_chain, shared) -> out`` becomes ``mapped(batched, shared) -> batched_out``.

    ``batched`` and ``batched_out`` carry a leading chain axis whose length is a
    multiple of ``num_devices``; ``shared`` (data, schedules) is replicated.

    Within a device, chains run one after another (``lax.map``) by default: every
    chain then executes the same unbatched program whatever the number of devices,
    so its draws are bit-identical on 1 or N devices, and NUTS trees of different
    depths waste no work. ``vectorized=True`` uses ``vmap`` instead (better for
    models dominated by large array operations, e.g. on a GPU), at the price of
    bitwise reproducibility across device counts.
    """
    if vectorized:
        per_device = jax.vmap(fn, in_axes=(0, None))
    else:

        def per_device(batched, shared):
            return jax.lax.map(lambda per_chain: fn(per_chain, shared), batched)

    if num_devices == 1:
        return per_device
    mesh = Mesh(jax.local_devices()[:num_devices], (CHAIN_AXIS,))
    return jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(PartitionSpec(CHAIN_AXIS), PartitionSpec()),
        out_specs=PartitionSpec(CHAIN_AXIS),
        # Chains never communicate, so per-device values need no varying-axis typing;
        # without this, loop carries built from constants (initial states) fail to type.
        check_vma=False,
    )


def set_host_device_count(count: int) -> None:
    """Expose ``count`` CPU devices to JAX so chains run in parallel on a CPU.

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
