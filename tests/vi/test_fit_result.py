"""``VIResult``'s defaults (the fit's guide, data and key) and NaN in the data given to ``fit``."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ppl
from ppl import dist
from tests.seeds import key
from tests.vi.models import NORMAL_PARAMS, Y, normal_guide, normal_model

STEPS = 20
SETTINGS = {"optimizer": optax.adam(0.05), "steps": STEPS}


@pytest.fixture(scope="module")
def result():
    objective = ppl.vi.objectives.elbo(normal_model, normal_guide())
    return ppl.vi.fit(objective, NORMAL_PARAMS, Y, key=key(0), **SETTINGS)


def test_to_arviz_without_arguments(result):
    idata = result.to_arviz()
    assert idata.posterior["z"].shape == (1, 1000)
    np.testing.assert_allclose(idata.sample_stats["objective"].values, result.objective[None])
    assert idata.sample_stats["objective"].dims == ("chain", "fit_step")
    # The default key is derived from the fit's key: the same result gives the same draws.
    np.testing.assert_array_equal(result.to_arviz().posterior["z"].values, idata.posterior["z"].values)
    explicit = result.to_arviz(normal_guide(), result.draws_key, 1000, Y)
    np.testing.assert_array_equal(explicit.posterior["z"].values, idata.posterior["z"].values)


def test_draws_default_key_differs_from_the_steps_keys(result):
    assert not np.array_equal(jax.random.key_data(result.draws_key), jax.random.key_data(key(0)))
    assert result.draws(num_samples=5).samples["z"].shape == (1, 5)


def test_hand_written_objective_needs_the_guide():
    guide = normal_guide()

    @ppl.vi.expectation
    def elbo(params, y):
        values, log_q = ppl.vi.sim(guide, params, y)
        return ppl.vi.density(normal_model, values, params, y) - log_q

    fitted = ppl.vi.fit(elbo, NORMAL_PARAMS, Y, key=key(1), **SETTINGS)
    with pytest.raises(ValueError, match="guide is not known"):
        fitted.to_arviz()
    assert fitted.to_arviz(guide, key(2), 10, Y).posterior["z"].shape == (1, 10)


# --------------------------------------------------------------------- NaN in the data


def test_nan_in_the_data_is_named_before_the_first_step():
    y = Y.at[3].set(jnp.nan)
    objective = ppl.vi.objectives.elbo(normal_model, normal_guide())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no step is taken, so no skipped-steps warning
        with pytest.raises(
            ValueError, match=r"data argument 0 \(shape \(5,\)\) has 1 NaN, the first at index \(3,\)"
        ):
            ppl.vi.fit(objective, NORMAL_PARAMS, y, key=key(0), **SETTINGS)


def masked_model(params, y):
    """Missing values masked out, NaN kept away from every log-density."""
    z = ppl.sample("z", dist.Normal(0.0, 1.0))
    observed = ~jnp.isnan(y)
    with ppl.plate("data", y.shape[0]):
        ppl.sample("y", dist.Normal(z, 1.0).mask(observed), obs=jnp.where(observed, y, 0.0))


def test_nan_in_the_data_of_a_masking_model_is_fine():
    y = Y.at[3].set(jnp.nan)
    objective = ppl.vi.objectives.elbo(masked_model, normal_guide())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted = ppl.vi.fit(objective, NORMAL_PARAMS, y, key=key(0), **SETTINGS)
    assert fitted.num_nonfinite == 0


def test_nan_note_lists_every_argument_and_leaf():
    from ppl.vi.fit import _nan_in_data

    note = _nan_in_data((np.zeros(3), {"a": np.array([[0.0, np.nan], [np.nan, 1.0]])}, "label", 2))
    assert note == "data argument 1['a'] (shape (2, 2)) has 2 NaN, the first at index (0, 1)"
    assert _nan_in_data((np.arange(3), np.ones(2))) is None
