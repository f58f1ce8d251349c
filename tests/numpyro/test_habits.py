"""The NumPyro habits of issue 13's table, one test per row (small runs, shared fixtures).

Statistical checks compare quantities whose difference has a known Monte Carlo error:
the tolerance is 5 standard errors from ArviZ-equal bulk ESS (``ppl.mcmc.diagnostics``),
so they hold for any key (``PPL_TEST_SEED_OFFSET``) and any CPU.
"""

import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
import pytest
from numpyro.infer import init_to_median

import ppl
from ppl.mcmc.diagnostics import bulk_ess
from tests.numpyro.models import MODELS
from tests.seeds import key

RUN = {"chains": 2, "warmup": 100, "draws": 100, "progress_bar": False}


def _nuts(name, **options):
    model, args, kwargs = MODELS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ppl.nuts(model, *args, key=key(0), **(RUN | options), **kwargs)


def _five_se(draws):
    """5 Monte Carlo standard errors of the mean of ``draws`` ``(chains, draws)``."""
    ess = float(bulk_ess(np.asarray(draws)[..., None])[0])
    return 5 * float(np.std(draws)) / np.sqrt(ess)


@pytest.fixture(scope="module")
def ar2_posterior():
    return _nuts("ar2")


def test_scan_time_series_samples_and_forecasts(ar2_posterior):
    idata = ar2_posterior.to_arviz()
    assert idata.log_likelihood["y"].shape == (2, 100, 38)
    y = MODELS["ar2"][1][0]
    forecast = ppl.predictive(MODELS["ar2"][0], ar2_posterior, y, T=12, key=key(1))
    assert forecast["y"].shape == (2, 100, 12) and np.isfinite(forecast["y"]).all()


def mvn_fixed(y):
    """An observed 3-vector per row with a fixed correlation (the LKJ model's density is
    checked in test_logdensity; this keeps the NUTS compile small)."""
    mu = numpyro.sample("mu", dist.Normal(jnp.zeros(3), 3.0).to_event(1))
    tril = jnp.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.2, 0.3, 0.9]])
    with numpyro.plate("row", y.shape[0]):
        numpyro.sample("y", dist.MultivariateNormal(mu, scale_tril=tril), obs=y)


@pytest.mark.parametrize(
    "model, data, site",
    [(mvn_fixed, MODELS["mvn"][1][0], "y"), (MODELS["dirichlet"][0], MODELS["dirichlet"][1][0], "p")],
)
def test_event_shaped_observations_export_to_arviz(model, data, site):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        posterior = ppl.nuts(model, data, key=key(0), **(RUN | {"warmup": 40, "draws": 40}))
    idata = posterior.to_arviz()
    assert idata.log_likelihood[site].dims == ("chain", "draw", "row")
    assert idata.log_likelihood[site].shape == (2, 40, data.shape[0])
    assert idata.observed_data[site].ndim == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isfinite(az.loo(idata).elpd_loo)


def test_numpy_on_data_runs_as_constants():
    with pytest.warns(UserWarning, match=r"\['dept'\] are used as constants"):
        model, args, kwargs = MODELS["ucbadmit"]
        ppl.compile(model, *args, **kwargs)
    posterior = _nuts("ucbadmit")
    assert posterior.samples["a"].shape == (2, 100, 6)


def test_obs_mask_imputes_missing_values():
    posterior = _nuts("impute", warmup=200, draws=300)
    x = MODELS["impute"][1][0]
    missing = np.flatnonzero(np.isnan(MODELS["impute"][1][1]))
    a, b = posterior.samples["a"], posterior.samples["b"]
    imputed = posterior.samples["y_unobserved"][..., missing]
    # y_miss | a, b ~ Normal(a + b x, 1): the residual has mean 0
    for j, i in enumerate(missing):
        residual = imputed[..., j] - (a + b * x[i])
        assert abs(residual.mean()) < _five_se(residual)
    np.testing.assert_array_equal(np.isnan(posterior.samples["y"][0, 0]), False)


