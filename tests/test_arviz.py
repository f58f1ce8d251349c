"""ArviZ output: groups, schema names, dims from plates, predictive groups, netCDF round trip."""

import warnings

import arviz as az
import numpy as np
import pytest
import xarray as xr

import ppl
from tests.models import NUTS_SAMPLE_STATS, SIGMA, Y, eight_schools
from tests.seeds import key

SCHOOLS = [f"school {i}" for i in range(8)]


@pytest.fixture(scope="module")
def posterior():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ppl.nuts(eight_schools, SIGMA, y=Y, key=key(0), chains=2, warmup=200, draws=200)


@pytest.fixture(scope="module")
def idata(posterior):
    prior = ppl.predictive(eight_schools, None, SIGMA, key=key(1), num_samples=100)
    ppc = ppl.predictive(eight_schools, posterior, SIGMA, key=key(2))
    return posterior.to_arviz(prior=prior, posterior_predictive=ppc, coords={"school": SCHOOLS})


def test_groups_and_variables(idata):
    assert set(idata.groups()) >= {
        "posterior",
        "sample_stats",
        "log_likelihood",
        "observed_data",
        "constant_data",
        "prior",
        "prior_predictive",
        "posterior_predictive",
    }
    assert set(idata.posterior.data_vars) == {"mu", "tau", "eta", "theta"}
    assert set(idata.sample_stats.data_vars) == NUTS_SAMPLE_STATS
    assert set(idata.log_likelihood.data_vars) == {"y"}
    assert set(idata.observed_data.data_vars) == {"y"}
    assert set(idata.constant_data.data_vars) == {"sigma"}
    assert set(idata.prior.data_vars) == {"mu", "tau", "eta", "theta"}
    assert set(idata.prior_predictive.data_vars) == {"y"}
    # as NumPyro's Predictive: observed sites drawn, deterministic sites recomputed
    assert set(idata.posterior_predictive.data_vars) == {"y", "theta"}


def test_dims_and_coords_from_plates(idata):
    assert idata.posterior["eta"].dims == ("chain", "draw", "school")
    assert idata.posterior["mu"].dims == ("chain", "draw")
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "school")
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", "school")
    assert idata.prior["eta"].dims == ("chain", "draw", "school") and idata.prior.sizes["draw"] == 100
    assert list(idata.posterior["school"].values) == SCHOOLS
    np.testing.assert_array_equal(idata.observed_data["y"].values, Y)
    assert idata.posterior.attrs["inference_library"] == "ppl"


def test_log_likelihood_is_pointwise_normal_logpdf(posterior, idata):
    from scipy import stats

    theta = posterior.samples["theta"]
    expected = stats.norm.logpdf(Y, theta, SIGMA)
    np.testing.assert_allclose(idata.log_likelihood["y"].values, expected, rtol=1e-4, atol=1e-4)
    loo = az.loo(idata)
    assert np.isfinite(loo["elpd_loo"] if "elpd_loo" in loo else loo.elpd)


def test_posterior_predictive_resamples_observations(posterior, idata):
    y_rep = idata.posterior_predictive["y"].values
    assert y_rep.shape == (2, 200, 8)
    # y_rep | theta ~ N(theta, sigma): standardised residuals are independent N(0, 1), so
    # their mean and sd are within 5 standard errors, 1 / sqrt(n) and 1 / sqrt(2 n)
    z = (y_rep - posterior.samples["theta"]) / SIGMA
    assert abs(z.mean()) < 5 / np.sqrt(z.size) and abs(z.std() - 1) < 5 / np.sqrt(2 * z.size)


def test_netcdf_round_trip_is_identical(idata, tmp_path):
    path = str(tmp_path / "schools.nc")
    ppl.save(idata, path)
    loaded = ppl.load(path)
    for group in idata.groups():
        xr.testing.assert_identical(idata[group], loaded[group])


def test_summary_and_trace_plot(idata, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    summary = az.summary(idata, var_names=["mu", "tau"])
    assert list(summary.index) == ["mu", "tau"]
    az.plot_trace(idata, var_names=["mu"])
    matplotlib.pyplot.savefig(tmp_path / "trace.png")
    assert (tmp_path / "trace.png").stat().st_size > 0
