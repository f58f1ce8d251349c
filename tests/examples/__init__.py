"""Every example runs end to end with --quick: one file per example or two, so that
pytest-xdist's ``--dist loadfile`` spreads the slow ones over workers."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_example(script: str, out) -> str:
    result = subprocess.run(
        [sys.executable, f"examples/{script}", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