def test_nan_without_obs_mask_is_named():
    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0, 1))
        with numpyro.plate("obs", len(y)):
            numpyro.sample("y", dist.Normal(mu, 1), obs=y)

    with pytest.raises(ppl.ModelError, match=r"'y': 1 NaN value\(s\), first at index \(2,\).*obs_mask"):
        ppl.compile(model, np.array([0.0, 1.0, np.nan]))


def test_predictive_returns_deterministic_new_and_chosen_sites():
    def regression(x, y=None, future=False):
        a = numpyro.sample("a", dist.Normal(0, 3))
        b = numpyro.sample("b", dist.Normal(0, 3))
        with numpyro.plate("obs", len(x)):
            mu = numpyro.deterministic("mu", a + b * x)
            numpyro.sample("y", dist.Normal(mu, 0.5), obs=y)
        if future:  # a site that exists only in the predictive call
            numpyro.sample("y_next", dist.Normal(a + b * (x[-1] + 1.0), 0.5))

    x = np.linspace(0, 1, 8, dtype=np.float32)
    y = 1.0 + 2.0 * x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        posterior = ppl.nuts(regression, x, y=y, key=key(2), **RUN)
    out = ppl.predictive(regression, posterior, x[:3], future=True, key=key(3))
    assert set(out) == {"mu", "y", "y_next"}  # the latents a, b are fixed by the posterior
    assert out["mu"].shape == (2, 100, 3)
    np.testing.assert_allclose(
        out["mu"], posterior.samples["a"][..., None] + posterior.samples["b"][..., None] * x[:3], rtol=1e-5
    )
    chosen = ppl.predictive(regression, posterior, x, key=key(3), return_sites=["a", "y"])
    assert set(chosen) == {"a", "y"}
    np.testing.assert_array_equal(chosen["a"], posterior.samples["a"])
    with pytest.raises(ValueError, match="not sites of the model"):
        ppl.predictive(regression, posterior, x, key=key(3), return_sites=["nope"])
    guide_draws = {"a": np.zeros(5, np.float32), "b": np.ones(5, np.float32)}
    from_guide = ppl.predictive(regression, guide_draws, x, key=key(4))
    np.testing.assert_allclose(from_guide["mu"], np.broadcast_to(x, (5, 8)))
    prior = ppl.predictive(regression, None, x, future=True, key=key(5), num_samples=7)
    assert {"a", "b", "mu", "y", "y_next"} <= set(prior) and prior["y"].shape == (7, 8)
    # held-out pointwise log-likelihood, in ArviZ's log_likelihood group for loo
    x_test = np.linspace(1, 2, 5, dtype=np.float32)
    test_ll = ppl.log_likelihood(regression, posterior, x_test, y=1.0 + 2.0 * x_test)
    assert test_ll["y"].shape == (2, 100, 5)
    a, b = posterior.samples["a"][..., None], posterior.samples["b"][..., None]
    exact = -0.5 * ((1.0 + 2.0 * x_test - a - b * x_test) / 0.5) ** 2 - np.log(0.5 * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(test_ll["y"], exact, rtol=1e-4, atol=1e-4)
    idata = posterior.to_arviz(log_likelihood=test_ll)
    assert idata.log_likelihood["y"].shape == (2, 100, 5)


NORMAL_Y = np.array([1.0, 2.0, 3.0, 2.5], np.float32)


def normal_model(y):
    mu = numpyro.sample("mu", dist.Normal(0, 10))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2))
    with numpyro.plate("n", len(y)):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


@pytest.fixture(scope="module")
def normal_posterior():
    return ppl.nuts(normal_model, NORMAL_Y, key=key(6), chains=2, warmup=300, draws=200, progress_bar=False)


