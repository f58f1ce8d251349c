"""The modeling language: thin, documented re-exports of NumPyro's primitives.

A `ppl` model is a plain Python function that calls these primitives. Because they
*are* NumPyro's primitives, every NumPyro model (one that calls ``numpyro.sample``)
runs in `ppl` unchanged, and every NumPyro effect handler applies to `ppl` models.

Example:
    >>> import ppl
    >>> from ppl import dist
    >>> def coin(flips=None):
    ...     p = ppl.sample("p", dist.Beta(1.0, 1.0))
    ...     with ppl.plate("flip", 3):
    ...         ppl.sample("y", dist.Bernoulli(p), obs=flips)
"""

import numpyro.primitives as _primitives

__all__ = ["sample", "plate", "param", "deterministic", "factor"]

sample = _primitives.sample
"""``sample(name, fn, obs=None, ...)``: draw a latent value from ``fn``, or score ``obs``.

Latent continuous sites become coordinates of the flat unconstrained vector of
:func:`ppl.compile`; observed sites contribute ``fn.log_prob(obs)`` (scaled by the
enclosing plates) and appear in ArviZ's ``observed_data`` and ``log_likelihood``.
"""

plate = _primitives.plate
"""``plate(name, size, dim=None, subsample_size=None)``: conditionally independent batch.

The plate's ``name`` becomes the ArviZ dimension name of every site inside it.
"""

param = _primitives.param
"""``param(name, init_value, constraint=...)``: a point parameter (for optimisation).

Samplers treat param sites as constants fixed at their initial value.
"""

deterministic = _primitives.deterministic
"""``deterministic(name, value)``: record a function of other sites in the output."""

factor = _primitives.factor
"""``factor(name, log_factor)``: add an arbitrary term to the log joint density."""
