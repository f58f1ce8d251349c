"""Every example runs end to end with --quick."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def test_eight_schools_example(tmp_path):
    output = run_example("eight_schools.py", tmp_path)
    assert "mu" in output and "elpd_loo" in output
    assert (tmp_path / "eight_schools_trace.png").stat().st_size > 0
    assert (tmp_path / "eight_schools.nc").stat().st_size > 0


def test_binomial_shrinkage_example(tmp_path):
    output = run_example("binomial_shrinkage.py", tmp_path)
    assert "URE shrinkage + covariate" in output and "coverage" in output
    assert (tmp_path / "binomial_shrinkage.png").stat().st_size > 0
