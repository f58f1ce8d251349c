"""ppl: a probabilistic-programming inference backend on JAX.

Write a model as a plain Python function with :func:`sample`, :func:`plate`,
:func:`param`, :func:`deterministic` and :func:`factor` (NumPyro's primitives, so
NumPyro models run unchanged), compile it with :func:`compile`, sample it with
:func:`nuts`, and inspect the result with ArviZ.

Layout: :mod:`ppl.runtime` (keys, devices, loop, caching, results) and :mod:`ppl.model`
(the one interpreter of models) are the two floors; the families :mod:`ppl.mcmc`,
:mod:`ppl.vi`, :mod:`ppl.smc`, :mod:`ppl.eb`, :mod:`ppl.processes` and :mod:`ppl.meta` stand on
them side by side.
"""

from numpyro import distributions as dist

from ppl.runtime import cache as _cache

# On by default: a new Python process reuses the XLA executables compiled by earlier
# ones (opt out with PPL_COMPILATION_CACHE=0; see ppl.runtime.cache).
_cache.enable_persistent_cache()

from ppl import eb, mcmc, meta, model, processes, runtime, smc, vi  # noqa: E402
from ppl.errors import ModelError  # noqa: E402
from ppl.mcmc import Posterior, hmc, nuts  # noqa: E402
from ppl.model import (  # noqa: E402
    CompiledModel,
    compile,
    deterministic,
    factor,
    log_likelihood,
    param,
    plate,
    predictive,
    sample,
)
from ppl.runtime.arviz import load, save  # noqa: E402
from ppl.runtime.devices import set_host_device_count  # noqa: E402
from ppl.runtime.results import to_inference_data  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "CompiledModel",
    "ModelError",
    "Posterior",
    "compile",
    "deterministic",
    "dist",
    "eb",
    "factor",
    "hmc",
    "load",
    "log_likelihood",
    "mcmc",
    "meta",
    "model",
    "nuts",
    "param",
    "plate",
    "predictive",
    "processes",
    "runtime",
    "sample",
    "save",
    "set_host_device_count",
    "smc",
    "to_inference_data",
    "vi",
]
