"""Every public name is documented in the API reference (Optax's coverage rule)."""

import os

import ppl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_public_name_is_in_the_api_reference():
    with open(os.path.join(ROOT, "docs", "api.md")) as handle:
        reference = handle.read()
    missing = [name for name in ppl.__all__ if f"ppl.{name}" not in reference]
    assert not missing, f"undocumented public names: {missing}"
