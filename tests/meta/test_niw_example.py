"""The NIW example end to end (its own file, so pytest-xdist's loadfile runs it beside
tests/test_examples.py rather than after it)."""

from tests.test_examples import run_example


def test_niw_fewshot_example(tmp_path):
    output = run_example("niw_fewshot.py", tmp_path)
    for text in ("5-shot sinusoid", "NIW head", "MAML", "90% coverage", "ArviZ (one test task)"):
        assert text in output
    assert (tmp_path / "niw_fewshot.png").stat().st_size > 0
