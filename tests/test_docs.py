"""Every public name of every ``ppl`` module is in the API reference (Optax's coverage rule).

A module's public names are its ``__all__``; every module of the package is walked,
kernel modules whose name a driver function shadows (``ppl.smc.tempered``) included. A
name is documented if the API reference has a ``::: path`` entry that resolves to the
same object (``ppl.nuts`` documents ``ppl.mcmc.nuts`` too).
"""

import importlib
import os
import pkgutil
import re
import types

import ppl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resolve(path: str):
    """The object mkdocstrings documents at ``path``: attributes first (``ppl.vi.fit`` is the
    function), and the module where an attribute path cannot go on
    (``ppl.smc.tempered.init`` is in the module ``ppl.smc.tempered``)."""
    parts = path.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        for cut in range(i, 0, -1):  # the longest module prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for rest in parts[cut:]:
                obj = getattr(obj, rest)
            return obj
    return obj


def documented_objects() -> list:
    with open(os.path.join(ROOT, "docs", "api.md")) as handle:
        paths = re.findall(r"^::: (\S+)", handle.read(), flags=re.MULTILINE)
    return [resolve(path) for path in paths]


def public_names() -> list[tuple[str, object]]:
    modules = [ppl] + [
        importlib.import_module(info.name) for info in pkgutil.walk_packages(ppl.__path__, prefix="ppl.")
    ]
    return [
        (f"{module.__name__}.{name}", getattr(module, name))
        for module in modules
        for name in getattr(module, "__all__", ())
        if not isinstance(getattr(module, name), types.ModuleType)
    ]


def test_every_public_name_of_every_module_is_in_the_api_reference():
    documented = documented_objects()
    missing = [path for path, obj in public_names() if not any(obj is doc for doc in documented)]
    assert not missing, f"undocumented public names: {missing}"


def test_the_walk_reaches_kernel_modules():
    reached = {path.rsplit(".", 1)[0] for path, _ in public_names()}
    for module in (
        "ppl.smc.tempered",
        "ppl.smc.diffusion.tds",
        "ppl.vi.fit",
        "ppl.mcmc.kernel",
        "ppl.runtime.devices",
    ):
        assert module in reached


def test_resolve_finds_functions_and_kernel_modules():
    from ppl.smc.tempered import step

    assert resolve("ppl.smc.diffusion.tds") is ppl.smc.diffusion.tds
    assert resolve("ppl.smc.tempered.step") is step
