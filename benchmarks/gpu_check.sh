#!/usr/bin/env bash
# The GPU check of the runtime issue, run on a lent accelerator (device tool), not in CI:
# NUTS (ppl vectorized / sequential vs the hand-written BlackJAX loop) at 4 and 64 chains,
# and TDS throughput, with the wheels the GPU image lacks carried in .whl/.
set -u
export PYTHONUNBUFFERED=1 PPL_BENCH_OUT="${OUT:-benchmarks/results}" PPL_COMPILATION_CACHE=0
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH="/tmp/site:$PWD"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import jax, numpyro, blackjax; print('jax', jax.__version__, jax.devices(), 'numpyro', numpyro.__version__)"
timeout 240 python3 benchmarks/nuts.py --engines ppl,ppl_sequential,blackjax --tag gpu
timeout 150 python3 benchmarks/nuts.py --engines ppl,blackjax --chains 64 --quick --tag gpu_64chains
timeout 90 python3 - <<'PY'
import time, json, os, jax, warnings
warnings.simplefilter("ignore")
from ppl.smc import diffusion as D
mixture, observation, _ = D.grid_mixture_problem(5, 800, 4)
prior = mixture.diffusion_prior(D.vp())
rows = {}
for n in (1000, 10000):
    run = lambda: D.tds(prior, observation, key=jax.random.key(0), num_particles=n, num_steps=100)
    start = time.perf_counter(); run(); first = time.perf_counter() - start
    start = time.perf_counter(); run(); seconds = time.perf_counter() - start
    rows[n] = {"first_call_s": first, "run_s": seconds, "particle_steps_per_s": n * 100 / seconds}
    print("TDS d=800 N", n, rows[n], flush=True)
json.dump(rows, open(os.path.join(os.environ["PPL_BENCH_OUT"], "tds_gpu.json"), "w"), indent=1)
PY
