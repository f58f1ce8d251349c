"""The vi examples examples end to end (--quick)."""

from tests.examples import run_example


def test_vae_digits_example(tmp_path):
    output = run_example("vae_digits.py", tmp_path)
    assert "test -IWAE(1000)" in output and (tmp_path / "vae_digits.png").stat().st_size > 0


def test_discrete_estimators_example(tmp_path):
    output = run_example("discrete_estimators.py", tmp_path)
    assert (
        "reinforce + learned baseline" in output
        and (tmp_path / "discrete_estimators.json").stat().st_size > 0
    )
