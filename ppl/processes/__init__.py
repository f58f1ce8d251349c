"""Stochastic processes: NNGP / NTK kernels of infinitely wide networks, exact GP
regression with them, scale mixtures (Student-t and other heavy-tailed processes),
sparse variational GP / Student-t process classifiers, martingale posteriors by
predictive resampling, and neural processes (CNP, latent NP, MPNP)."""

from ppl.processes import (
    activations,
    empirical_bayes,
    gp,
    martingale,
    neural_process,
    nngp,
    scale_mixture,
    svtp,
)

__all__ = [
    "activations",
    "empirical_bayes",
    "gp",
    "martingale",
    "neural_process",
    "nngp",
    "scale_mixture",
    "svtp",
]
