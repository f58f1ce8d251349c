"""ArviZ groups from arrays, and netCDF round trips.

Groups are built directly as ``xarray.Dataset``s following ArviZ's schema (dims
``chain``/``draw`` first, plate names as dimension names, a coordinate for every
dimension), then wrapped as ``arviz.InferenceData`` on arviz 0.x or
``xarray.DataTree`` on arviz 1.x. ``az.from_dict`` is avoided on purpose: its
signature changed between the two. The result types of
:mod:`ppl.runtime.results` are the only callers of :func:`to_dataset` in `ppl`.

Which of the two: ``InferenceData`` when arviz 0.x is installed (even with
``arviz-base`` beside it: ``import arviz`` is then 0.x, and its functions expect
``InferenceData``); ``DataTree`` when arviz is 1.x, or not installed at all, as with
the parts of 1.x that install on Python 3.11 (``arviz-base``, ``arviz-stats``,
``arviz-plots``; arviz 1.x itself needs Python 3.12). The choice is read from the
installed packages' metadata, without importing them. On the ``DataTree`` path
:func:`load` is ``xarray.open_datatree`` (which is what arviz 1.x's ``from_netcdf``
is), so it needs neither arviz nor arviz-base.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

# ArviZ and xarray are imported where they are used, not with ppl: importing ArviZ takes
# about a second (half of `import ppl`), and a run that never exports should not pay it.

__all__ = ["from_groups", "load", "save", "to_dataset"]


def _installed(package: str) -> str | None:
    """The installed version of ``package``, or None."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None


_ARVIZ_VERSION = _installed("arviz")
# DataTree unless arviz 0.x is what `import arviz` gives (see the module docstring).
_ARVIZ_1 = _ARVIZ_VERSION is None or int(_ARVIZ_VERSION.split(".")[0]) >= 1


def _attrs() -> dict[str, str]:
    attrs = {
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "inference_library": "ppl",
        "inference_library_version": version("ppl"),
    }
    for package in ("arviz", "arviz-base"):
        if (installed := _installed(package)) is not None:
            attrs[f"{package.replace('-', '_')}_version"] = installed
    return attrs


def to_dataset(
    draws: Mapping[str, np.ndarray],
    dims: Mapping[str, tuple[str, ...]],
    coords: Mapping[str, np.ndarray],
    sample_dims: tuple[str, ...] = ("chain", "draw"),
    attrs: Mapping | None = None,
    strict: bool = True,
) -> xr.Dataset:
    """One ArviZ group from arrays whose leading axes are ``sample_dims``.

    ``dims[name]`` names the axes after ``sample_dims``; a variable whose ``dims``
    entry starts with ``sample_dims[0]`` gives all of its dims instead (a per-step
    statistic ``("chain", "step")`` in ``sample_stats``). Variables without ``dims``
    get ``{name}_dim_{i}``; every dimension gets a coordinate (``coords`` where given,
    else ``arange``). A coordinate whose length differs from the variable's raises,
    unless ``strict=False`` (groups on new data, e.g. a longer forecast), where
    ``arange`` replaces it.
    """
    import xarray as xr

    variables, all_coords = {}, {}
    for name, value in draws.items():
        value = np.asarray(value)
        given = tuple(dims.get(name, ()))
        if given and sample_dims and given[0] == sample_dims[0]:
            full_dims = given
        else:
            event_shape = value.shape[len(sample_dims) :]
            var_dims = given or tuple(f"{name}_dim_{i}" for i in range(len(event_shape)))
            full_dims = tuple(sample_dims) + var_dims
        if len(full_dims) != value.ndim:
            raise ValueError(f"variable '{name}' has shape {value.shape} but dims {full_dims}")
        for dim, size in zip(full_dims, value.shape, strict=True):
            coord = np.asarray(coords[dim]) if dim in coords else np.arange(size)
            if len(coord) != size and not strict:
                coord = np.arange(size)
            if len(coord) != size:
                raise ValueError(
                    f"coordinate '{dim}' has {len(coord)} values but variable '{name}' has size {size} there"
                )
            all_coords.setdefault(dim, coord)
        variables[name] = (full_dims, value)
    return xr.Dataset(variables, coords=all_coords, attrs=_attrs() | dict(attrs or {}))


def from_groups(groups: Mapping[str, xr.Dataset]):
    """Wrap groups as ``az.InferenceData`` (arviz 0.x) or ``xr.DataTree`` (arviz 1.x, or
    arviz-base without arviz); empty groups are left out."""
    groups = {name: ds for name, ds in groups.items() if ds is not None and len(ds.data_vars)}
    if _ARVIZ_1:
        import xarray as xr

        return xr.DataTree.from_dict(groups)
    import arviz as az

    return az.InferenceData(**groups)


def save(data, path: str) -> None:
    """Write ArviZ data (``InferenceData`` or ``DataTree``) to a netCDF file."""
    data.to_netcdf(path)


def load(path: str):
    """Read ArviZ data written by :func:`save`, fully into memory: ``InferenceData`` on
    arviz 0.x, ``DataTree`` otherwise (``xarray.open_datatree``, arviz 1.x's
    ``from_netcdf``)."""
    if _ARVIZ_1:
        import xarray as xr

        with xr.open_datatree(path) as data:
            return data.load()
    import arviz as az

    data = az.from_netcdf(path)
    if hasattr(data, "load"):
        data.load()
    return data
