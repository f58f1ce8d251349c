"""SMC over 4 host CPU devices: one independent particle system per device, merged by evidence.

Runs in a subprocess (XLA reads the device-count flag once, at start-up). Checks, for the
diffusion samplers and tempered SMC: the merged particles still match the exact posterior
(same tolerances as the one-device tests), the merged evidence is the mean of the island
evidences, each island's share of the weight is its evidence's share, and the same key
gives the same result.
"""

import textwrap

from tests.four_devices import run_on_four_devices

SCRIPT = textwrap.dedent(
    """
    import warnings
    import jax, jax.numpy as jnp, numpy as np
    from jax.scipy.special import logsumexp
    import ppl
    from ppl.smc import diffusion as D
    from tests.smc.test_tempered import X, Y, SIGMA, TAU, regression
    assert jax.local_device_count() == 4, jax.devices()
    warnings.simplefilter("ignore")

    mixture, observation, _ = D.grid_mixture_problem(1, 8, 2)
    posterior = mixture.posterior(observation)
    exact = posterior.sample(jax.random.key(1), 2000)
    floor = float(D.sliced_wasserstein(jax.random.key(9), exact, posterior.sample(jax.random.key(2), 2000)))
    prior = mixture.diffusion_prior(D.vp())
    for sampler in (D.tds, D.mcgdiff):
        run = lambda: sampler(jax.random.key(0), prior, observation, num_particles=2000, num_steps=100,
                              devices=4)
        result = run()
        assert result.num_islands == 4 and result.particles.shape == (2000, 8)
        np.testing.assert_allclose(float(jnp.sum(result.weights)), 1.0, rtol=1e-5)
        draws = result.sample(jax.random.key(3), 2000)
        distance = float(D.sliced_wasserstein(jax.random.key(9), draws, exact))
        assert distance <= 3 * floor, (result.method, distance, floor)
        assert float(posterior.component_error(result.particles, result.weights)) <= 0.1
        assert abs(float(result.log_evidence) - float(posterior.log_evidence)) < 0.5
        again = run()
        np.testing.assert_array_equal(np.asarray(again.particles), np.asarray(result.particles))
        print(result.method, "OK", round(distance / floor, 2))

    runs = [ppl.smc.tempered(regression, X, y=Y, key=jax.random.key(s), num_particles=1000, devices=4)
            for s in range(4)]
    per_device = np.asarray(runs[0].log_evidence_per_device)
    assert per_device.shape == (4,)
    np.testing.assert_allclose(float(runs[0].log_evidence), logsumexp(per_device) - np.log(4), rtol=1e-5)
    # island j holds particles [250 j, 250 (j + 1)); its weight share is Z_j / sum Z
    shares = np.exp(logsumexp(np.asarray(runs[0].log_weights).reshape(4, 250), axis=1))
    np.testing.assert_allclose(shares, np.exp(per_device - logsumexp(per_device)), rtol=1e-4)
    from scipy.stats import multivariate_normal
    truth = multivariate_normal(np.zeros(20), TAU**2 * X @ X.T + SIGMA**2 * np.eye(20)).logpdf(Y)
    estimates = np.array([float(r.log_evidence) for r in runs])
    se = estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert abs(estimates.mean() - truth) <= 3 * se, (estimates, truth)
    print("tempered OK", estimates.round(3).tolist(), round(float(truth), 3))
    """
)


def test_samplers_on_four_devices():
    stdout = run_on_four_devices(SCRIPT)
    assert "tds OK" in stdout and "mcgdiff OK" in stdout and "tempered OK" in stdout
    print(stdout)
