"""Bad measurements are named before any sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.smc import diffusion as D


@pytest.mark.parametrize(
    ("matrix", "y", "message"),
    [
        (
            np.ones((2, 3)),
            [1.0, np.nan],
            r"y of shape \(2,\) has 1 non-finite entry; the first is y\[1\] = nan",
        ),
        (np.ones((2, 3)), [np.inf, np.nan], r"has 2 non-finite entries; the first is y\[0\] = inf"),
        (
            np.array([[1.0, 0.0, 0.0], [0.0, np.nan, 1.0]]),
            [1.0, 2.0],
            r"A of shape \(2, 3\) has 1 non-finite entry; the first is A\[1, 1\] = nan",
        ),
    ],
)
def test_non_finite_arrays_are_named_with_the_first_bad_index(matrix, y, message):
    with pytest.raises(ValueError, match=message):
        D.measurement(matrix, y, 0.1)


def test_non_finite_y_is_named_for_a_nonlinear_map_and_a_mask():
    with pytest.raises(ValueError, match=r"y\[0\] = inf"):
        D.measurement(lambda x: x[:1], [np.inf], 0.1, dim=2)
    with pytest.raises(ValueError, match=r"y\[1\] = nan"):
        D.measurement(D.MaskOperator([True, False, True]), jnp.array([0.0, jnp.nan]), 0.1)


@pytest.mark.parametrize("noise_std", [np.nan, np.inf, -1.0])
def test_bad_noise_is_named(noise_std):
    with pytest.raises(ValueError, match="noise_std must be a positive number"):
        D.measurement(np.ones((1, 2)), [0.0], noise_std)


@pytest.mark.parametrize("sampler", [D.mcgdiff, D.fps])
def test_samplers_that_need_a_linear_operator_say_so_by_name(sampler):
    prior = D.GaussianMixture(jnp.ones(1), jnp.zeros((1, 2))).diffusion_prior(D.vp())
    nonlinear = D.measurement(lambda x: jnp.tanh(x[:1]), [0.5], 0.1, dim=2)
    name = sampler.__name__
    with pytest.raises(TypeError, match=f"{name} needs a linear forward map .* got a function"):
        sampler(prior, nonlinear, key=jax.random.key(0))
