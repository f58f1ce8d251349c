"""Every public name of every public subpackage is in the API reference (Optax's coverage rule).

A name is public if it is in the ``__all__`` of ``ppl`` or of a ``ppl`` module reached
from there through ``__all__`` (``ppl.vi``, ``ppl.smc.diffusion``, ``ppl.runtime.devices``,
...). It is documented if the API reference has a ``::: path`` entry that resolves to the
same object (``ppl.nuts`` documents ``ppl.mcmc.nuts`` too).
"""

import importlib
import os
import re
import types

import pytest

import ppl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resolve(path: str):
    """The object a user reaches as ``path``: attributes first (``ppl.vi.fit`` is the
    function, not the module), submodules where no attribute has the name."""
    first, *rest = path.split(".")
    obj = importlib.import_module(first)
    for part in rest:
        obj = getattr(obj, part) if hasattr(obj, part) else importlib.import_module(f"{obj.__name__}.{part}")
    return obj


def documented_objects() -> list:
    with open(os.path.join(ROOT, "docs", "api.md")) as handle:
        paths = re.findall(r"^::: (\S+)", handle.read(), flags=re.MULTILINE)
    return [resolve(path) for path in paths]


def public_names(module: types.ModuleType, seen: set) -> list[tuple[str, object]]:
    names = []
    for name in getattr(module, "__all__", ()):
        obj = getattr(module, name)
        if isinstance(obj, types.ModuleType):
            if obj.__name__.startswith("ppl.") and obj.__name__ not in seen:
                seen.add(obj.__name__)
                names += public_names(obj, seen)
        else:
            names.append((f"{module.__name__}.{name}", obj))
    return names


def test_every_public_name_of_every_subpackage_is_in_the_api_reference():
    documented = documented_objects()
    names = public_names(ppl, {"ppl"})
    missing = [path for path, obj in names if not any(obj is doc for doc in documented)]
    assert not missing, f"undocumented public names: {missing}"


def test_the_walk_reaches_every_subpackage():
    reached = {path.rsplit(".", 1)[0] for path, _ in public_names(ppl, {"ppl"})}
    for module in (
        "ppl.vi",
        "ppl.smc",
        "ppl.smc.diffusion",
        "ppl.eb.binomial",
        "ppl.runtime.devices",
        "ppl.mcmc.kernel",
    ):
        assert module in reached


@pytest.mark.parametrize("path", ["ppl.nuts", "ppl.smc.diffusion.tds", "ppl.runtime.devices.plan_devices"])
def test_resolve_finds_documented_objects(path):
    assert resolve(path) is not None
