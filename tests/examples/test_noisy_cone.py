"""The noisy cone example end to end (--quick)."""

from tests.examples import run_example


def test_noisy_cone_example(tmp_path):
    output = run_example("noisy_cone.py", tmp_path)
    assert "DIWHVI(5,5)" in output and (tmp_path / "noisy_cone.png").stat().st_size > 0