def test_initial_values_per_chain_or_shared():
    # with a vanishing step size and no warmup the first draw sits at the initial value
    run = {
        "chains": 2,
        "warmup": 0,
        "draws": 1,
        "step_size": 1e-8,
        "max_tree_depth": 1,
        "progress_bar": False,
    }
    with pytest.warns(UserWarning, match="warmup=0: nothing is adapted; sampling with step size 1e-08"):
        per_chain = ppl.nuts(normal_model, NORMAL_Y, key=key(7), init={"mu": np.array([-1.0, 4.0])}, **run)
    np.testing.assert_allclose(per_chain.samples["mu"][:, 0], [-1.0, 4.0], atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shared = ppl.nuts(normal_model, NORMAL_Y, key=key(7), init={"mu": 2.5, "sigma": 0.7}, **run)
        median = ppl.nuts(normal_model, NORMAL_Y, key=key(7), init_strategy=init_to_median(), **run)
    np.testing.assert_allclose(shared.samples["mu"][:, 0], [2.5, 2.5], atol=1e-4)
    np.testing.assert_allclose(shared.samples["sigma"][:, 0], [0.7, 0.7], rtol=1e-4)
    assert np.all(np.abs(median.samples["mu"][:, 0]) < 10)  # near the prior median 0, not uniform(-2, 2)
    # init_to_median() written anew is the same static argument: no new init program
    from ppl.mcmc.sampler import _strategy_positions

    size = _strategy_positions._cache_size()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ppl.nuts(normal_model, NORMAL_Y, key=key(8), init_strategy=init_to_median(), **run)
    assert _strategy_positions._cache_size() == size
    with pytest.raises(ValueError, match=r"init\['mu'\] has shape \(3,\)"):
        ppl.nuts(normal_model, NORMAL_Y, key=key(7), init={"mu": np.zeros(3)}, **run)
    with pytest.raises(ValueError, match=r"\['tau'\] are not latent"):
        ppl.nuts(normal_model, NORMAL_Y, key=key(7), init={"tau": 1.0}, **run)
    with pytest.raises(ValueError, match=r"init\['sigma'\] for chain 0 is outside the site's support"):
        ppl.nuts(normal_model, NORMAL_Y, key=key(7), init={"sigma": 0.0}, **run)


def test_thinning_keeps_every_kth_draw():
    # transition t uses fold_in(chain_key, t) with or without thinning, so the thinned run
    # keeps exactly transitions 3, 7, 11, ... of the unthinned one (equal up to float
    # rounding between the two programs; a wrong stride or offset is off by O(posterior sd))
    run = {"key": key(6), "chains": 2, "warmup": 100, "chain_method": "sequential", "progress_bar": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = ppl.nuts(normal_model, NORMAL_Y, draws=40, **run)
        thinned = ppl.nuts(normal_model, NORMAL_Y, draws=10, thinning=4, **run)
    assert thinned.samples["mu"].shape == (2, 10) and thinned.attrs["thinning"] == 4
    np.testing.assert_allclose(thinned.unconstrained, plain.unconstrained[:, 3::4], rtol=1e-4, atol=1e-5)
    assert not np.allclose(thinned.unconstrained, plain.unconstrained[:, 2::4], rtol=1e-4, atol=1e-5)


def test_resume_continues_with_the_adapted_kernel(normal_posterior):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        more = ppl.nuts(
            normal_model, NORMAL_Y, key=key(8), chains=2, warmup=0, draws=200, init=normal_posterior
        )
    assert not [w for w in caught if "warmup=0" in str(w.message)]  # continuing is not "nothing adapted"
    np.testing.assert_array_equal(more.step_size, normal_posterior.step_size)
    np.testing.assert_array_equal(more.inverse_mass_matrix, normal_posterior.inverse_mass_matrix)
    both = np.concatenate([normal_posterior.samples["mu"], more.samples["mu"]], axis=1)
    # the difference of two halves' means has twice the standard error of the pooled mean
    assert abs(more.samples["mu"].mean() - normal_posterior.samples["mu"].mean()) < 2 * _five_se(both)
    warm = ppl.nuts(normal_model, NORMAL_Y, key=key(9), chains=2, warmup=50, draws=50, init=normal_posterior)
    assert warm.samples["mu"].shape == (2, 50)


def test_python_lists_and_pandas_are_data():
    def model(x, y=None):
        b = numpyro.sample("b", dist.Normal(0, 1))
        with numpyro.plate("n", len(x)):
            numpyro.sample("y", dist.Normal(b * x, 1), obs=y)

    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [1.0, 2.0, 3.5]})
    from_pandas = ppl.compile(model, frame["x"], y=frame["y"])
    from_lists = ppl.compile(model, [1.0, 2.0, 3.0], y=[1.0, 2.0, 3.5])
    u = jnp.array([0.3])
    assert from_pandas.logdensity(u) == from_lists.logdensity(u)
    assert np.isfinite(from_pandas.logdensity(u))
    with pytest.raises(TypeError, match="'x'.*integer codes"):
        ppl.compile(model, pd.Series(["a", "b"]))


