"""The NUTS/HMC kernel alone: one step from a known state equals BlackJAX's kernel and
window adaptation called directly with the same key."""

import warnings

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax.adaptation.window_adaptation import base as window_adaptation_base

from ppl.mcmc import kernel
from tests.seeds import key

SCALES = jnp.array([1.0, 2.0, 0.5])


def logdensity(u):
    return -0.5 * jnp.sum((u / SCALES) ** 2)


POSITION = jnp.array([0.3, -1.2, 0.8])


def blackjax_adaptation(settings):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return window_adaptation_base(
            is_mass_matrix_diagonal=not settings.dense_mass, target_acceptance_rate=settings.target_accept
        )


@pytest.mark.parametrize("algorithm", ["nuts", "hmc"])
def test_a_sampling_step_is_blackjax_step(algorithm):
    settings = kernel.Settings(algorithm=algorithm, num_integration_steps=7, max_tree_depth=6)
    state = kernel.init(POSITION, logdensity, settings)
    step_size = jnp.float32(0.7)
    state = state._replace(step_size=step_size, inverse_mass_matrix=jnp.array([1.0, 3.0, 0.4]))
    step_key = key(11)
    new, info = kernel.step(step_key, state, logdensity, kernel.SAMPLING, (0, False), settings)
    hmc_state = blackjax.hmc.init(POSITION, logdensity)
    if algorithm == "nuts":
        expected, expected_info = blackjax.nuts.build_kernel()(
            step_key, hmc_state, logdensity, step_size, state.inverse_mass_matrix, max_num_doublings=6
        )
        assert int(info.tree_depth) == int(expected_info.num_trajectory_expansions)
    else:
        expected, expected_info = blackjax.hmc.build_kernel()(
            step_key, hmc_state, logdensity, step_size, state.inverse_mass_matrix, num_integration_steps=7
        )
        assert int(info.tree_depth) == -1
    np.testing.assert_array_equal(new.hmc.position, expected.position)
    assert float(info.lp) == float(expected.logdensity) == float(logdensity(expected.position))
    assert float(info.acceptance_rate) == float(expected_info.acceptance_rate)
    assert int(info.n_steps) == int(expected_info.num_integration_steps)
    # sampling leaves the adaptation and the tuned parameters alone
    assert new.step_size == step_size
    np.testing.assert_array_equal(
        new.adaptation.ss_state.log_step_size, state.adaptation.ss_state.log_step_size
    )


def test_a_warmup_step_updates_the_adaptation_as_blackjax_does():
    settings = kernel.Settings()
    state = kernel.init(POSITION, logdensity, settings)
    step_key, window = key(3), (1, False)  # a slow window, not its end
    new, info = kernel.step(step_key, state, logdensity, kernel.WARMUP, window, settings)
    adapt_init, adapt_update, _ = blackjax_adaptation(settings)
    adaptation = adapt_init(POSITION, settings.initial_step_size)
    moved, moved_info = blackjax.nuts.build_kernel()(
        step_key,
        blackjax.hmc.init(POSITION, logdensity),
        logdensity,
        adaptation.step_size,
        adaptation.inverse_mass_matrix,
    )
    expected = adapt_update(adaptation, window, moved.position, moved_info.acceptance_rate)
    np.testing.assert_allclose(new.step_size, expected.step_size, rtol=1e-6)
    np.testing.assert_allclose(
        new.adaptation.imm_state.wc_state.mean, expected.imm_state.wc_state.mean, rtol=1e-6
    )
    assert float(info.acceptance_rate) == float(moved_info.acceptance_rate)


def test_the_last_warmup_step_fixes_the_final_step_size_and_mass_matrix():
    settings = kernel.Settings()
    state = kernel.init(POSITION, logdensity, settings)
    step = jax.jit(lambda key, state, phase: kernel.step(key, state, logdensity, phase, (1, False), settings))
    for t in range(30):
        state, _ = step(key(t), state, kernel.WARMUP)
    state, _ = step(key(99), state, kernel.LAST_WARMUP)
    _, _, adapt_final = blackjax_adaptation(settings)
    final_step_size, final_imm = adapt_final(state.adaptation)
    np.testing.assert_allclose(state.step_size, final_step_size, rtol=1e-6)
    np.testing.assert_allclose(state.inverse_mass_matrix, final_imm, rtol=1e-6)


def test_schedule_marks_warmup_and_its_last_step():
    phases, windows = kernel.schedule(100, 5)
    assert phases.shape == (105,) and windows.shape == (105, 2)
    assert (phases[:99] == kernel.WARMUP).all() and phases[99] == kernel.LAST_WARMUP
    assert (phases[100:] == kernel.SAMPLING).all()
    # Stan's schedule: an initial fast window, slow windows (one ends on a window-end
    # flag), a final fast window
    assert windows[0, 0] == windows[99, 0] == 0 and (windows[20:80, 0] == 1).all()
    assert windows[:100, 1].sum() >= 1
    assert kernel.schedule(0, 3)[0].tolist() == [kernel.SAMPLING] * 3
