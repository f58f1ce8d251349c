"""Chains over devices: a chain's draws depend only on the key and its index.

Runs in a subprocess with 4 host CPU devices (XLA reads the flag once, at start-up).
"""

import textwrap

import pytest

from ppl.parallel import plan_devices
from tests.four_devices import run_on_four_devices

SCRIPT = textwrap.dedent(
    """
    import os, warnings
    import jax, numpy as np
    import ppl
    from tests.models import SIGMA, Y, eight_schools
    assert jax.local_device_count() == 4, jax.devices()
    warnings.simplefilter("ignore")
    run = dict(warmup=150, draws=100)
    def mu(chains, devices):
        post = ppl.nuts(eight_schools, SIGMA, y=Y, key=jax.random.key(7), chains=chains,
                        devices=devices, **run)
        return post.unconstrained
    one = mu(4, 1)
    four = mu(4, 4)
    np.testing.assert_array_equal(one, four)  # bit-identical
    five = mu(5, 4)          # more chains than devices: padded to 8
    np.testing.assert_array_equal(five[:4], one)
    two = mu(2, None)        # fewer chains than devices
    np.testing.assert_array_equal(two, one[:2])
    vec = ppl.nuts(eight_schools, SIGMA, y=Y, key=jax.random.key(7), chains=4, devices=2,
                   vectorized=True, **run).unconstrained
    assert vec.shape == one.shape and np.isfinite(vec).all()
    print("OK", five.shape, two.shape)
    """
)


def test_draws_do_not_depend_on_device_count():
    stdout = run_on_four_devices(SCRIPT)
    assert "OK (5, 100, 10) (2, 100, 10)" in stdout


def test_plan_devices():
    plan = plan_devices(4, 1)
    assert (plan.num_devices, plan.chains_per_device, plan.padded_chains) == (1, 4, 4)
    with pytest.raises(ValueError, match="chains must be >= 1"):
        plan_devices(0)
    with pytest.raises(ValueError, match="devices must be between 1 and"):
        plan_devices(4, 99)
