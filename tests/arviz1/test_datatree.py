"""The arviz 1.x path: ``to_arviz()`` gives an ``xarray.DataTree`` that arviz-stats reads.

Runs in the second environment that ``make test-arviz1`` builds (``.venv-arviz1``:
arviz-base and arviz-stats, the parts of arviz 1.x that install on Python 3.11, and no
arviz 0.x). Skipped where arviz 0.x is installed (the main environment), since exports
are then ``InferenceData``.
"""

import warnings

import numpy as np
import pytest

from ppl.runtime import arviz as ppl_arviz

if not ppl_arviz._ARVIZ_1:
    pytest.skip(
        "arviz 0.x is installed: exports are InferenceData (run `make test-arviz1`)", allow_module_level=True
    )
arviz_base = pytest.importorskip("arviz_base")
arviz_stats = pytest.importorskip("arviz_stats")

import xarray as xr  # noqa: E402

import ppl  # noqa: E402
from ppl import dist  # noqa: E402
from tests.seeds import key  # noqa: E402

Y = np.array([[0.3, -1.2], [0.8, 1.5], [0.1, -0.4]])  # (obs, group)
GROUPS = ["a", "b"]
SAMPLE_STATS = {"lp", "diverging", "energy", "acceptance_rate", "step_size", "n_steps", "tree_depth"}


def model(y=None):
    mu = ppl.sample("mu", dist.Normal(0.0, 2.0))
    sigma = ppl.sample("sigma", dist.HalfNormal(1.0))
    with ppl.plate("group", 2, dim=-1):
        offset = ppl.sample("offset", dist.Normal(0.0, 1.0))
        with ppl.plate("obs", 3, dim=-2):
            ppl.sample("y", dist.Normal(mu + offset, sigma), obs=y)


@pytest.fixture(scope="module")
def posterior():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ppl.nuts(model, y=Y, key=key(0), chains=2, warmup=100, draws=100)


@pytest.fixture(scope="module")
def tree(posterior):
    return posterior.to_arviz(coords={"group": GROUPS})


def test_export_is_a_datatree_with_arviz_groups(tree):
    assert isinstance(tree, xr.DataTree)
    assert set(tree.children) == {"posterior", "sample_stats", "log_likelihood", "observed_data"}
    assert set(tree["posterior"].data_vars) == {"mu", "sigma", "offset"}
    assert set(tree["sample_stats"].data_vars) >= SAMPLE_STATS
    assert set(tree["log_likelihood"].data_vars) == {"y"}
    assert set(tree["observed_data"].data_vars) == {"y"}
    assert tree["posterior"].attrs["inference_library"] == "ppl"
    assert "arviz_base_version" in tree["posterior"].attrs


def test_dims_and_coords(tree):
    posterior = tree["posterior"]
    assert posterior["mu"].dims == ("chain", "draw")
    assert posterior["offset"].dims == ("chain", "draw", "group")
    assert posterior.sizes["chain"] == 2 and posterior.sizes["draw"] == 100
    assert list(posterior["group"].values) == GROUPS
    np.testing.assert_array_equal(posterior["chain"].values, [0, 1])
    assert tree["log_likelihood"]["y"].dims == ("chain", "draw", "obs", "group")
    assert tree["observed_data"]["y"].dims == ("obs", "group")
    np.testing.assert_allclose(tree["observed_data"]["y"].values, Y, rtol=1e-6)
    assert tree["sample_stats"]["diverging"].dtype == bool
    assert tree["sample_stats"]["lp"].dims == ("chain", "draw")


def test_log_likelihood_is_pointwise(posterior, tree):
    from scipy import stats

    s = posterior.samples
    mean = s["mu"][..., None, None] + s["offset"][..., None, :]
    expected = stats.norm.logpdf(Y, mean, s["sigma"][..., None, None])
    np.testing.assert_allclose(tree["log_likelihood"]["y"].values, expected, rtol=1e-4, atol=1e-4)


def test_arviz_stats_reads_it(tree):
    summary = arviz_stats.summary(tree)
    assert len(summary) == 4  # mu, sigma, offset[a], offset[b]
    assert np.isfinite(summary["ess_bulk"].to_numpy(dtype=float)).all()
    ess = arviz_stats.ess(tree)
    rhat = arviz_stats.rhat(tree)
    assert float(ess["mu"]) > 20 and ess["offset"].dims == ("group",)
    assert abs(float(rhat["mu"]) - 1) < 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto k of a 200-draw posterior
        loo = arviz_stats.loo(tree)
    assert np.isfinite(loo.elpd) and loo.n_data_points == Y.size


def test_netcdf_round_trip(tree, tmp_path):
    path = str(tmp_path / "posterior.nc")
    ppl.save(tree, path)
    loaded = ppl.load(path)
    assert isinstance(loaded, xr.DataTree)
    assert set(loaded.children) == set(tree.children)
    for group in tree.children:
        xr.testing.assert_identical(loaded[group].to_dataset(), tree[group].to_dataset())
    # fully in memory: the file can go away
    (tmp_path / "posterior.nc").unlink()
    assert float(loaded["posterior"]["mu"].mean()) == pytest.approx(float(tree["posterior"]["mu"].mean()))


def test_martingale_paths_export_as_a_datatree_with_a_path_coordinate(tmp_path):
    import jax

    from ppl.processes import martingale

    rng = np.random.default_rng(0)
    y = np.concatenate([rng.normal(-2, 0.5, 20), rng.normal(1, 0.5, 10)])
    fit = martingale.density(y, key=key(0), num_permutations=2, rho=0.8)
    draws = fit.resample(np.linspace(-4, 3, 11), key=jax.random.key(1), num_paths=5, num_steps=20)
    tree = draws.to_arviz()
    assert isinstance(tree, xr.DataTree)
    assert tree["posterior"]["density"].dims == ("chain", "draw", "grid_point")
    assert list(tree["posterior"]["path"].values) == list(range(5))
    ppl.save(tree, str(tmp_path / "paths.nc"))
    np.testing.assert_array_equal(
        ppl.load(str(tmp_path / "paths.nc"))["posterior"]["density"].values[0], draws["density"]
    )
