"""ppl.vi.fit: converges to exact posteriors, minibatches with the right scale, is
deterministic, never returns non-finite parameters, and exports to ArviZ."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from numpyro import handlers

import ppl
from ppl import dist
from tests.seeds import key
from tests.vi.models import NORMAL_PARAMS, Y, normal_guide, normal_model

ELBO = ppl.vi.objectives.elbo(normal_model, normal_guide())


def exact_posterior(y):
    precision = 1.0 + y.shape[0]
    return float(jnp.sum(y) / precision), float(-0.5 * jnp.log(precision))


def test_fit_reaches_the_conjugate_posterior():
    result = ppl.vi.fit(
        ELBO,
        NORMAL_PARAMS,
        Y,
        # a decaying step size: at a constant 0.02 Adam's last iterate jitters around the
        # optimum with sd 0.03 (m) and 0.05 (log_s) over keys, as large as the tolerances
        optimizer=optax.adam(optax.exponential_decay(0.02, 1500, 0.01)),
        steps=1500,
        key=key(0),
        num_samples=16,
    )
    mean, log_sd = exact_posterior(Y)
    # over 30 keys the last iterate is off by sd 0.005 in m and in log_s: 6 and 10 sd here
    assert abs(float(result.params["m"]) - mean) < 0.03
    assert abs(float(result.params["log_s"]) - log_sd) < 0.05
    assert result.objective.shape == (1500,) and result.num_nonfinite == 0
    assert result.trajectory_steps[-1] == 1500 and result.trajectory["m"].shape == (
        len(result.trajectory_steps),
    )


def test_fit_is_deterministic_and_does_not_recompile_for_new_data():
    # Count traces of the model, as tests/test_mcmc.py does for NUTS: a re-trace is a recompile.
    traces = []

    def counted_model(params, y):
        traces.append(1)
        normal_model(params, y)

    objective = ppl.vi.objectives.elbo(counted_model, normal_guide())
    kwargs = dict(optimizer=optax.adam(0.02), steps=40, key=key(3), num_samples=4)
    first = ppl.vi.fit(objective, NORMAL_PARAMS, Y, **kwargs)
    count = len(traces)
    again = ppl.vi.fit(objective, NORMAL_PARAMS, Y, **kwargs)
    np.testing.assert_array_equal(first.objective, again.objective)
    ppl.vi.fit(objective, NORMAL_PARAMS, Y + 1.0, **kwargs)
    assert count > 0 and len(traces) == count  # new data, same shapes: no re-trace


def scaled_model(params, y, num_data):
    z = ppl.sample("z", dist.Normal(0.0, 1.0))
    with handlers.scale(scale=num_data / y.shape[0]), ppl.plate("data", y.shape[0]):
        ppl.sample("y", dist.Normal(z, 1.0), obs=y)


def test_minibatch_scaling_gives_the_full_data_posterior():
    y = jax.random.normal(key(5), (40,)) + 0.5
    objective = ppl.vi.objectives.elbo(scaled_model, normal_guide())
    result = ppl.vi.fit(
        objective,
        NORMAL_PARAMS,
        y,
        40.0,
        # a decaying step size, so the last iterate is not dominated by minibatch noise
        optimizer=optax.adam(optax.exponential_decay(0.05, 3000, 0.01)),
        steps=3000,
        key=key(1),
        num_samples=8,
        batch_size=10,
    )
    mean, log_sd = exact_posterior(y)
    # Over 30 keys (data and fit) the last iterate is off by sd 0.008 in m and 0.011 in
    # log_s: the bounds are 6 and 9 sd. Without the N / B scale the posterior sd would be
    # off by log 2 = 0.69 in log_s.
    assert abs(float(result.params["m"]) - mean) < 0.05
    assert abs(float(result.params["log_s"]) - log_sd) < 0.1


def nan_objective():
    def guide(params):
        ppl.sample("z", dist.Normal(params["loc"], 0.1))

    @ppl.vi.expectation
    def objective(params):
        values, _ = ppl.vi.sim(guide, params)
        return -((values["z"] - 2.0) ** 2) + jnp.where(params["loc"] > 1.0, jnp.nan, 0.0)

    return objective


def test_nonfinite_steps_are_skipped_with_a_warning():
    with pytest.warns(RuntimeWarning, match=r"non-finite .*first at step \d+"):
        result = ppl.vi.fit(
            nan_objective(),
            {"loc": jnp.array(0.0)},
            optimizer=optax.sgd(0.05),
            steps=100,
            key=key(0),
        )
    assert np.isfinite(result.params["loc"]) and result.num_nonfinite > 0
    assert result.first_nonfinite_step is not None


def test_nonfinite_raise_names_the_step():
    with pytest.raises(FloatingPointError, match="not finite at step"):
        ppl.vi.fit(
            nan_objective(),
            {"loc": jnp.array(0.0)},
            optimizer=optax.sgd(0.05),
            steps=100,
            key=key(0),
            on_nonfinite="raise",
        )


def test_fit_argument_errors():
    kwargs = dict(optimizer=optax.sgd(0.1), steps=5, key=key(0))
    with pytest.raises(TypeError, match="Expectation"):
        ppl.vi.fit(lambda p: p, NORMAL_PARAMS, **kwargs)
    with pytest.raises(ValueError, match="on_nonfinite"):
        ppl.vi.fit(ELBO, NORMAL_PARAMS, Y, on_nonfinite="ignore", **kwargs)
    with pytest.raises(ValueError, match="batch_size"):
        ppl.vi.fit(ELBO, NORMAL_PARAMS, Y, batch_size=50, **kwargs)
    with pytest.raises(ValueError, match="NaN"):
        ppl.vi.fit(ELBO, {"m": jnp.nan, "log_s": 0.0}, Y, **kwargs)


def test_guide_draws_to_arviz_round_trip(tmp_path):
    result = ppl.vi.fit(ELBO, NORMAL_PARAMS, Y, optimizer=optax.adam(0.05), steps=50, key=key(0))
    data = result.to_arviz(normal_guide(), key(1), 500, Y)
    assert data.posterior["z"].shape == (1, 500)
    # the mean of 500 guide draws: 5 standard errors (the guide's sd / sqrt(500))
    sd = float(np.exp(result.params["log_s"]))
    assert abs(float(data.posterior["z"].mean()) - float(result.params["m"])) < 5 * sd / np.sqrt(500)
    path = tmp_path / "vi.nc"
    ppl.save(data, str(path))
    assert ppl.load(str(path)).posterior.identical(data.posterior)


def test_one_update_is_an_sgd_step_on_the_mean_of_the_estimates():
    """The kernel alone, against a hand computation with the same keys."""
    optimizer, rng_key = optax.sgd(0.1), key(4)
    pair = ppl.vi.fitter(ELBO, optimizer, num_samples=3)
    state = pair.init(NORMAL_PARAMS)
    new, info = jax.jit(pair.update)(rng_key, state, Y)
    _, estimate_key = jax.random.split(rng_key)
    estimates = [
        ELBO.value_and_grad_estimate(jax.random.fold_in(estimate_key, j), state.params, Y) for j in range(3)
    ]
    value = np.mean([float(v) for v, _ in estimates])
    for name in NORMAL_PARAMS:
        gradient = np.mean([float(g[name]) for _, g in estimates])
        np.testing.assert_allclose(new.params[name], float(state.params[name]) + 0.1 * gradient, rtol=1e-5)
    np.testing.assert_allclose(float(info.objective), value, rtol=1e-5)
    assert int(new.step) == 1 and bool(info.finite) and int(new.num_nonfinite) == 0


def test_a_nonfinite_update_is_not_applied_and_is_counted():
    pair = ppl.vi.fitter(nan_objective(), optax.sgd(0.05), on_nonfinite="stop")
    state = pair.init({"loc": jnp.array(2.0)})  # loc > 1: the objective is NaN
    new, info = pair.update(key(0), state)
    assert not bool(info.finite) and bool(new.stopped)
    assert (
        float(new.params["loc"]) == 2.0 and int(new.num_nonfinite) == 1 and int(new.first_nonfinite_step) == 0
    )
    again, _ = pair.update(key(1), new._replace(params={"loc": jnp.array(0.0)}))
    assert float(again.params["loc"]) == 0.0  # stopped: no later step is applied
