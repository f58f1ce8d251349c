"""The tour example end to end (--quick)."""

from tests.examples import run_example


def test_tour_example(tmp_path):
    output = run_example("tour.py", tmp_path)
    page = (tmp_path / "index.html").read_text()
    for title in (
        "NUTS on eight schools, with ArviZ",
        "Variational inference: ELBO and IWAE",
        "Diffusion-prior inpainting with TDS",
        "Empirical Bayes: binomial shrinkage",
    ):
        assert title in output and title in page
    assert page.count('src="data:image/png;base64,') == 5 and "<table" in page
    assert "netCDF round trip identical: True" in output and "exact log p(y)" in output
    assert (tmp_path / "eight_schools.nc").stat().st_size > 0
