"""The fast examples end to end with --quick (the slow ones: ``tests/examples/``)."""

from tests.examples import run_example


def test_eight_schools_example(tmp_path):
    output = run_example("eight_schools.py", tmp_path)
    assert "mu" in output and "elpd_loo" in output
    assert (tmp_path / "eight_schools_trace.png").stat().st_size > 0
    assert (tmp_path / "eight_schools.nc").stat().st_size > 0


def test_binomial_shrinkage_example(tmp_path):
    output = run_example("binomial_shrinkage.py", tmp_path)
    assert "URE shrinkage + covariate" in output and "coverage" in output
    assert (tmp_path / "binomial_shrinkage.png").stat().st_size > 0
