"""Test configuration: CPU only, reproducible, and a compilation cache of the tests' own.

The persistent compilation cache goes to a directory under the system's temporary
directory (shared by the xdist workers and the subprocess tests), not the user's
``~/.cache/ppl``.
"""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("PPL_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "ppl-tests-jax-cache"))
