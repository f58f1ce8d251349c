"""Every SMC sampler against exact posteriors it was not tuned on.

Four-component mixtures in d = 8 with correlated components
(:func:`~ppl.smc.diffusion.correlated_mixture_problem`), observed through a random 2 x 8
matrix or by inpainting (2 of 8 coordinates), at sigma_y = 0.05 and 0.3; instances are
the first seeds whose exact posterior has at least two components of weight >= 0.1, so
the component weights are at stake. Each sampler runs with N = 4000 particles, 100
steps, ``NUM_KEYS`` times (one call with ``NUM_KEYS`` islands, each an independent run:
one compilation, one vectorised program), and the checks are on medians over runs:

* sliced Wasserstein between 2000 draws from the weighted particles and 2000 exact draws
  within 2.5x the exact-vs-exact floor (the mean over 5 pairs of exact draw sets). With
  N = 2000 TDS's median is 1.7-1.9x on the inpainting instances but 40% of its runs are
  above 2.5x (its component weights vary 3x more than independent draws would), so a
  median over a few keys would pass or fail by chance; N = 4000 puts that tail near 10%;
* total variation of the component weights <= 0.1;
* log-evidence: the median error within ``3 * 1.4826 * MAD / sqrt(NUM_KEYS) + 0.25`` of 0
  (the across-key spread, as a robust standard error of the median, plus an allowance for
  the time discretisation of 100 steps, which the estimators share).

AFDPS is checked on the matrix instances only: on inpainting its path fails (see
``AFDPS_INPAINTING``). What fails these checks: DPS (no weights; SW 17-29x the floor,
TV 0.25-0.42 on every instance) and AFDPS on the inpainting instances.
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.smc import diffusion as D
from tests.seeds import key
from tests.smc.islands import independent_runs

NUM_KEYS = 8
N, DRAWS, STEPS, DIM = 4000, 2000, 100, 8
SAMPLERS = {
    "tds": D.tds,
    "mcgdiff": D.mcgdiff,
    "afdps-sde": D.afdps,
    "afdps-ode": functools.partial(D.afdps, variant="ode"),
}


@functools.cache
def instance(inpainting: bool, noise_std: float):
    """The first seed >= 0 whose exact posterior has two components of weight >= 0.1."""
    for seed in range(200):
        mixture, observation, _ = D.correlated_mixture_problem(
            seed, DIM, 2, inpainting=inpainting, noise_std=noise_std
        )
        posterior = mixture.posterior(observation)
        if np.sum(np.asarray(posterior.weights) >= 0.1) >= 2:
            exact = posterior.sample(jax.random.key(seed), DRAWS)
            floors = [
                D.sliced_wasserstein(
                    jax.random.key(1), exact, posterior.sample(jax.random.key(seed + j), DRAWS)
                )
                for j in range(1, 6)
            ]
            floor = float(np.mean(floors))
            return mixture.diffusion_prior(D.vp()), observation, posterior, exact, floor
    raise AssertionError("no ambiguous instance in 200 seeds")


AFDPS_INPAINTING = (
    "AFDPS's path (the noised prior times the un-noised likelihood) moves the component "
    "weights far along the way when 6 of 8 correlated coordinates are free: SW 2-88x the "
    "floor, TV up to 0.84 (both variants; benchmarks/diffusion_mixtures.py measures it)"
)


def cases():
    for name in SAMPLERS:
        for inpainting in (False, True):
            for noise_std in (0.05, 0.3):
                marks = (
                    [pytest.mark.skip(reason=AFDPS_INPAINTING)]
                    if inpainting and name.startswith("afdps")
                    else []
                )
                label = f"{name}-{'inpainting' if inpainting else 'matrix'}-{noise_std}"
                yield pytest.param(name, inpainting, noise_std, marks=marks, id=label)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "inpainting", "noise_std"), list(cases()))
def test_sampler_matches_the_exact_posterior(name, inpainting, noise_std):
    prior, observation, posterior, exact, floor = instance(inpainting, noise_std)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a collapse in one run warns; judged below
        result = SAMPLERS[name](
            prior, observation, key=key(0), num_particles=NUM_KEYS * N, num_islands=NUM_KEYS, num_steps=STEPS
        )
    sw, tv = [], []
    particles_per_run, weights_per_run, log_z = independent_runs(result, NUM_KEYS)
    for i, (particles, weights) in enumerate(zip(particles_per_run, weights_per_run, strict=True)):
        draws = particles[np.asarray(jax.random.choice(key(100 + i), N, (DRAWS,), p=jnp.asarray(weights)))]
        sw.append(float(D.sliced_wasserstein(jax.random.key(1), draws, exact)) / floor)
        tv.append(float(posterior.component_error(particles, weights)))
    errors = log_z - float(posterior.log_evidence)
    spread = 1.4826 * np.median(np.abs(errors - np.median(errors))) / np.sqrt(NUM_KEYS)
    summary = f"SW/floor {np.round(sw, 2)}, TV {np.round(tv, 3)}, log-evidence errors {np.round(errors, 2)}"
    assert np.median(sw) <= 2.5, summary
    assert np.median(tv) <= 0.1, summary
    assert abs(np.median(errors)) <= 3 * spread + 0.25, summary
