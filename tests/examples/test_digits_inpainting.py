"""The digits inpainting example end to end (--quick)."""

from tests.examples import run_example


def test_digits_inpainting_example(tmp_path):
    output = run_example("digits_inpainting.py", tmp_path)
    assert "trained 300 steps" in output and "MCGdiff" in output and "coverage" in output
    assert (tmp_path / "digits_inpainting.png").stat().st_size > 0
    assert list(tmp_path.glob("digits_score_*.npz"))  # the cache the next run loads
