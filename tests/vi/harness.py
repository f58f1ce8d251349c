"""The exact-gradient harness: many independent gradient estimates vs an exact gradient.

At fixed parameters draw ``num`` estimates (jit + vmap over keys), and compare their
mean with the exact gradient per coordinate in units of its Monte Carlo standard
error ``sd / sqrt(num)``. A coordinate fails beyond ``Z_MAX`` = 5 standard errors:
for a correct estimator each coordinate passes with probability 1 - 6e-7, so across
the ~300 coordinates of this suite a false failure has probability < 2e-4
(Bonferroni). Zero-variance estimators (enumeration) must match to float precision.
"""

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from tests.seeds import key

Z_MAX = 5.0
NUM_ESTIMATES = 10_000


def gradient_draws(objective, params, *args, num=NUM_ESTIMATES, seed=0, argnums=0):
    keys = jax.random.split(key(seed), num)
    in_axes = (0,) + (None,) * (1 + len(args))
    grad = jax.jit(jax.vmap(lambda k, *a: objective.grad_estimate(k, *a, argnums=argnums), in_axes))
    draws = grad(keys, params, *args)
    return np.asarray(jax.vmap(lambda tree: ravel_pytree(tree)[0])(draws), dtype=np.float64)


def z_scores(draws, exact):
    """Per-coordinate (mean - exact) / SE; SE-free coordinates compare to float precision."""
    exact = np.asarray(ravel_pytree(exact)[0], dtype=np.float64)
    mean = draws.mean(axis=0)
    se = draws.std(axis=0, ddof=1) / np.sqrt(draws.shape[0])
    floor = 1e-5 * (1.0 + np.abs(exact))  # float32 rounding of a zero-variance estimate
    return (mean - exact) / np.maximum(se, floor / Z_MAX)


def assert_unbiased(objective, params, *args, exact, **kwargs):
    draws = gradient_draws(objective, params, *args, **kwargs)
    z = z_scores(draws, exact)
    assert np.all(np.isfinite(z)) and np.max(np.abs(z)) <= Z_MAX, (
        f"gradient estimate biased: z = {np.round(z, 2)}, mean = {draws.mean(0)}, "
        f"exact = {ravel_pytree(exact)[0]}"
    )
    return draws


def assert_biased(objective, params, *args, exact, **kwargs):
    """The power check: a broken estimator must fail the same test."""
    draws = gradient_draws(objective, params, *args, **kwargs)
    assert np.max(np.abs(z_scores(draws, exact))) > Z_MAX
