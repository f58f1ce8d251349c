"""MCMC: NUTS and HMC with Stan's window adaptation.

:mod:`ppl.mcmc.kernel` is the pure ``init`` / ``step`` transition (BlackJAX's kernels and
adaptation); :mod:`ppl.mcmc.sampler` is the thin driver behind :func:`nuts` and :func:`hmc`.
"""

from ppl.mcmc import diagnostics, kernel
from ppl.mcmc.sampler import Posterior, hmc, nuts

__all__ = ["Posterior", "diagnostics", "hmc", "kernel", "nuts"]
