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


def test_noisy_cone_example(tmp_path):
    output = run_example("noisy_cone.py", tmp_path)
    assert "DIWHVI(5,5)" in output and (tmp_path / "noisy_cone.png").stat().st_size > 0


def test_vae_digits_example(tmp_path):
    output = run_example("vae_digits.py", tmp_path)
    assert "test -IWAE(1000)" in output and (tmp_path / "vae_digits.png").stat().st_size > 0


def test_discrete_estimators_example(tmp_path):
    output = run_example("discrete_estimators.py", tmp_path)
    assert (
        "reinforce + learned baseline" in output
        and (tmp_path / "discrete_estimators.json").stat().st_size > 0
    )


def test_digits_inpainting_example(tmp_path):
    output = run_example("digits_inpainting.py", tmp_path)
    assert "trained 300 steps" in output and "MCGdiff" in output and "coverage" in output
    assert (tmp_path / "digits_inpainting.png").stat().st_size > 0
    assert list(tmp_path.glob("digits_score_*.npz"))  # the cache the next run loads


def test_nngp_regression_example(tmp_path):
    output = run_example("nngp_regression.py", tmp_path)
    for text in ("NNGP (GP)", "Student-t (inverse gamma)", "Burr XII (quadrature)", "importance sampling"):
        assert text in output
    assert "variance" in output and "W_std" in output and "last_variance" in output
    for name in ("nngp_prior_draws.png", "nngp_posterior.png"):
        assert (tmp_path / name).stat().st_size > 0


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
