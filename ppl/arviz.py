"""Conversion of every `ppl` result to ArviZ, and netCDF round trips.

Groups are built directly as ``xarray.Dataset``s following ArviZ's schema (dims
``chain``/``draw`` first, plate names as dimension names, a coordinate for every
dimension), then wrapped as ``arviz.InferenceData`` on arviz 0.x or
``xarray.DataTree`` on arviz 1.x. ``az.from_dict`` is avoided on purpose: its
signature changed between the two.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from importlib.metadata import version

import arviz as az
import numpy as np
import xarray as xr

__all__ = ["from_groups", "load", "save", "to_dataset", "to_inference_data"]

_ARVIZ_1 = int(version("arviz").split(".")[0]) >= 1


def _attrs() -> dict[str, str]:
    return {
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "inference_library": "ppl",
        "inference_library_version": version("ppl"),
        "arviz_version": version("arviz"),
    }


def to_dataset(
    draws: Mapping[str, np.ndarray],
    dims: Mapping[str, tuple[str, ...]],
    coords: Mapping[str, np.ndarray],
    sample_dims: tuple[str, ...] = ("chain", "draw"),
) -> xr.Dataset:
    """One ArviZ group from arrays whose leading axes are ``sample_dims``.

    Variables without ``dims`` get ``{name}_dim_{i}``; every dimension gets a
    coordinate (``coords`` where given, else ``arange``).
    """
    variables, all_coords = {}, {}
    for name, value in draws.items():
        value = np.asarray(value)
        event_shape = value.shape[len(sample_dims) :]
        var_dims = tuple(dims.get(name, ())) or tuple(f"{name}_dim_{i}" for i in range(len(event_shape)))
        if len(var_dims) != len(event_shape):
            raise ValueError(
                f"variable '{name}' has shape {event_shape} after {sample_dims} "
                f"but {len(var_dims)} dims {var_dims}"
            )
        full_dims = tuple(sample_dims) + var_dims
        for dim, size in zip(full_dims, value.shape, strict=True):
            coord = np.asarray(coords[dim]) if dim in coords else np.arange(size)
            if len(coord) != size:
                raise ValueError(
                    f"coordinate '{dim}' has {len(coord)} values but variable '{name}' has size {size} there"
                )
            all_coords.setdefault(dim, coord)
        variables[name] = (full_dims, value)
    return xr.Dataset(variables, coords=all_coords, attrs=_attrs())


def from_groups(groups: Mapping[str, xr.Dataset]):
    """Wrap groups as ``az.InferenceData`` (arviz 0.x) or ``xr.DataTree`` (arviz 1.x)."""
    groups = {name: ds for name, ds in groups.items() if ds is not None and len(ds.data_vars)}
    if _ARVIZ_1:
        return xr.DataTree.from_dict(groups)
    return az.InferenceData(**groups)


def _merged(posterior, coords, dims):
    compiled = posterior.compiled
    return compiled.coords | dict(coords or {}), compiled.dims | dict(dims or {})


def to_inference_data(posterior, *, prior=None, posterior_predictive=None, coords=None, dims=None):
    """ArviZ data for an MCMC :class:`~ppl.Posterior`.

    Groups: ``posterior``, ``sample_stats``, ``log_likelihood`` (pointwise, one variable
    per observed site), ``observed_data``, ``constant_data``; ``prior`` and
    ``prior_predictive`` from ``prior=ppl.predictive(model, None, ...)``;
    ``posterior_predictive`` from ``ppl.predictive(model, posterior, ...)``.

    Example:
        >>> idata = posterior.to_arviz()  # doctest: +SKIP
        >>> az.summary(idata)              # doctest: +SKIP
    """
    compiled = posterior.compiled
    coords, dims = _merged(posterior, coords, dims)
    observed = compiled.observed_data
    groups = {
        "posterior": to_dataset(posterior.samples, dims, coords),
        "sample_stats": to_dataset(posterior.sample_stats, {}, coords),
        "log_likelihood": to_dataset(posterior.log_likelihood, dims, coords),
        "observed_data": to_dataset(observed, dims, coords, sample_dims=()),
        "constant_data": to_dataset(compiled.constant_data, {}, coords, sample_dims=()),
    }
    if prior is not None:
        with_chain = {name: np.asarray(value)[None] for name, value in prior.items()}
        groups["prior"] = to_dataset({k: v for k, v in with_chain.items() if k not in observed}, dims, coords)
        groups["prior_predictive"] = to_dataset(
            {k: v for k, v in with_chain.items() if k in observed}, dims, coords
        )
    if posterior_predictive is not None:
        groups["posterior_predictive"] = to_dataset(posterior_predictive, dims, coords)
    return from_groups(groups)


def save(data, path: str) -> None:
    """Write ArviZ data (``InferenceData`` or ``DataTree``) to a netCDF file."""
    data.to_netcdf(path)


def load(path: str):
    """Read ArviZ data written by :func:`save`, fully into memory."""
    data = az.from_netcdf(path)
    if hasattr(data, "load"):
        data.load()
    return data
