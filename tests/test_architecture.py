"""Imports go only down: runtime <- model <- families, and families never import each other."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ppl")
FAMILIES = ("mcmc", "vi", "smc", "eb", "processes", "meta")
ALLOWED = {
    "runtime": {"runtime", "errors"},
    "model": {"model", "runtime", "errors"},
    **{family: {family, "model", "runtime", "errors"} for family in FAMILIES},
}
# Where using another family's public API is the point (DESIGN.md, "Layout"): the scale
# posterior by NUTS, the sparse variational process fitted with ppl.vi.
ALLOWED["processes"] |= {"mcmc", "vi"}
# Meta-learners keep ppl.vi's fitting state (FitState and its init).
ALLOWED["meta"] |= {"vi"}


def imported_ppl_parts(path: str) -> set[str]:
    with open(path) as handle:
        tree = ast.parse(handle.read())
    parts = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name == "ppl":
                parts.add("<top>")
            elif name.startswith("ppl."):
                parts.add(name.split(".")[1])
    return parts


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_only_go_down(layer):
    folder = os.path.join(PACKAGE, layer)
    for root, _, files in os.walk(folder):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                wrong = imported_ppl_parts(path) - ALLOWED[layer]
                assert not wrong, f"{os.path.relpath(path, PACKAGE)} imports ppl.{wrong}"
