"""Diffusion posterior samplers against the exact Gaussian-mixture oracle.

Tolerances: SW between 2000 draws and 2000 exact posterior draws is compared with
3x the exact-vs-exact floor (the same estimator on two exact sample sets), as the issue
asks; the component-weight TV of an exact sampler with ESS ~ 1000 has sd < 0.02.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.smc import diffusion as D
from tests.seeds import key

SCHEDULE = D.vp()


@pytest.fixture(scope="module")
def problem():
    mixture, observation, _ = D.grid_mixture_problem(1, 8, 2)
    posterior = mixture.posterior(observation)
    exact = posterior.sample(key(1), 2000)
    floor = float(D.sliced_wasserstein(key(9), exact, posterior.sample(key(2), 2000)))
    return mixture, observation, posterior, exact, floor


def test_noised_score_is_the_gradient_of_the_noised_log_density():
    mixture, _, _ = D.grid_mixture_problem(3, 8, 2)
    prior = mixture.diffusion_prior(SCHEDULE)
    x = jax.random.normal(key(0), (8,)) * 5
    for t in (0.05, 0.3, 0.9):
        noised = mixture.noised(SCHEDULE.alpha(t), SCHEDULE.sigma(t))
        np.testing.assert_allclose(prior.score(x, t), jax.grad(noised.log_density)(x), rtol=1e-4, atol=1e-4)
        # the three parameterisations agree
        np.testing.assert_allclose(prior.noise(x, t), -SCHEDULE.sigma(t) * prior.score(x, t), rtol=1e-5)


def test_exact_posterior_equals_brute_force_reweighting_in_one_dimension():
    mixture = D.GaussianMixture(
        jnp.array([0.2, 0.5, 0.3]), jnp.array([[-3.0], [0.5], [4.0]]), jnp.array([0.5, 1.0, 0.3])
    )
    observation = D.measurement(jnp.array([[0.8]]), jnp.array([1.1]), 0.7)
    posterior = mixture.posterior(observation)
    grid = np.linspace(-10, 10, 20001)
    log_joint = np.array(
        jax.vmap(lambda x: mixture.log_density(x) + observation.log_likelihood(x))(grid[:, None])
    )
    log_evidence = np.log(np.sum(np.exp(log_joint)) * (grid[1] - grid[0]))
    np.testing.assert_allclose(float(posterior.log_evidence), log_evidence, atol=1e-5)
    brute = np.exp(log_joint - log_evidence)
    exact = np.exp(np.array(jax.vmap(posterior.log_density)(grid[:, None])))
    np.testing.assert_allclose(exact, brute, atol=1e-5)


def test_noised_likelihood_is_the_true_likelihood_at_time_zero(problem):
    mixture, observation, *_ = problem
    twist = mixture.noised_log_likelihood(observation, SCHEDULE)
    x = jax.random.normal(key(0), (8,))
    np.testing.assert_allclose(twist(x, 0.0), observation.log_likelihood(x), rtol=1e-5)
    # at the noise end it is p(y) (x_T carries no information)
    np.testing.assert_allclose(twist(x, 1.0), mixture.posterior(observation).log_evidence, atol=0.1)


def _check(result, problem, factor=3.0, tv=0.1):
    *_, posterior, exact, floor = problem
    draws = result.sample(key(3), 2000)
    distance = float(D.sliced_wasserstein(key(9), draws, exact))
    error = float(posterior.component_error(result.particles, result.weights))
    assert distance <= factor * floor, (result.method, distance, floor)
    assert error <= tv, (result.method, error)


def test_tds_matches_the_exact_posterior(problem):
    mixture, observation, *_ = problem
    result = D.tds(
        mixture.diffusion_prior(SCHEDULE),
        observation,
        key=key(0),
        num_particles=2000,
        num_steps=100,
    )
    _check(result, problem)
    assert abs(float(result.log_evidence) - float(problem[2].log_evidence)) < 0.5


def test_mcgdiff_matches_the_exact_posterior_on_average_over_runs(problem):
    """MCGdiff resamples at every step, so one run's error varies far more than its ESS
    says (SW 0.3-3.1x the floor over keys at N = 2000; issue 16): the check is on the
    mean of 4 independent runs, whose spread is about half a single run's."""
    mixture, observation, posterior, exact, floor = problem
    prior = mixture.diffusion_prior(SCHEDULE)
    ratios, errors, evidences = [], [], []
    for seed in range(4):
        result = D.mcgdiff(prior, observation, key=key(seed), num_particles=2000, num_steps=100)
        draws = result.sample(key(3), 2000)
        ratios.append(float(D.sliced_wasserstein(key(9), draws, exact)) / floor)
        errors.append(float(posterior.component_error(result.particles, result.weights)))
        evidences.append(result.log_evidence)
    assert np.mean(ratios) <= 3.0, ratios
    assert np.mean(errors) <= 0.1, errors
    assert abs(np.mean(evidences) - float(posterior.log_evidence)) < 0.5, evidences


