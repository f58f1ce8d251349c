"""Programmable variational inference: objectives are programs, every guide site picks
its gradient estimator.

- the language: :func:`expectation`, :func:`sim`, :func:`density`, :func:`marginal`,
  :func:`normalize`, :func:`leave_one_out`, :func:`log_weight` (:mod:`ppl.vi.language`;
  Rao-Blackwellised score terms in :mod:`ppl.vi.rao_blackwell`);
- estimators per guide site: :func:`reparam`, :func:`implicit`, :func:`reinforce`,
  :func:`enum`, :func:`mvd` (:mod:`ppl.vi.estimators`);
- objectives written in the language: :mod:`ppl.vi.objectives`;
- fitting with Optax: :func:`fitter` (a pure ``init`` / ``update`` pair) and the thin
  driver :func:`fit`;
- param sites and NumPyro's autoguides (``AutoNormal(model)`` is a guide like any other):
  :func:`initial_params`, :func:`constrained_params` (:mod:`ppl.vi.params`);
- point and Gaussian approximations: :func:`map_estimate`, :func:`laplace`
  (:mod:`ppl.vi.laplace`).
"""

from ppl.vi import objectives
from ppl.vi.estimators import Estimator, enum, implicit, mvd, reinforce, reparam
from ppl.vi.fit import FitInfo, FitSettings, FitState, Fitter, VIResult, fit, fitter
from ppl.vi.language import (
    Expectation,
    Family,
    density,
    expectation,
    leave_one_out,
    log_weight,
    marginal,
    mean_over_data,
    normalize,
    sample_guide,
    sim,
)
from ppl.vi.laplace import LaplaceResult, MAPResult, laplace, map_estimate
from ppl.vi.params import constrained_params, initial_params

__all__ = [
    "Estimator",
    "Expectation",
    "Family",
    "FitInfo",
    "FitSettings",
    "FitState",
    "Fitter",
    "LaplaceResult",
    "MAPResult",
    "VIResult",
    "constrained_params",
    "density",
    "enum",
    "expectation",
    "fit",
    "fitter",
    "implicit",
    "initial_params",
    "laplace",
    "leave_one_out",
    "log_weight",
    "map_estimate",
    "marginal",
    "mean_over_data",
    "mvd",
    "normalize",
    "objectives",
    "reinforce",
    "reparam",
    "sample_guide",
    "sim",
]
