"""Alias kept for code written before the runtime layout: use :mod:`ppl.runtime.devices`
(``plan_devices(num_replicas, devices)``, ``map_replicas``, ``set_host_device_count``)."""

from ppl.runtime.devices import DevicePlan, plan_devices, set_host_device_count  # noqa: F401
