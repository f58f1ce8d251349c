"""Every example runs end to end with --quick."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_eight_schools_example(tmp_path):
    result = subprocess.run(
        [sys.executable, "examples/eight_schools.py", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mu" in result.stdout and "elpd_loo" in result.stdout
    assert (tmp_path / "eight_schools_trace.png").stat().st_size > 0
    assert (tmp_path / "eight_schools.nc").stat().st_size > 0


def test_binomial_shrinkage_example(tmp_path):
    result = subprocess.run(
        [sys.executable, "examples/binomial_shrinkage.py", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "URE shrinkage + covariate" in result.stdout and "coverage" in result.stdout
    assert (tmp_path / "binomial_shrinkage.png").stat().st_size > 0