@pytest.mark.parametrize(
    "option, error, message",
    [
        ({"target_accept": 1.5}, ValueError, r"target_accept must be in \(0, 1\)"),
        ({"max_tree_depth": 0}, ValueError, "max_tree_depth must be in 1..30"),
        ({"max_tree_depth": 2.5}, ValueError, "max_tree_depth must be an integer"),
        ({"thinning": 0}, ValueError, "thinning must be an integer >= 1"),
        ({"chains": 2.0}, ValueError, "chains must be an integer"),
        ({"warmup": -1}, ValueError, "warmup must be an integer >= 0"),
        ({"dense_mass": "yes"}, TypeError, "dense_mass must be True or False"),
        ({"devices": 0}, ValueError, r"devices \(None for all\) must be an integer >= 1"),
        ({"progress_bar": "no"}, TypeError, "progress_bar must be"),
        ({"step_size": -1.0}, ValueError, "step_size must be positive"),
        ({"target_accept": "high"}, TypeError, "target_accept must be a float"),
        ({"chain_method": "parallel"}, ValueError, "chain_method must be one of"),
        ({"inverse_mass_matrix": np.ones(5)}, ValueError, r"inverse_mass_matrix has shape \(5,\)"),
        ({"init": [1.0]}, TypeError, "init must be None, a dict"),
    ],
)
def test_driver_arguments_are_checked(option, error, message):
    run = {"key": key(0), "chains": 2, "warmup": 5, "draws": 5, "progress_bar": False} | option
    with pytest.raises(error, match=message):
        ppl.nuts(normal_model, NORMAL_Y, **run)


def test_batched_key_and_missing_observation_are_named():
    with pytest.raises(TypeError, match=r"single PRNG key, got a batch of keys of shape \(2,\)"):
        ppl.nuts(normal_model, NORMAL_Y, key=jax.random.split(key(0)), chains=1, warmup=5, draws=5)

    def model(x, y=None):
        b = numpyro.sample("b", dist.Normal(0, 1))
        numpyro.sample("y", dist.Normal(b * x, 1).to_event(1), obs=y)

    with pytest.warns(UserWarning, match="argument 'y' was not given, so site 'y' is a latent variable"):
        ppl.compile(model, np.ones(3, np.float32))

    def observed_before(x, y):
        b = numpyro.sample("b", dist.Normal(0, 1))
        with numpyro.plate("n", len(x)):
            numpyro.sample("y", dist.Normal(b * x, 1), obs=y)

    ppl.compile(observed_before, np.ones(3, np.float32), np.ones(3, np.float32))
    with pytest.warns(UserWarning, match="site 'y' was observed when this model was compiled before"):
        ppl.compile(observed_before, np.ones(3, np.float32), None)