def test_tds_with_the_optimal_twist_keeps_ess_near_n(problem):
    mixture, observation, *_ = problem
    twist = mixture.noised_log_likelihood(observation, SCHEDULE)
    result = D.tds(
        mixture.diffusion_prior(SCHEDULE),
        observation,
        key=key(0),
        num_particles=1000,
        num_steps=100,
        twist_fn=twist,
    )
    assert float(np.min(result.ess_history)) >= 0.6 * 1000
    _check(result, problem)


@pytest.mark.parametrize("variant", ["sde", "ode"])
def test_afdps_converges_on_a_two_component_mixture(variant):
    """The weight of component 0, averaged over 8 independent runs, is within 3 standard
    errors (across runs) of the exact posterior weight. One run is not enough: the component
    of each lineage is decided at high noise, so a run's TV varies far more than N
    independent draws would (sde: 0.003-0.12 over seeds at N = 4000)."""
    mixture = D.GaussianMixture(jnp.array([0.3, 0.7]), jnp.array([[-2.0, 0.0], [2.0, 0.0]]), 0.5)
    observation = D.measurement(jnp.array([[1.0, 0.5]]), jnp.array([-0.5]), 1.0)
    posterior = mixture.posterior(observation)
    prior = mixture.diffusion_prior(SCHEDULE)
    first_weights, log_evidences = [], []
    for seed in range(8):
        result = D.afdps(
            prior,
            observation,
            key=key(seed),
            num_particles=4000,
            num_steps=100,
            variant=variant,
            langevin_steps=0,
        )
        responsibilities = jax.vmap(lambda x: jax.nn.softmax(posterior.log_component_densities(x)))(
            result.particles
        )
        first_weights.append(float(result.weights @ responsibilities[:, 0]))
        log_evidences.append(float(result.log_evidence))
    mean, se = np.mean(first_weights), np.std(first_weights, ddof=1) / np.sqrt(len(first_weights))
    assert se < 0.05, first_weights  # informative: the prior weight 0.3 is 6 se away
    assert abs(mean - float(posterior.weights[0])) < 3 * se + 1e-3, (mean, se, float(posterior.weights[0]))
    if variant == "ode":
        # the SDE variant's evidence carries Euler-Maruyama bias (-1.80 at 100 steps, -2.32 at 500);
        # the ODE variant's is -2.47 against -2.54 exact (20,000 particles): 0.3 allows that bias
        assert abs(np.mean(log_evidences) - float(posterior.log_evidence)) < 0.3


def test_dps_without_guidance_samples_the_prior(problem):
    mixture, observation, *_ = problem
    result = D.dps(
        mixture.diffusion_prior(SCHEDULE),
        observation,
        key=key(0),
        num_particles=2000,
        num_steps=100,
        guidance_scale=0.0,
    )
    prior_draws = mixture.sample(key(5), 2000)
    floor = float(D.sliced_wasserstein(key(9), prior_draws, mixture.sample(key(6), 2000)))
    assert float(D.sliced_wasserstein(key(9), result.particles, prior_draws)) <= 3 * floor


def test_fps_is_deterministic_and_equally_weighted(problem):
    mixture, observation, *_ = problem
    prior = mixture.diffusion_prior(SCHEDULE)
    first = D.fps(prior, observation, key=key(0), num_particles=200, num_steps=20)
    second = D.fps(prior, observation, key=key(0), num_particles=200, num_steps=20)
    assert np.array_equal(first.particles, second.particles)
    assert np.allclose(first.weights, 1 / 200)


