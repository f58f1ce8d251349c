"""A model's arguments: what is traced data, what is compiled-in configuration.

Arrays and Python floats are *data*: compiled programs take them as arguments, so new
data of the same shape never recompiles. Python ints, bools, strings and ``None`` are
*configuration* (sizes, flags) and part of a compiled program's cache key. So are
*constants*: arrays that the model inspects with NumPy or Python (``np.unique(dept)``,
``if y.sum() > 0``), which cannot be traced. :func:`compile <ppl.model.compile.compile>`
finds those by itself (see :func:`find_constants`) or takes them from ``static=``.

Python lists of numbers and pandas objects (anything with ``to_numpy``) are converted
to NumPy arrays at the top level of the arguments, as NumPyro users pass them.

Example:
    >>> import numpy as np
    >>> from ppl.model.data import merge_data, split_data
    >>> arrays, static = split_data((np.ones(3), 5), {"flag": True})
    >>> len(arrays), merge_data(arrays, static)[0][1]
    (1, 5)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Constant",
    "StaticData",
    "argument_names",
    "as_data",
    "is_array",
    "find_constants",
    "merge_data",
    "split_data",
]

#: JAX's errors for Python or NumPy control flow on a traced value.
TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerIntegerConversionError,
)


class Constant:
    """A hashable, read-only NumPy array: an array argument compiled into the program.

    Equal when shape, dtype and values are equal; the model sees the NumPy array.
    """

    __slots__ = ("value", "_hash")

    def __init__(self, value):
        self.value = np.array(value, copy=True)
        self.value.flags.writeable = False
        self._hash = hash((self.value.shape, self.value.dtype.str, self.value.tobytes()))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Constant)
            and self._hash == other._hash
            and self.value.shape == other.value.shape
            and self.value.dtype == other.value.dtype
            and np.array_equal(self.value, other.value, equal_nan=self.value.dtype.kind in "fc")
        )

    def __repr__(self) -> str:
        return f"Constant(shape={self.value.shape}, dtype={self.value.dtype})"


class StaticData(NamedTuple):
    """The hashable half of a model's arguments: tree structure and non-array leaves."""

    treedef: Any
    leaves: tuple  # the static leaves, with None where an array leaf goes


def is_array(leaf) -> bool:
    return isinstance(leaf, np.ndarray | jax.Array | np.generic)


def _is_data(leaf) -> bool:
    # Python floats are data too (observations, hyperparameters): changing one never
    # recompiles, and NumPyro's support checks see a JAX array rather than a float.
    return is_array(leaf) or isinstance(leaf, float)


def _numbers_only(value) -> bool:
    if isinstance(value, list | tuple):
        return all(_numbers_only(v) for v in value)
    return isinstance(value, int | float | bool | np.generic) and not isinstance(value, str)


def as_data(value, name: str = "argument"):
    """Convert a NumPyro user's data habits to arrays: a pandas Series/DataFrame (or
    anything with ``to_numpy``) and a Python list of numbers become NumPy arrays; other
    values are returned unchanged.

    Raises:
        TypeError: a pandas object whose values are not numbers (e.g. strings), naming
            the argument.
    """
    if hasattr(value, "to_numpy") and not is_array(value):
        array = np.asarray(value.to_numpy())
        if array.dtype == object or array.dtype.kind in "USO":
            raise TypeError(
                f"model argument '{name}' ({type(value).__name__}) holds {array.dtype} values; "
                "encode categories as integer codes first (e.g. pandas' .cat.codes)"
            )
        return array
    if isinstance(value, list) and value and _numbers_only(value):
        return np.asarray(value)
    return value


