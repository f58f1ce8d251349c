"""Diffusion posterior samplers against the exact Gaussian-mixture oracle.

Tolerances. The sliced Wasserstein (SW) distance between 2000 resampled draws and 2000
exact posterior draws is compared with the *expected* exact-vs-exact distance (the same
estimator on two exact sample sets, averaged over 8 pairs): one pair is no yardstick, it
varies from 0.05 to 0.29 over keys (mean 0.11), and "3x one floor draw" failed for correct
samplers at several keys. A sampler's particles are not N independent draws (each
lineage's component is decided at high noise), so its SW varies far more than the floor:
over 24 keys (offsets 0-23, these very computations) TDS sat at 1.7 +- 1.1 times the
expected floor (max 4.6), TDS with the exact twist at 1.9 +- 1.1 (max 4.8), the mean of 4
MCGdiff runs at 3.4 +- 1.2 (max 5.7), DPS without guidance against the prior at
1.0 +- 0.4 (max 1.8). The bounds (8x, 10x, 3x) are 5 such sd above the mean; the prior
passed off as the posterior is 65-131x, so the check keeps its power. The component-weight
TV of those runs: TDS 0.014 +- 0.009 (max 0.03), MCGdiff mean of 4 0.035 +- 0.011 (max
0.06), against 0.1 (the prior: 0.88).
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm
from scipy.stats import t as student_t

from ppl.smc import diffusion as D
from tests.seeds import key

SCHEDULE = D.vp()


@pytest.fixture(scope="module")
def problem():
    mixture, observation, _ = D.grid_mixture_problem(1, 8, 2)
    posterior = mixture.posterior(observation)
    exact = posterior.sample(key(1), 2000)
    return mixture, observation, posterior, exact, expected_floor(posterior.sample)


def expected_floor(sample, pairs=8):
    """The mean SW between two independent sets of 2000 exact draws, over ``pairs`` pairs
    (relative sd of one pair 0.45, so of the mean 0.16)."""
    keys = jax.random.split(key(7), 2 * pairs + 1)
    return float(
        np.mean(
            [
                D.sliced_wasserstein(keys[-1], sample(keys[2 * i], 2000), sample(keys[2 * i + 1], 2000))
                for i in range(pairs)
            ]
        )
    )


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
    # at the noise end it is p(y): x_T carries almost no information. Almost: alpha(1) = 0.0066,
    # so twist(x, 1) - log p(y) is linear in x to first order (gradient norm 0.18 here, so
    # +-0.18 |x| at a random x: 0.14 at one key's x, 0.38 at another's); at x = 0, the mean
    # of x_T, it is second order (0.009)
    np.testing.assert_allclose(
        twist(jnp.zeros(8), 1.0), mixture.posterior(observation).log_evidence, atol=0.05
    )


def _check(result, problem, factor=8.0, tv=0.1):
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
    says (issue 16): the check is on the mean of 4 independent runs, whose spread is about
    half a single run's (see the module docstring for the bounds). The mean of 4 log
    evidences is off by -0.09 +- 0.09 over 12 keys: 0.5 is 4.5 sd."""
    mixture, observation, posterior, exact, floor = problem
    prior = mixture.diffusion_prior(SCHEDULE)
    ratios, errors, evidences = [], [], []
    for seed in range(4):
        result = D.mcgdiff(prior, observation, key=key(seed), num_particles=2000, num_steps=100)
        draws = result.sample(key(3), 2000)
        ratios.append(float(D.sliced_wasserstein(key(9), draws, exact)) / floor)
        errors.append(float(posterior.component_error(result.particles, result.weights)))
        evidences.append(result.log_evidence)
    assert np.mean(ratios) <= 10.0, ratios
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
    # the minimum ESS over the steps, over 60 keys: 0.75 +- 0.03 N (lowest 0.63 N) with the
    # exact twist, 0.46 +- 0.03 N (highest 0.50 N) with the default one
    assert float(np.min(result.ess_history)) >= 0.55 * 1000
    _check(result, problem)


@pytest.mark.parametrize("variant", ["sde", "ode"])
def test_afdps_converges_on_a_two_component_mixture(variant):
    """The weight of component 0, averaged over 16 independent runs (16 islands of 4000
    particles in one call, each island's weights normalised on their own), is within
    Student's t (15 dof) at the false-alarm probability of 4 normal standard errors (5.5
    se, the se from the spread across runs) plus 0.01 of the exact posterior weight. One
    run is not enough: the component of each lineage is decided at high noise, so a run's
    weight varies more than N independent draws would (sd 0.005-0.01 per run). The 0.01 is
    for the discretisation bias at 100 steps (keys 0-2: ode 0.5905-0.5948, sde
    0.5882-0.5928, se 0.002-0.003, against 0.5947)."""
    mixture = D.GaussianMixture(jnp.array([0.3, 0.7]), jnp.array([[-2.0, 0.0], [2.0, 0.0]]), 0.5)
    observation = D.measurement(jnp.array([[1.0, 0.5]]), jnp.array([-0.5]), 1.0)
    posterior = mixture.posterior(observation)
    runs, per_run = 16, 4000
    result = D.afdps(
        mixture.diffusion_prior(SCHEDULE),
        observation,
        key=key(0),
        num_particles=runs * per_run,
        num_islands=runs,
        num_steps=100,
        variant=variant,
        langevin_steps=0,
    )
    responsibilities = jax.vmap(lambda x: jax.nn.softmax(posterior.log_component_densities(x)))(
        result.particles
    )
    # island j holds particles [4000 j, 4000 (j + 1))
    log_weights = np.asarray(result.log_weights, np.float64).reshape(runs, per_run)
    weights = np.exp(log_weights - log_weights.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    first_weights = np.sum(weights * np.asarray(responsibilities[:, 0]).reshape(runs, per_run), axis=1)
    mean, se = first_weights.mean(), first_weights.std(ddof=1) / np.sqrt(runs)
    exact = float(posterior.weights[0])
    bound = student_t.ppf(norm.cdf(4.0), runs - 1) * se + 0.01
    assert se < 0.04, first_weights  # informative: bound < 0.23, the prior weight 0.3 is 0.29 away
    assert abs(mean - exact) < bound, (mean, se, exact)
    # keys 0-2: -2.515 to -2.518 (sde), -2.503 to -2.509 (ode) against -2.538 exact (the sde
    # variant's Euler weight gave -1.80 before the likelihood was integrated exactly)
    assert abs(float(result.log_evidence) - float(posterior.log_evidence)) < 0.3


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
    # over 24 keys: 1.0 +- 0.4 times the expected floor (max 1.8)
    floor = expected_floor(mixture.sample)
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
