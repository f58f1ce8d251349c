"""Martingale posteriors (Fong, Holmes & Walker, 2023): instead of a prior and a
likelihood, a sequence of one-step predictives (bivariate Gaussian-copula updates); the
posterior is the uncertainty left when the rest of the population is imputed from them
(predictive resampling) and the quantity of interest is read off.

* :func:`density`: univariate and multivariate densities;
* :func:`regression`: conditional densities ``p(y | x)`` and the regression function;
* :func:`classification`: ``p(y = 1 | x)`` for binary labels;
* :func:`bayesian_bootstrap`: the empirical predictive (the Bayesian bootstrap).

Each fit's ``resample`` returns a :class:`Resampled` (draws of functionals per path, with
a convergence report) that exports to ArviZ.

Example:
    >>> import jax, numpy as np
    >>> from ppl.processes import martingale
    >>> rng = np.random.default_rng(0)
    >>> y = np.concatenate([rng.normal(-2, 0.5, 20), rng.normal(1, 0.5, 10)])  # bimodal
    >>> fit = martingale.density(y, key=jax.random.key(0), num_permutations=2)
    >>> draws = fit.resample(np.linspace(-3, 3, 13), key=jax.random.key(1), num_paths=8, num_steps=100)
    >>> draws["mean"].shape
    (8,)
"""

from ppl.processes.martingale import copula, data, fitting, resampling
from ppl.processes.martingale.bootstrap import bayesian_bootstrap
from ppl.processes.martingale.copula_classifier import CopulaClassifier, classification
from ppl.processes.martingale.copula_density import CopulaDensity, density
from ppl.processes.martingale.copula_regression import CopulaRegression, regression
from ppl.processes.martingale.resampling import Resampled, grid_mean, grid_quantile

__all__ = [
    "CopulaClassifier",
    "CopulaDensity",
    "CopulaRegression",
    "Resampled",
    "bayesian_bootstrap",
    "classification",
    "copula",
    "data",
    "density",
    "fitting",
    "grid_mean",
    "grid_quantile",
    "regression",
    "resampling",
]
