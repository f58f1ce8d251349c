"""The one interpreter of models: the modeling primitives, :func:`compile` (a model plus
data -> pure JAX functions over one flat unconstrained vector, a pytree), and prior /
posterior predictive draws. Families consume what is built here; nothing else runs a
model under NumPyro's handlers, except :mod:`ppl.vi`, which works by site."""

from ppl.model.compile import CompiledModel, compile
from ppl.model.dsl import deterministic, factor, param, plate, sample
from ppl.model.predictive import log_likelihood, predictive

__all__ = [
    "CompiledModel",
    "compile",
    "deterministic",
    "factor",
    "log_likelihood",
    "param",
    "plate",
    "predictive",
    "sample",
]
