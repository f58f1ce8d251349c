"""PRNG keys: one validation at every public boundary, one rule for deriving keys.

Every random function in `ppl` takes an explicit key. Drivers take it as ``key=``
(keyword-only) and check it with :func:`validate_key`; pure kernels take ``rng_key``
first, as BlackJAX's do. Keys of replicas (chains, islands, gradient estimates) and of
loop steps are derived with ``fold_in``, never ``split(key, n)``: ``fold_in(key, i)``
does not depend on how many replicas or steps there are, so padding replicas to the
device count, or cutting a loop into progress-bar chunks, changes no draw.

Example:
    >>> import jax
    >>> from ppl.runtime import keys
    >>> key = keys.validate_key(jax.random.key(0))
    >>> keys.replica_keys(key, 3).shape
    (3,)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["replica_keys", "validate_key"]


def validate_key(key, name: str = "key") -> jax.Array:
    """Return ``key`` as a typed ``jax.random.key`` scalar, or raise ``TypeError``.

    Accepts a typed key (``jax.random.key(0)``) or a raw ``uint32[2]`` key
    (``jax.random.PRNGKey(0)``). Refuses integers, ``None``, other arrays and batches
    of keys, with a message that says what to pass.
    """
    if key is None or isinstance(key, bool | int | np.integer):
        raise TypeError(
            f"{name} must be a JAX PRNG key, e.g. {name}=jax.random.key(0); got "
            f"{type(key).__name__}. Every random function in ppl takes an explicit key."
        )
    if not isinstance(key, jax.Array | np.ndarray):
        raise TypeError(f"{name} must be a JAX PRNG key, e.g. jax.random.key(0); got {type(key).__name__}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise TypeError(f"{name} must be a single PRNG key, got a batch of keys of shape {key.shape}")
        return key
    if key.shape != (2,) or key.dtype != jnp.uint32:
        raise TypeError(
            f"{name} must be a single PRNG key (jax.random.key(0), or a raw uint32[2] key from "
            f"jax.random.PRNGKey); got an array of dtype {key.dtype} and shape {key.shape}"
        )
    return jax.random.wrap_key_data(jnp.asarray(key))


def replica_keys(key: jax.Array, num_replicas: int) -> jax.Array:
    """Keys ``fold_in(key, i)`` for ``i < num_replicas``, shape ``(num_replicas,)``.

    Replica ``i`` gets the same key whatever ``num_replicas`` is, so padding never
    changes the draws of the replicas that are kept.
    """
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num_replicas))
