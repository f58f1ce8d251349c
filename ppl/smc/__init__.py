"""Sequential Monte Carlo: resampling, adaptive tempered SMC on a compiled model, and
posterior samplers with diffusion priors (:mod:`ppl.smc.diffusion`).

Every sampler runs ``num_islands`` independent particle systems (a setting of the
algorithm) spread over the devices by the runtime, and merges them by evidence."""

from ppl.smc import diffusion, resampling
from ppl.smc.tempered import TemperedResult, tempered

__all__ = ["TemperedResult", "diffusion", "resampling", "tempered"]
