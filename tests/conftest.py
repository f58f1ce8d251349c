"""Test configuration: CPU only, reproducible, and a compilation cache of the tests' own.

The persistent compilation cache goes to a directory under the system's temporary
directory (shared by the xdist workers and the subprocess tests), not the user's
``~/.cache/ppl``.
"""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("PPL_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "ppl-tests-jax-cache"))


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop every jit cache when a test module ends. An xdist worker runs hundreds of
    modules in one process, and each XLA CPU executable keeps three memory mappings: a
    worker once passed Linux's default ``vm.max_map_count`` (65530) and segfaulted inside
    an XLA compile. Programs a later module needs come back from the persistent cache."""
    yield
    import jax

    jax.clear_caches()
