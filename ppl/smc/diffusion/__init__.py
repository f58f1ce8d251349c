"""Posterior sampling for inverse problems ``y = A(x) + noise`` with a diffusion-model prior.

A :class:`DiffusionPrior` (a score / noise / denoiser network plus its :class:`Schedule`)
and a :class:`Measurement` go into any sampler: :func:`afdps`, :func:`tds`,
:func:`mcgdiff`, :func:`fps` (weighted-particle SMC) or :func:`dps` (baseline). Each
returns a :class:`DiffusionResult`. :class:`GaussianMixture` gives exact oracles;
:func:`train_score` fits a prior to data by denoising score matching.

Each sampler is also a pure kernel, ``init`` / ``step`` with a ``NamedTuple`` state, in
its module (``from ppl.smc.diffusion.tds import init, step``), bundled as a
:class:`Sampler` that the shared driver :func:`~ppl.smc.diffusion.base.run` maps over
islands and devices.
"""

from ppl.smc.diffusion.afdps import afdps
from ppl.smc.diffusion.base import DiffusionResult, Sampler, StepInfo
from ppl.smc.diffusion.dps import dps
from ppl.smc.diffusion.fps import fps
from ppl.smc.diffusion.full_mixture import (
    FullCovarianceMixture,
    FullCovarianceMixturePosterior,
    correlated_mixture_problem,
)
from ppl.smc.diffusion.gmm import GaussianMixture, GaussianMixturePosterior, grid_mixture_problem
from ppl.smc.diffusion.mcgdiff import mcgdiff
from ppl.smc.diffusion.metrics import sliced_wasserstein
from ppl.smc.diffusion.operators import LinearOperator, MaskOperator, MatrixOperator, Measurement, measurement
from ppl.smc.diffusion.prior import DiffusionPrior
from ppl.smc.diffusion.schedule import Schedule, ve, vp
from ppl.smc.diffusion.tds import tds
from ppl.smc.diffusion.training import NoiseMLP, ScoreFit, TrainState, dsm_loss, train_score, train_step

__all__ = [
    "DiffusionPrior",
    "DiffusionResult",
    "FullCovarianceMixture",
    "FullCovarianceMixturePosterior",
    "GaussianMixture",
    "GaussianMixturePosterior",
    "LinearOperator",
    "MaskOperator",
    "MatrixOperator",
    "Measurement",
    "NoiseMLP",
    "Sampler",
    "Schedule",
    "ScoreFit",
    "StepInfo",
    "TrainState",
    "afdps",
    "correlated_mixture_problem",
    "dps",
    "dsm_loss",
    "fps",
    "grid_mixture_problem",
    "mcgdiff",
    "measurement",
    "sliced_wasserstein",
    "tds",
    "train_score",
    "train_step",
    "ve",
    "vp",
]
