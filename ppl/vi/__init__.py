"""Programmable variational inference: objectives are programs, every guide site picks
its gradient estimator.

- the language: :func:`expectation`, :func:`sim`, :func:`density`, :func:`marginal`,
  :func:`normalize`, :func:`leave_one_out` (:mod:`ppl.vi.language`);
- estimators per guide site: :func:`reparam`, :func:`implicit`, :func:`reinforce`,
  :func:`enum`, :func:`mvd` (:mod:`ppl.vi.estimators`);
- objectives written in the language: :mod:`ppl.vi.objectives`;
- fitting with Optax: :func:`fitter` (a pure ``init`` / ``update`` pair) and the thin
  driver :func:`fit`.
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
    marginal,
    mean_over_data,
    normalize,
    sample_guide,
    sim,
)

__all__ = [
    "Estimator",
    "Expectation",
    "Family",
    "FitInfo",
    "FitSettings",
    "FitState",
    "Fitter",
    "VIResult",
    "density",
    "enum",
    "expectation",
    "fit",
    "fitter",
    "implicit",
    "leave_one_out",
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
