"""The martingale density example end to end (--quick)."""

from tests.examples import run_example


def test_martingale_density_example(tmp_path):
    output = run_example("martingale_density.py", tmp_path)
    for text in (
        "-0.5",
        "authors (1000 x 5000)",
        "integral of the mean density",
        "change",
        "Bayesian bootstrap",
    ):
        assert text in output
    assert "netCDF round trip identical: True" in output
    for name in ("martingale_density.png", "martingale_density.nc"):
        assert (tmp_path / name).stat().st_size > 0
