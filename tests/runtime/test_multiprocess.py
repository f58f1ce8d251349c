"""Two processes on loopback (JAX's multi-controller runtime, gloo CPU collectives, 2 host
devices each) run the drivers across all 4 global devices, and get what one process
with 4 host devices gets from the same key.

Skipped only where the loopback collectives cannot start (the reason is printed);
any other failure fails the test.
"""

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNAVAILABLE = 77

RUNS = textwrap.dedent(
    """
    import warnings
    import numpy as np, optax
    import ppl
    from tests.models import SIGMA, Y, eight_schools
    from tests.seeds import key
    from tests.smc.test_tempered import X, Y as YR, regression
    from tests.vi.models import NORMAL_PARAMS, Y as YV, normal_guide, normal_model
    warnings.simplefilter("ignore")
    assert jax.device_count() == 4, jax.devices()
    nuts = ppl.nuts(eight_schools, SIGMA, y=Y, key=key(7), chains=4, warmup=100, draws=50,
                    chain_method="sequential")
    elbo = ppl.vi.objectives.elbo(normal_model, normal_guide())
    vi = ppl.vi.fit(elbo, NORMAL_PARAMS, YV, optimizer=optax.adam(0.05), steps=30, key=key(0),
                    num_samples=4)
    tempered = ppl.smc.tempered(regression, X, y=YR, key=key(0), num_particles=400, num_islands=4)
    results = dict(nuts=nuts.unconstrained, vi=vi.params["m"], tempered=tempered.samples["beta"],
                   tempered_evidence=tempered.log_evidence,
                   devices=[nuts.attrs["num_devices"], vi.num_devices])
    if jax.process_index() == 0:
        np.savez(OUT, **results)
    print("done", jax.process_index(), flush=True)
    """
)

WORKER = textwrap.dedent(
    """
    import os, sys
    process_id, port, OUT = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    import jax
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                                   process_id=process_id, initialization_timeout=60)
        jax.experimental.multihost_utils.sync_global_devices("start")
    except Exception as err:  # no loopback collectives here
        print(f"COLLECTIVES UNAVAILABLE: {type(err).__name__}: {err}", flush=True)
        sys.exit(77)
    """
)

REFERENCE = textwrap.dedent(
    """
    import sys
    OUT = sys.argv[1]
    import jax
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(devices: int) -> dict:
    return dict(
        os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu"
    )


def test_two_processes_match_one_process_with_the_same_devices(tmp_path):
    port = str(_free_port())
    script = "import jax.experimental.multihost_utils\n" + WORKER + RUNS
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(i), port, str(tmp_path / "multi.npz")],
            cwd=ROOT,
            env=_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    codes = [worker.returncode for worker in workers]
    if UNAVAILABLE in codes:
        reason = next(out for out, _ in outputs if "COLLECTIVES UNAVAILABLE" in out).strip()
        print(reason)
        pytest.skip(reason)
    assert codes == [0, 0], "\n".join(err[-3000:] for _, err in outputs)

    reference = subprocess.run(
        [sys.executable, "-c", REFERENCE + RUNS, str(tmp_path / "single.npz")],
        cwd=ROOT,
        env=_env(4),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert reference.returncode == 0, reference.stderr[-3000:]

    multi, single = np.load(tmp_path / "multi.npz"), np.load(tmp_path / "single.npz")
    np.testing.assert_array_equal(multi["devices"], [4, 4])
    for name in ("nuts", "tempered", "tempered_evidence"):
        np.testing.assert_array_equal(multi[name], single[name], err_msg=name)
    # the mean of the gradient estimates is summed across processes in another order
    np.testing.assert_allclose(multi["vi"], single["vi"], rtol=1e-5)
