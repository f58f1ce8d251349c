"""Sequential Monte Carlo: resampling, adaptive tempered SMC on a compiled model, and
posterior samplers with diffusion priors (:mod:`ppl.smc.diffusion`)."""

from ppl.smc import diffusion, resampling
from ppl.smc.tempered import TemperedResult, tempered

__all__ = ["TemperedResult", "diffusion", "resampling", "tempered"]
