"""Run a test script in a subprocess with 4 host CPU devices.

XLA reads ``--xla_force_host_platform_device_count`` once, at start-up, so multi-device
checks run in a fresh interpreter (from the repository root, so ``tests.*`` imports work).
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_on_four_devices(script: str) -> str:
    """Run ``script`` with ``python -c``; assert it exits 0 and return its stdout."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
