"""Test keys, shifted by one environment variable.

Every test draws its keys through :func:`key` (or :func:`seed` for integer seeds), so
``PPL_TEST_SEED_OFFSET=17 make test`` runs the whole suite on other draws: a test whose
tolerance holds only for its particular draws shows up. CI keeps the default offset 0.

Example:
    >>> from tests.seeds import key
    >>> k = key(3)   # jax.random.key(3 + offset)
"""

import os

import jax

OFFSET = int(os.environ.get("PPL_TEST_SEED_OFFSET", "0"))


def seed(i: int = 0) -> int:
    """The integer seed ``i + offset``."""
    return OFFSET + int(i)


def key(i: int = 0) -> jax.Array:
    """``jax.random.key(i + offset)``."""
    return jax.random.key(seed(i))
