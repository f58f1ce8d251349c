"""Posterior sampling for inverse problems ``y = A(x) + noise`` with a diffusion-model prior.

A :class:`DiffusionPrior` (a score / noise / denoiser network plus its :class:`Schedule`)
and a :class:`Measurement` go into any sampler: :func:`afdps`, :func:`tds`,
:func:`mcgdiff`, :func:`fps` (weighted-particle SMC) or :func:`dps` (baseline). Each
returns a :class:`DiffusionResult`. :class:`GaussianMixture` gives exact oracles;
:func:`train_score` fits a prior to data by denoising score matching.
"""

from ppl.smc.diffusion.afdps import afdps
from ppl.smc.diffusion.base import DiffusionResult
from ppl.smc.diffusion.dps import dps
from ppl.smc.diffusion.fps import fps
from ppl.smc.diffusion.gmm import GaussianMixture, GaussianMixturePosterior, grid_mixture_problem
from ppl.smc.diffusion.mcgdiff import mcgdiff
from ppl.smc.diffusion.metrics import sliced_wasserstein
from ppl.smc.diffusion.operators import LinearOperator, MaskOperator, MatrixOperator, Measurement, measurement
from ppl.smc.diffusion.prior import DiffusionPrior
from ppl.smc.diffusion.schedule import Schedule, ve, vp
from ppl.smc.diffusion.tds import tds
from ppl.smc.diffusion.training import NoiseMLP, ScoreFit, dsm_loss, train_score

__all__ = [
    "DiffusionPrior",
    "DiffusionResult",
    "GaussianMixture",
    "GaussianMixturePosterior",
    "LinearOperator",
    "MaskOperator",
    "MatrixOperator",
    "Measurement",
    "NoiseMLP",
    "Schedule",
    "ScoreFit",
    "afdps",
    "dps",
    "dsm_loss",
    "fps",
    "grid_mixture_problem",
    "mcgdiff",
    "measurement",
    "sliced_wasserstein",
    "tds",
    "train_score",
    "ve",
    "vp",
]
