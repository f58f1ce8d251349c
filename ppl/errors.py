"""Errors raised at the boundary between user model code and inference."""

__all__ = ["ModelError"]


class ModelError(ValueError):
    """A model is malformed or cannot be run by the requested algorithm.

    The message always names the offending site and, where shapes are involved,
    the shapes. Examples: duplicate site names, an observed value whose shape does
    not match its distribution or plate, an observed value outside the support,
    a latent discrete site given to a gradient-based sampler, or a log density that
    is non-finite at every initialisation attempt.
    """