def test_new_instance_of_the_same_shape_does_not_recompile():
    from ppl.smc.diffusion import base

    programs = (base._init_islands, base._advance, base._finish)
    for seed in (11, 12, 13):
        mixture, observation, _ = D.grid_mixture_problem(seed, 8, 2)
        D.mcgdiff(
            mixture.diffusion_prior(D.vp()),
            observation,
            key=key(0),
            num_particles=100,
            num_steps=10,
        )
        if seed == 11:
            sizes = [program._cache_size() for program in programs]
    assert [program._cache_size() for program in programs] == sizes


def test_result_to_arviz_round_trip(problem, tmp_path):
    import ppl

    mixture, observation, *_ = problem
    result = D.mcgdiff(
        mixture.diffusion_prior(SCHEDULE), observation, key=key(0), num_particles=100, num_steps=10
    )
    idata = result.to_arviz(key(1))
    assert idata.posterior["x"].shape == (1, 100, 8)
    assert idata.sample_stats["ess"].dims == ("chain", "island", "diffusion_step")
    assert idata.sample_stats["ess"].shape == (1, 1, 10)
    assert float(idata.sample_stats["log_evidence"].values[0]) == result.log_evidence
    # log p(y | x) per entry of y, at the resampled draws
    assert idata.log_likelihood["y"].shape == (1, 100, 2)
    x = idata.posterior["x"].values[0]
    expected = np.array([float(observation.log_likelihood(xi)) for xi in x[:5]])
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0, :5].sum(-1), expected, rtol=1e-5)
    np.testing.assert_array_equal(idata.observed_data["y"].values, np.asarray(observation.y))
    ppl.save(idata, str(tmp_path / "d.nc"))
    loaded = ppl.load(str(tmp_path / "d.nc"))
    for group in idata.groups():
        assert loaded[group].identical(idata[group]), group


def test_bad_input_gives_clear_errors(problem):
    mixture, observation, *_ = problem
    prior = mixture.diffusion_prior(SCHEDULE)
    with pytest.raises(ValueError, match=r"shape \(2, 8\).*y has shape \(3,\)"):
        D.measurement(np.ones((2, 8)), np.ones(3), 0.1)
    with pytest.raises(ValueError, match="noise_std must be a positive"):
        D.measurement(np.ones((2, 8)), np.ones(2), 0.0)
    with pytest.raises(ValueError, match="prior has dim = 8"):
        D.tds(prior, D.measurement(np.ones((2, 6)), np.ones(2), 0.1), key=key(0))
    with pytest.raises(ValueError, match=r"returns shape \(4,\)"):
        D.DiffusionPrior(SCHEDULE, 8, score_fn=lambda x, t: x[:4])
    with pytest.raises(TypeError, match="linear forward map"):
        D.mcgdiff(prior, D.measurement(lambda x: x[:2] ** 2, np.ones(2), 0.1, dim=8), key=key(0))
    with pytest.raises(ValueError, match="multiple of num_islands"):
        D.tds(prior, observation, key=key(0), num_particles=0)
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        D.tds(prior, observation, key=0)


def test_weight_collapse_warns_with_the_ess_history(problem):
    mixture, observation, *_ = problem
    with pytest.warns(RuntimeWarning, match="weight collapse.*ESS history"):
        D.afdps(
            mixture.diffusion_prior(SCHEDULE),
            observation,
            key=key(0),
            num_particles=200,
            num_steps=20,
            variant="sde",
        )


def test_nonlinear_forward_map_runs_through_tds_and_afdps():
    mixture = D.GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[-2.0, 0.0], [2.0, 0.0]]))
    observation = D.measurement(lambda x: jnp.tanh(x[:1]), jnp.array([0.9]), 0.2, dim=2)
    prior = mixture.diffusion_prior(SCHEDULE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for sampler in (D.tds, D.afdps):
            result = sampler(prior, observation, key=key(0), num_particles=500, num_steps=30)
            # tanh(x_1) = 0.9 selects the positive component
            assert float(result.weights @ result.particles[:, 0]) > 1.0
