"""The caching rule, and JAX's persistent compilation cache.

The rule every driver follows:

1. A driver's programs are module-level functions under ``jax.jit``. Static
   configuration (settings ``NamedTuple``s of numbers and strings, frozen dataclasses,
   a :class:`~ppl.runtime.devices.DevicePlan`, the model function) is passed as static
   arguments, hashed *by value*; data and parameters (including a
   :class:`~ppl.CompiledModel`, a pytree whose leaves are the data) are ordinary
   arguments. New data of the same shape, or a second identical call, reuses the
   compiled program. No `ppl` module keeps a cache of user objects: JAX's bounded jit
   cache is the only one (``functools.lru_cache`` appears only on pure functions of
   integers, such as the warmup schedule).
2. Configuration that is a closure is compared by what it computes. An Optax
   ``GradientTransformation`` is keyed by the jaxprs of its functions (:func:`by_value`,
   constants included), so ``optax.adam(1e-3)`` built twice is the same static argument;
   a Python function (a VI objective built by ``ppl.vi.objectives.elbo(model, guide)``)
   by its code and what it closes over (:func:`function_key`).
3. :func:`enable_persistent_cache` (called on ``import ppl``) turns on JAX's persistent
   compilation cache in a user cache directory, so a new Python process reuses the
   XLA executables of earlier ones. Opt out with ``PPL_COMPILATION_CACHE=0``; choose the
   directory with ``PPL_COMPILATION_CACHE_DIR``; a directory already configured in JAX
   (``jax_compilation_cache_dir``) is left as it is.

Example:
    >>> import jax.numpy as jnp, optax
    >>> from ppl.runtime.cache import by_value
    >>> params = {"w": jnp.zeros(3)}
    >>> by_value(optax.adam(1e-3), params) == by_value(optax.adam(1e-3), params)
    True
    >>> by_value(optax.adam(1e-3), params) == by_value(optax.adam(2e-3), params)
    False
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from typing import Any

import jax
import numpy as np

__all__ = [
    "DISABLE_VARIABLE",
    "DIRECTORY_VARIABLE",
    "ByFunction",
    "ByValue",
    "by_value",
    "default_cache_directory",
    "function_key",
    "enable_persistent_cache",
]

#: Set to ``0`` (or ``false``/``off``/``no``) to leave the persistent cache off.
DISABLE_VARIABLE = "PPL_COMPILATION_CACHE"
#: The persistent cache's directory (default :func:`default_cache_directory`).
DIRECTORY_VARIABLE = "PPL_COMPILATION_CACHE_DIR"
_OFF = {"0", "false", "off", "no"}


class ByValue:
    """A static argument compared by a fingerprint of its value instead of its identity.

    ``value`` is what the program uses; ``fingerprint`` (a string) is what ``==`` and
    ``hash`` see. Two wrappers with the same fingerprint are interchangeable.
    """

    __slots__ = ("fingerprint", "value")

    def __init__(self, value: Any, fingerprint: str):
        self.value, self.fingerprint = value, fingerprint

    def __eq__(self, other) -> bool:
        return isinstance(other, ByValue) and other.fingerprint == self.fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"ByValue({self.value!r}, {self.fingerprint[:12]})"


def _digest_jaxpr(digest, closed) -> None:
    digest.update(str(closed.jaxpr).encode())
    for const in closed.consts:
        value = np.asarray(const)
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(value.tobytes())


def by_value(transformation, params) -> ByValue:
    """Key an Optax-style ``(init, update)`` transformation by what it computes.

    The fingerprint is a hash of the jaxprs of ``init(params)`` and
    ``update(updates, state, params)`` at the shapes of ``params``, constants included:
    equal for two transformations built the same way (``optax.adam(1e-3)`` twice),
    different when a hyperparameter, a schedule or the chain differs.
    """
    init_jaxpr = jax.make_jaxpr(transformation.init)(params)
    state = jax.eval_shape(transformation.init, params)
    update_jaxpr = jax.make_jaxpr(transformation.update)(params, state, params)
    digest = hashlib.sha256()
    for closed in (init_jaxpr, update_jaxpr):
        _digest_jaxpr(digest, closed)
    return ByValue(transformation, digest.hexdigest())


def function_key(fn, depth: int = 4):
    """A hashable key equal for two functions that compute the same thing by construction.

    A Python function's key is its code, its defaults and the keys of the values it
    closes over: functions recursively (to ``depth``), hashable values by value, anything
    else (arrays, lists) by identity. Two closures made by the same factory from the same
    arguments (``objectives.elbo(model, guide)`` called twice) get equal keys; a closure
    over a new array does not. A ``functools.partial`` is keyed by its function and
    arguments. Other callables are keyed by themselves.
    """
    if isinstance(fn, functools.partial) and depth > 0:  # e.g. NumPyro's init_to_median()
        return (
            "partial",
            function_key(fn.func, depth - 1),
            tuple(_value_key(value) for value in fn.args),
            tuple((name, _value_key(value)) for name, value in sorted(fn.keywords.items())),
        )
    code = getattr(fn, "__code__", None)
    if code is None or depth == 0:
        return _value_key(fn)
    cells = tuple(_cell_key(cell, depth) for cell in (fn.__closure__ or ()))
    defaults = tuple(_value_key(value) for value in (fn.__defaults__ or ()))
    return ("function", code, defaults, cells)


class ByFunction:
    """A callable as a static ``jit`` argument, equal to another by :func:`function_key`:
    NumPyro's ``init_to_median()`` written anew, or a closure rebuilt from equal values,
    reuses the compiled program.

    Example:
        >>> import functools
        >>> ByFunction(functools.partial(max, 1)) == ByFunction(functools.partial(max, 1))
        True
    """

    __slots__ = ("fn", "_key")

    def __init__(self, fn):
        self.fn, self._key = fn, function_key(fn)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other) -> bool:
        return isinstance(other, ByFunction) and self._key == other._key


def _cell_key(cell, depth: int):
    try:
        value = cell.cell_contents
    except ValueError:  # an empty cell
        return ("empty",)
    return function_key(value, depth - 1) if callable(value) else _value_key(value)


def _value_key(value):
    try:
        hash(value)
    except TypeError:
        return ("identity", id(value))
    return ("value", type(value), value)


def default_cache_directory() -> str:
    """``$XDG_CACHE_HOME/ppl/jax`` (``~/.cache/ppl/jax`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ppl", "jax")


def enable_persistent_cache(
    directory: str | None = None,
    *,
    max_size_bytes: int = 2 * 2**30,
    min_compile_seconds: float = 0.0,
) -> str | None:
    """Turn on JAX's persistent compilation cache; return its directory (``None`` if off).

    Args:
        directory: default ``$PPL_COMPILATION_CACHE_DIR``, else :func:`default_cache_directory`.
        max_size_bytes: the cache evicts least-recently-used executables beyond this
            size (file locking via ``filelock`` keeps concurrent processes safe).
        min_compile_seconds: only programs that took at least this long to compile are
            written; ``0`` writes every program (measured in ``benchmarks/compile_cache.py``:
            a new process's first NUTS call 5.2 s -> 1.7 s with ``0``, 3.4 s with ``0.5``,
            because a driver compiles many small programs besides its loop).

    Does nothing when ``PPL_COMPILATION_CACHE`` is ``0``/``false``/``off``, and keeps a
    directory already set in JAX's own configuration.
    """
    if os.environ.get(DISABLE_VARIABLE, "").strip().lower() in _OFF:
        return None
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    directory = directory or os.environ.get(DIRECTORY_VARIABLE) or default_cache_directory()
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as err:
        warnings.warn(
            f"ppl: no persistent compilation cache ({directory} cannot be created: {err}); "
            f"set {DIRECTORY_VARIABLE} to a writable directory or {DISABLE_VARIABLE}=0",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_compilation_cache_max_size", int(max_size_bytes))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    return directory
