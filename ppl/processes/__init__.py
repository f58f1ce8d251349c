"""Stochastic processes: NNGP / NTK kernels of infinitely wide networks, exact GP
regression with them, and scale mixtures (Student-t and other heavy-tailed processes)."""

from ppl.processes import activations, empirical_bayes, gp, nngp, scale_mixture

__all__ = ["activations", "empirical_bayes", "gp", "nngp", "scale_mixture"]
