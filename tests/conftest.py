"""Test configuration: CPU only, reproducible."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
