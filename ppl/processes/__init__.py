"""Stochastic processes: NNGP / NTK kernels of infinitely wide networks, exact GP
regression with them, scale mixtures (Student-t and other heavy-tailed processes), and
sparse variational GP / Student-t process classifiers."""

from ppl.processes import activations, empirical_bayes, gp, neural_process, nngp, scale_mixture, svtp

__all__ = ["activations", "empirical_bayes", "gp", "neural_process", "nngp", "scale_mixture", "svtp"]
