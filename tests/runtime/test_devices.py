"""Device plans, and every driver on 1 and 4 host devices.

The 4-device checks run in a subprocess (XLA reads the device-count flag once, at
start-up). What is asserted is what docs/devices.md promises: with ``sequential``
mapping NUTS draws, and VI and tempered SMC results, are bit-identical on 1 and 4
devices; the diffusion samplers agree to float rounding before resampling amplifies it
(XLA fuses their arithmetic differently when a device holds one island instead of
four), so their results are compared in distribution-preserving summaries; and
``devices=None`` uses every device.
"""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.runtime.devices import DevicePlan, map_replicas, ordered_devices, plan_devices, to_host
from tests.four_devices import run_on_four_devices


def test_plan_devices_uses_at_most_one_device_per_replica():
    plan = plan_devices(4, 1)
    assert (plan.num_devices, plan.replicas_per_device, plan.padded_replicas) == (1, 4, 4)
    assert plan_devices(3).num_devices == min(3, jax.device_count())
    assert plan == plan_devices(4, 1) and hash(plan) == hash(plan_devices(4, 1))  # static by value
    assert ordered_devices()[0] == jax.devices()[0]


@pytest.mark.parametrize(
    "replicas,devices,message",
    [
        (0, None, "chains must be an integer >= 1"),
        (2.5, None, "chains must be"),
        (4, 99, "devices must be None"),
    ],
)
def test_plan_devices_errors_name_the_argument(replicas, devices, message):
    with pytest.raises(ValueError, match=message):
        plan_devices(replicas, devices, replicas="chains")


@pytest.mark.parametrize("method", ["sequential", "vectorized"])
def test_map_replicas_maps_the_leading_axis(method):
    plan = plan_devices(3)
    mapped = jax.jit(map_replicas(lambda x, shared: (x * shared["scale"], jnp.sum(x)), plan, method))
    values, sums = to_host(mapped(jnp.arange(6.0).reshape(3, 2), {"scale": 2.0}))
    np.testing.assert_array_equal(values, np.arange(6.0).reshape(3, 2) * 2)
    np.testing.assert_array_equal(sums, [1.0, 5.0, 9.0])
    with pytest.raises(ValueError, match="method must be one of"):
        map_replicas(lambda x, s: x, plan, "parallel")


def test_device_plan_is_hashable_configuration():
    plan = DevicePlan(2, tuple(jax.devices()[:1]))
    assert {plan: 1}[DevicePlan(2, tuple(jax.devices()[:1]))] == 1


SCRIPT = textwrap.dedent(
    """
    import warnings
    import jax, numpy as np, optax
    import ppl
    from ppl.smc import diffusion as D
    from tests.models import SIGMA, Y, eight_schools
    from tests.seeds import key
    from tests.smc.test_tempered import X, Y as YR, regression
    from tests.vi.models import NORMAL_PARAMS, Y as YV, normal_guide, normal_model
    assert jax.device_count() == 4, jax.devices()
    warnings.simplefilter("ignore")

    run = dict(key=key(7), warmup=100, draws=50, chain_method="sequential")
    one = ppl.nuts(eight_schools, SIGMA, y=Y, chains=4, devices=1, **run)
    four = ppl.nuts(eight_schools, SIGMA, y=Y, chains=4, **run)
    assert (one.attrs["num_devices"], four.attrs["num_devices"]) == (1, 4)
    np.testing.assert_array_equal(one.unconstrained, four.unconstrained)
    five = ppl.nuts(eight_schools, SIGMA, y=Y, chains=5, **run)  # padded to 8 chains
    np.testing.assert_array_equal(five.unconstrained[:4], one.unconstrained)
    vec = ppl.nuts(eight_schools, SIGMA, y=Y, chains=4, key=key(7), warmup=100, draws=50)
    assert vec.attrs["chain_method"] == "vectorized" and vec.attrs["num_devices"] == 4
    assert np.isfinite(vec.unconstrained).all()
    print("mcmc OK", flush=True)

    elbo = ppl.vi.objectives.elbo(normal_model, normal_guide())
    fit = dict(optimizer=optax.adam(0.05), steps=50, key=key(0), num_samples=8)
    vi = [ppl.vi.fit(elbo, NORMAL_PARAMS, YV, devices=d, **fit) for d in (1, None)]
    assert (vi[0].num_devices, vi[1].num_devices) == (1, 4)
    # The estimates of a step are averaged in another order on 4 devices, and each device's
    # program is vectorised over 2 estimates instead of 8: equal to float rounding (docs/vi.md).
    for name in NORMAL_PARAMS:
        np.testing.assert_allclose(vi[0].params[name], vi[1].params[name], rtol=1e-5, atol=1e-6)
    print("vi OK", flush=True)

    smc = dict(key=key(0), num_particles=400, num_islands=4)
    tempered = [ppl.smc.tempered(regression, X, y=YR, devices=d, **smc) for d in (1, None)]
    assert tempered[1].attrs["num_devices"] == 4
    np.testing.assert_array_equal(tempered[0].samples["beta"], tempered[1].samples["beta"])
    assert tempered[0].log_evidence == tempered[1].log_evidence
    print("tempered OK", flush=True)

    mixture, observation, _ = D.grid_mixture_problem(1, 8, 2)
    prior = mixture.diffusion_prior(D.vp())
    posterior_sd = np.sqrt(np.asarray(mixture.posterior(observation).sample(key(1), 4000)).var(0))
    # the samplers share one driver; these three cover its branches (twisted reweighting,
    # resampling at every step, a finalize step)
    for sampler in (D.tds, D.mcgdiff, D.fps):
        run = dict(key=key(0), num_particles=400, num_steps=8, num_islands=4)
        a, b = (sampler(prior, observation, devices=d, **run) for d in (1, None))
        assert (a.attrs["num_devices"], b.attrs["num_devices"]) == (1, 4)
        mean_a, mean_b = a.weights @ a.particles, b.weights @ b.particles
        assert np.all(np.abs(mean_a - mean_b) <= 0.05 * posterior_sd), (a.method, mean_a - mean_b)
        gap = abs(a.log_evidence - b.log_evidence)
        assert np.isnan(a.log_evidence) or gap < 0.01 * max(1.0, abs(a.log_evidence)), (a.method, gap)
        again = sampler(prior, observation, **run)
        np.testing.assert_array_equal(again.particles, b.particles)
        print(a.method, "OK", flush=True)
    """
)


def test_every_driver_on_one_and_four_devices():
    stdout = run_on_four_devices(SCRIPT)
    for name in ("mcmc", "vi", "tempered", "tds", "mcgdiff", "fps"):
        assert f"{name} OK" in stdout, stdout
