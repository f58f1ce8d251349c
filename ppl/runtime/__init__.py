"""The runtime every family stands on: keys, device plans, the progress loop, the
caching rule, and the result types with their ArviZ export.

It knows nothing of models (that is :mod:`ppl.model`) nor of any algorithm (the
families): modules here import only JAX, BlackJAX's resampling, ArviZ and each other.

- :mod:`~ppl.runtime.keys`: key validation and the ``fold_in`` derivation rule;
- :mod:`~ppl.runtime.devices`: replicas over every device of every process;
- :mod:`~ppl.runtime.loop`: the chunked jitted loop with a progress bar;
- :mod:`~ppl.runtime.cache`: static configuration by value, the persistent compilation cache;
- :mod:`~ppl.runtime.results` and :mod:`~ppl.runtime.arviz`: result types, ArviZ groups, netCDF.
"""

from ppl.runtime import arviz, cache, devices, keys, loop, results
from ppl.runtime.cache import by_value, enable_persistent_cache
from ppl.runtime.devices import DevicePlan, map_replicas, plan_devices, set_host_device_count, to_host
from ppl.runtime.keys import replica_keys, validate_key
from ppl.runtime.loop import loop_until, progress_enabled, scan_in_chunks
from ppl.runtime.results import Draws, WeightedSamples, to_inference_data

__all__ = [
    "DevicePlan",
    "Draws",
    "WeightedSamples",
    "arviz",
    "by_value",
    "cache",
    "devices",
    "enable_persistent_cache",
    "keys",
    "loop",
    "loop_until",
    "map_replicas",
    "plan_devices",
    "progress_enabled",
    "replica_keys",
    "results",
    "scan_in_chunks",
    "set_host_device_count",
    "to_host",
    "to_inference_data",
    "validate_key",
]