def argument_names(model: Callable, args: tuple, kwargs: dict) -> list[str]:
    """Names of the model's top-level arguments as called (``arg{i}`` where unknown)."""
    try:
        params = list(inspect.signature(model).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = []
    for i in range(len(args)):
        if i < len(params) and params[i].kind in (params[i].POSITIONAL_ONLY, params[i].POSITIONAL_OR_KEYWORD):
            names.append(params[i].name)
        else:
            names.append(f"arg{i}")
    return names + list(kwargs)


def split_data(
    args: tuple, kwargs: dict, constants: Collection[str] = (), names=None
) -> tuple[list, StaticData]:
    """Split ``(args, kwargs)`` into a list of array leaves and a hashable remainder.

    Args:
        args, kwargs: the model's arguments.
        constants: names of top-level arguments whose arrays are compiled in as
            :class:`Constant` (the model sees NumPy arrays).
        names: the top-level argument names (from :func:`argument_names`); needed with
            ``constants``.

    Returns:
        ``(arrays, static)``: a list of ``jax.Array`` and a :class:`StaticData`;
        :func:`merge_data` inverts the split.
    """
    constants = set(constants)
    names = list(names) if names is not None else [f"arg{i}" for i in range(len(args))] + list(kwargs)
    path_leaves, treedef = jax.tree_util.tree_flatten_with_path((tuple(args), dict(kwargs)))
    leaves, static = [], []
    for path, leaf in path_leaves:
        # path[0] picks args (0) or kwargs (1); path[1] the position or the keyword
        name = names[path[1].idx] if path[0].idx == 0 else path[1].key
        if _is_data(leaf) and name not in constants:
            leaves.append(jnp.asarray(leaf))
            static.append(None)
        elif _is_data(leaf):
            static.append(Constant(leaf))
        else:
            try:
                hash(leaf)
            except TypeError as err:
                raise TypeError(
                    f"model argument '{name}' contains a {type(leaf).__name__}, which is neither an "
                    "array nor hashable; pass arrays for data and hashable values for configuration"
                ) from err
            static.append(leaf)
    return leaves, StaticData(treedef, tuple(static))


def merge_data(arrays: list, static: StaticData) -> tuple[tuple, dict]:
    """Inverse of :func:`split_data`: rebuild ``(args, kwargs)`` (constants as NumPy arrays)."""
    it = iter(arrays)
    leaves = [
        next(it) if leaf is None else leaf.value if isinstance(leaf, Constant) else leaf
        for leaf in static.leaves
    ]
    args, kwargs = jax.tree_util.tree_unflatten(static.treedef, leaves)
    return args, kwargs


def _traces(probe: Callable, args: tuple, kwargs: dict, names: list[str], constants: set[str]):
    """The tracer error of ``probe(args, kwargs)`` with every array argument outside
    ``constants`` traced, or ``None`` if it traces."""
    arrays, static = split_data(args, kwargs, constants, names)
    try:
        jax.eval_shape(lambda arrays: (probe(*merge_data(arrays, static)), None)[1], arrays)
    except TRACER_ERRORS as err:
        return err
    return None


def find_constants(probe: Callable, args: tuple, kwargs: dict, names: list[str], given: Collection[str] = ()):
    """The array arguments that ``probe(args, kwargs)`` cannot trace, and the first error.

    ``probe(args, kwargs)`` runs the model (its result is ignored); it is run abstractly with the arrays as
    tracers. If it fails with a tracer error, each array argument is tried alone as a
    tracer (the others constant); those that fail are constants. Returns
    ``(constants, error)``, ``((), None)`` when everything traces.
    """
    given = set(given)
    first = _traces(probe, args, kwargs, names, given)
    if first is None:
        return tuple(sorted(given)), None
    top = dict(zip(names, list(args) + list(kwargs.values()), strict=True))
    candidates = [n for n in names if n not in given and any(_is_data(x) for x in jax.tree.leaves(top[n]))]
    found = set()
    for name in candidates:
        others = given | (set(candidates) - {name})
        if _traces(probe, args, kwargs, names, others) is not None:
            found.add(name)
    if not found or _traces(probe, args, kwargs, names, given | found) is not None:
        found = set(candidates)
    return tuple(sorted(given | found)), first
