"""NumPyro's autoguides as ppl.vi guides, and MAP / Laplace, against exact posteriors.

The model has a real site and a positive one whose posteriors are Gaussian in ppl's
unconstrained space (``mu`` given Normal data; ``log scale`` given LogNormal data), so
every answer is known in closed form: AutoNormal and AutoMultivariateNormal can match the
posterior exactly, the MAP is the mode of the constrained values (``exp(m - v)`` for
``scale``), and the Laplace approximation is exact (mode ``exp(m)``, curvature ``1/v``).
The prior scale of ``mu`` is a data argument, so the deliberately wrong variant (a wrong
prior scale) runs in the same compiled program.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.scipy.stats import norm
from numpyro import handlers
from numpyro.infer.autoguide import AutoDelta, AutoMultivariateNormal, AutoNormal

import ppl
from ppl import dist
from tests.seeds import key

SCALE_PRIOR_SD = 1.5  # log scale ~ Normal(0, 1.5)
MU_SCALE, WRONG_MU_SCALE = 2.0, 0.7
Y = 1.0 + jax.random.normal(key(101), (5,))  # y_i ~ Normal(mu, 1)
Z = jnp.exp(0.5 + jax.random.normal(key(102), (6,)))  # log z_i ~ Normal(log scale, 1)
DATA = (Y, Z, jnp.asarray(MU_SCALE))


TRACES = []  # one entry per run of plain_model, eager or traced


def plain_model(y, z, mu_scale):
    TRACES.append(1)
    mu = ppl.sample("mu", dist.Normal(0.0, mu_scale))
    with ppl.plate("data", y.shape[0]):
        ppl.sample("y", dist.Normal(mu, 1.0), obs=y)
    scale = ppl.sample("scale", dist.LogNormal(0.0, SCALE_PRIOR_SD))
    with ppl.plate("z_data", z.shape[0]):
        ppl.sample("z", dist.LogNormal(jnp.log(scale), 1.0), obs=z)


def model(params, y, z, mu_scale):
    plain_model(y, z, mu_scale)


def exact(mu_scale=MU_SCALE):
    """Posterior mean and sd of ``mu`` and ``log scale``: ``[mean_mu, sd_mu, mean_log, sd_log]``."""
    mu_precision = 1.0 / mu_scale**2 + Y.shape[0]
    log_precision = 1.0 / SCALE_PRIOR_SD**2 + Z.shape[0]
    return np.array(
        [
            float(jnp.sum(Y)) / mu_precision,
            mu_precision**-0.5,
            float(jnp.sum(jnp.log(Z))) / log_precision,
            log_precision**-0.5,
        ]
    )


# ------------------------------------------------------------------ autoguides by ELBO

NUM_RUNS, STEPS, NUM_SAMPLES = 16, 1000, 4
# Step size decayed from 0.05 to 5e-4: the last iterate jitters by ~3% of a posterior sd.
OPTIMIZER = optax.adam(optax.exponential_decay(0.05, STEPS, 0.01))
SIGMA_QUANTILES = norm.cdf(jnp.array([-1.0, 0.0, 1.0]))


def moments(guide, params, data):
    """The guide's mean and sd of ``mu`` and ``log scale``, read as NumPyro users do:
    ``guide.quantiles`` of the constrained parameter values (median and +-1 sd quantiles)."""
    values = ppl.vi.constrained_params(guide, params, *data)
    quantiles = guide.quantiles(values, SIGMA_QUANTILES)
    mu, log_scale = quantiles["mu"], jnp.log(quantiles["scale"])
    return jnp.stack([mu[1], (mu[2] - mu[0]) / 2, log_scale[1], (log_scale[2] - log_scale[0]) / 2])


class Fitted(NamedTuple):
    guide: Any
    runs: np.ndarray  # (2 * NUM_RUNS, 4) moments: NUM_RUNS at MU_SCALE, then at WRONG_MU_SCALE
    result: ppl.vi.VIResult  # the first run


@pytest.fixture(scope="module", params=[AutoNormal, AutoMultivariateNormal], ids=lambda c: c.__name__)
def fitted(request) -> Fitted:
    """``2 * NUM_RUNS`` independent ``ppl.vi.fit`` runs (one compiled program: the prior
    scale is data, the key the only other change) and their final moments."""
    guide = request.param(model)  # passed exactly like a hand-written guide
    elbo = ppl.vi.objectives.elbo(model, guide)
    init_params = ppl.vi.initial_params(elbo, {}, *DATA, key=key(3))
    results = [
        ppl.vi.fit(
            elbo,
            init_params,
            Y,
            Z,
            jnp.asarray(mu_scale),
            optimizer=OPTIMIZER,
            steps=STEPS,
            key=jax.random.fold_in(key(7), i),
            num_samples=NUM_SAMPLES,
        )
        for i, mu_scale in enumerate([MU_SCALE] * NUM_RUNS + [WRONG_MU_SCALE] * NUM_RUNS)
    ]
    params = jax.tree.map(lambda *leaves: np.stack(leaves), *(result.params for result in results))
    runs = jax.jit(jax.vmap(lambda one: moments(guide, one, DATA)))(params)
    return Fitted(guide, np.asarray(runs), results[0])


def test_autoguide_fits_the_exact_posterior(fitted):
    right, wrong = fitted.runs[:NUM_RUNS], fitted.runs[NUM_RUNS:]
    truth = exact()
    # Tolerance from the optimisation noise itself: the runs' spread (sd of the last
    # iterate) gives 4 standard errors of their mean, plus 1% of a posterior sd for the
    # optimiser's own bias (Adam and the softplus scale make the stationary mean of the
    # iterate differ from the optimum by O(step size) = O(5e-4)).
    spread = right.std(axis=0, ddof=1)
    sds = truth[[1, 1, 3, 3]]
    tolerance = 4 * spread / np.sqrt(NUM_RUNS) + 0.01 * sds
    assert np.all(spread < 0.1 * sds), spread  # the check has power
    np.testing.assert_array_less(np.abs(right.mean(axis=0) - truth), tolerance)
    # A wrong prior scale moves mu's mean and sd far outside the tolerance.
    assert np.all(np.abs(wrong.mean(axis=0) - truth)[:2] > tolerance[:2])


def test_autoguide_draws(fitted):
    draws = fitted.result.draws(fitted.guide, key(5), 300, *DATA)
    assert set(draws.samples) == {"mu", "scale"}  # AutoMultivariateNormal's _auto_latent left out
    assert draws.samples["mu"].shape == (1, 300) and np.all(draws.samples["scale"] > 0)


def test_fit_sets_up_a_fresh_autodelta_at_the_exact_mode():
    guide = AutoDelta(model)
    elbo = ppl.vi.objectives.elbo(model, guide)
    kwargs = dict(optimizer=optax.adam(optax.exponential_decay(0.1, 500, 0.01)), steps=500, key=key(8))
    right = ppl.vi.fit(elbo, {}, *DATA, **kwargs)
    wrong = ppl.vi.fit(elbo, {}, Y, Z, jnp.asarray(WRONG_MU_SCALE), **kwargs)
    mode = ppl.vi.constrained_params(guide, right.params, *DATA)
    wrong_mode = ppl.vi.constrained_params(guide, wrong.params, *DATA)
    assert_map_mode({"mu": mode["mu_auto_loc"], "scale": mode["scale_auto_loc"]})
    with pytest.raises(AssertionError):
        assert_map_mode({"mu": wrong_mode["mu_auto_loc"], "scale": wrong_mode["scale_auto_loc"]})


# ---------------------------------------------------------------------- MAP and Laplace


def assert_map_mode(values):
    """The posterior mode of the constrained values: ``mu`` at its mean, ``scale`` at
    ``exp(m - v)`` (a LogNormal's mode), to 1% of a posterior sd in unconstrained terms.
    The objective is deterministic, so the only error is the optimiser's unfinished
    convergence, which the decayed step size makes far smaller than that."""
    mean_mu, sd_mu, mean_log, sd_log = exact()
    assert abs(float(values["mu"]) - mean_mu) < 0.01 * sd_mu
    assert abs(float(jnp.log(values["scale"])) - (mean_log - sd_log**2)) < 0.01 * sd_log


def test_map_estimate_is_the_exact_posterior_mode():
    def runs_of_the_model(*data):
        before = len(TRACES)
        estimate = ppl.vi.map_estimate(plain_model, *data, key=key(9), steps=500)
        return estimate, len(TRACES) - before

    estimate, first = runs_of_the_model(*DATA)
    assert_map_mode(estimate.mode)
    wrong, second = runs_of_the_model(Y, Z, jnp.asarray(WRONG_MU_SCALE))
    with pytest.raises(AssertionError):
        assert_map_mode(wrong.mode)
    # New data of the same shapes: only the eager runs (compile, init), no new trace.
    _, third = runs_of_the_model(Y + 1.0, Z, jnp.asarray(MU_SCALE))
    assert second == third < first
    draws = estimate.draws(key(10), 3)
    assert draws.samples["scale"].shape == (1, 3) and np.all(draws.samples["mu"] == estimate.mode["mu"])
    assert draws.log_likelihood["z"].shape == (1, 3, Z.shape[0])


def test_laplace_is_exact_for_a_gaussian_posterior():
    mean_mu, sd_mu, mean_log, sd_log = exact()
    approx = ppl.vi.laplace(plain_model, *DATA, key=key(11), steps=500)

    def assert_exact(result):
        # Newton steps polish the mode to float32 rounding: 1e-4 of a posterior sd.
        np.testing.assert_allclose(result.position, [mean_mu, mean_log], atol=1e-4 * min(sd_mu, sd_log))
        np.testing.assert_allclose(np.diag(result.precision), [sd_mu**-2, sd_log**-2], rtol=1e-4)
        np.testing.assert_allclose(result.precision[0, 1], 0.0, atol=1e-4)

    assert_exact(approx)
    assert float(approx.mode["scale"]) == pytest.approx(np.exp(mean_log), rel=1e-4)  # exp(m), not the MAP
    with pytest.raises(AssertionError):
        assert_exact(ppl.vi.laplace(plain_model, Y, Z, jnp.asarray(WRONG_MU_SCALE), key=key(11), steps=500))
    with pytest.raises(AssertionError):  # the mode of the density of u is not the MAP
        assert_map_mode(approx.mode)

    num_draws = 4000
    data = approx.to_arviz(key(12), num_draws)
    log_scale = np.log(data.posterior["scale"].values.ravel())
    mu = data.posterior["mu"].values.ravel()
    # Monte Carlo error of independent Gaussian draws: 4 sd / sqrt(n) for the mean,
    # 4 sd / sqrt(2 n) for the sd.
    assert abs(mu.mean() - mean_mu) < 4 * sd_mu / np.sqrt(num_draws)
    assert abs(log_scale.std() - sd_log) < 4 * sd_log / np.sqrt(2 * num_draws)
    assert data.log_likelihood["y"].shape == (1, num_draws, Y.shape[0])


def test_laplace_names_a_flat_direction():
    def flat_model():
        ppl.sample("mu", dist.Normal(0.0, 1.0))
        ppl.sample("flat", dist.ImproperUniform(dist.constraints.real, (), ()))

    with pytest.raises(ppl.ModelError, match="not negative definite .* mostly in site 'flat'"):
        ppl.vi.laplace(flat_model, key=key(13), steps=10)


# ------------------------------------------------------------------------------ errors


def test_map_and_laplace_refuse_a_discrete_latent():
    def coin():
        ppl.sample("mu", dist.Normal(0.0, 1.0))
        ppl.sample("c", dist.Bernoulli(0.3))

    for approximate in (ppl.vi.map_estimate, ppl.vi.laplace):
        with pytest.raises(ppl.ModelError, match="latent site 'c' is discrete"):
            approximate(coin, key=key(0))


def test_an_autoguide_built_for_another_model_names_the_site():
    def real_scale_model(params, y, z, mu_scale):
        ppl.sample("mu", dist.Normal(0.0, mu_scale))
        ppl.sample("scale", dist.Normal(0.0, 1.0))

    def renamed_model(params, y, z, mu_scale):
        ppl.sample("mu", dist.Normal(0.0, mu_scale))
        ppl.sample("sigma", dist.LogNormal(0.0, 1.0))

    for other, message in [
        (real_scale_model, "site 'scale': AutoNormal was built for real_scale_model, .* support"),
        (renamed_model, "latent site 'scale' of model has no value .* AutoNormal built for renamed_model"),
    ]:
        elbo = ppl.vi.objectives.elbo(model, AutoNormal(other))
        with pytest.raises(ppl.ModelError, match=message):
            params = ppl.vi.initial_params(elbo, {}, *DATA, key=key(0))
            elbo.estimate(key(1), params, *DATA)


def test_a_guide_missing_a_latent_site_names_it():
    def guide(params, y, z, mu_scale):
        ppl.sample("mu", dist.Normal(params["loc"], 1.0))

    elbo = ppl.vi.objectives.elbo(model, guide)
    with pytest.raises(ppl.ModelError, match="latent site 'scale' of model has no value"):
        elbo.estimate(key(0), {"loc": 0.0}, *DATA)
    partial = AutoNormal(handlers.block(model, hide=["scale"]))  # built for a model without 'scale'
    elbo = ppl.vi.objectives.elbo(model, partial)
    with pytest.raises(
        ppl.ModelError, match=r"latent site 'scale' of model has no value \(values given: \['mu'\]\)"
    ):
        ppl.vi.initial_params(elbo, {}, *DATA, key=key(0))


def test_an_autoguide_needs_its_initial_params():
    elbo = ppl.vi.objectives.elbo(model, AutoNormal(model))
    with pytest.raises(ppl.ModelError, match="AutoNormal sets itself up on its first run .* concrete data"):
        jax.jit(elbo.estimate)(key(0), {}, *DATA)
    with pytest.raises(ppl.ModelError, match="AutoNormal sets itself up .* needs a key"):
        elbo.estimate(key(0), {}, *DATA)
    params = ppl.vi.initial_params(elbo, {}, *DATA, key=key(0))
    assert set(params) == {"mu_auto_loc", "mu_auto_scale", "scale_auto_loc", "scale_auto_scale"}
    del params["scale_auto_scale"]
    with pytest.raises(ppl.ModelError, match="param site 'scale_auto_scale' of AutoNormal has no value"):
        jax.jit(elbo.estimate)(key(0), params, *DATA)


def test_param_sites_of_guides_and_models_are_parameters():
    def learned_noise_model(params, y, z, mu_scale):
        noise = ppl.param("noise", 1.5, constraint=dist.constraints.positive)
        mu = ppl.sample("mu", dist.Normal(0.0, mu_scale))
        ppl.sample("y", dist.Normal(mu, noise).expand([y.shape[0]]).to_event(1), obs=y)

    def guide(params, y, z, mu_scale):
        sd = ppl.param("sd", 2.0, constraint=dist.constraints.positive)
        ppl.sample("mu", dist.Normal(ppl.param("loc", 0.5) + params["shift"], sd))

    elbo = ppl.vi.objectives.elbo(learned_noise_model, guide)
    params = ppl.vi.initial_params(elbo, {"shift": 0.1, "loc": -1.0}, *DATA, key=key(0))
    # Given values are kept; missing ones start at their initial value, unconstrained.
    assert params["loc"] == -1.0 and params["shift"] == 0.1 and set(params) == {"shift", "loc", "sd", "noise"}
    assert float(params["sd"]) == pytest.approx(np.log(2.0)) and float(params["noise"]) == pytest.approx(
        np.log(1.5)
    )
    assert float(ppl.vi.constrained_params(guide, params, *DATA)["sd"]) == pytest.approx(2.0)
    params["noise"] = jnp.log(3.0)  # the model sees the parameter's value, not its initial one
    assert float(ppl.vi.constrained_params(learned_noise_model, params, *DATA)["noise"]) == pytest.approx(3.0)
    result = ppl.vi.VIResult(params, np.zeros(1), np.zeros(1), params, 0, None)
    draws = result.draws(guide, key(1), 4, *DATA, model=learned_noise_model)
    expected = norm.logpdf(np.asarray(Y), draws.samples["mu"][0, :, None], 3.0).sum(axis=1)
    np.testing.assert_allclose(draws.log_likelihood["y"][0], expected, rtol=1e-5)
