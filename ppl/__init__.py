"""ppl: a probabilistic-programming inference backend on JAX.

Write a model as a plain Python function with :func:`sample`, :func:`plate`,
:func:`param`, :func:`deterministic` and :func:`factor` (NumPyro's primitives, so
NumPyro models run unchanged), compile it with :func:`compile`, sample it with
:func:`nuts`, and inspect the result with ArviZ.
"""

from numpyro import distributions as dist

from ppl import eb, smc, vi
from ppl.arviz import load, save, to_inference_data
from ppl.compile import CompiledModel, compile
from ppl.dsl import deterministic, factor, param, plate, sample
from ppl.errors import ModelError
from ppl.mcmc import Posterior, hmc, nuts
from ppl.parallel import set_host_device_count
from ppl.predictive import predictive

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
    "nuts",
    "param",
    "plate",
    "predictive",
    "sample",
    "save",
    "set_host_device_count",
    "smc",
    "to_inference_data",
    "vi",
]
