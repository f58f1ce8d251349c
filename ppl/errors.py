"""Errors raised at the boundary between user model code and inference, and warnings
that point at the user's line."""

import os
import sys
import warnings

__all__ = ["ModelError", "warn"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class ModelError(ValueError):
    """A model is malformed or cannot be run by the requested algorithm.

    The message always names the offending site and, where shapes are involved,
    the shapes. Examples: duplicate site names, an observed value whose shape does
    not match its distribution or plate, an observed value outside the support,
    a latent discrete site given to a gradient-based sampler, or a log density that
    is non-finite at every initialisation attempt.
    """


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside the ``ppl`` package, so the
    warning names the user's line however deep in ``ppl`` it was raised.

    Example:
        >>> from ppl.errors import warn
        >>> warn("warmup=0: nothing was adapted")  # doctest: +SKIP
    """
    level, frame = 1, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)
