"""The nngp regression example end to end (--quick)."""

from tests.examples import run_example


def test_nngp_regression_example(tmp_path):
    output = run_example("nngp_regression.py", tmp_path)
    for text in ("NNGP (GP)", "Student-t (inverse gamma)", "Burr XII (quadrature)", "importance sampling"):
        assert text in output
    assert "variance" in output and "W_std" in output and "last_variance" in output
    for name in ("nngp_prior_draws.png", "nngp_posterior.png"):
        assert (tmp_path / name).stat().st_size > 0
