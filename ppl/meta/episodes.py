"""Few-shot episodes: support and query sets, their generators, and their checks.

An :class:`Episodes` batch holds ``E`` episodes of ``K`` support and ``Q`` query points::

    support_x (E, K, *x_shape)   support_y (E, K, *y_shape)
    query_x   (E, Q, *x_shape)   query_y   (E, Q, *y_shape)

Regression labels have ``y_shape = (1,)`` (floats); classification labels are integers
with ``y_shape = ()``, ``0 .. ways - 1`` within each episode. One episode is the same
tuple without the leading ``E`` axis.

An :class:`EpisodeSource` draws one episode from a key, as a pure, jit-able function, so
a training step draws its batch on the devices: episode ``i`` of a batch drawn with
``key`` uses ``fold_in(key, i)`` (:func:`sample_episodes`). The sources here are the
benchmarks of the literature: :func:`sinusoid` (MAML), :func:`sine_line` (PLATIPUS) and
:func:`digits` (few-shot classification on scikit-learn's 8x8 digits).

Batches a user supplies are checked on the host by :func:`check_episodes`;
:func:`from_iterator` checks a whole stream of them.

Example:
    >>> import jax
    >>> from ppl.meta import episodes
    >>> batch = episodes.sample_episodes(episodes.sinusoid(5, 10), jax.random.key(0), 4)
    >>> batch.support_x.shape, batch.query_y.shape
    ((4, 5, 1), (4, 10, 1))
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppl.runtime.keys import replica_keys

__all__ = [
    "TEST_CLASSES",
    "TRAIN_CLASSES",
    "EpisodeSource",
    "Episodes",
    "check_episodes",
    "digits",
    "from_iterator",
    "sample_episodes",
    "sine_line",
    "sinusoid",
]

TRAIN_CLASSES = (0, 1, 2, 3, 4, 5)
"""The digits of the ``"train"`` split of :func:`digits`."""
TEST_CLASSES = (6, 7, 8, 9)
"""The digits of the ``"test"`` split of :func:`digits`."""

_SPLITS = {"train": TRAIN_CLASSES, "test": TEST_CLASSES}
_FIELDS = ("support_x", "support_y", "query_x", "query_y")


class Episodes(NamedTuple):
    """A batch of episodes (leading axis ``E``) or one episode (no leading axis)."""

    support_x: jax.Array
    support_y: jax.Array
    query_x: jax.Array
    query_y: jax.Array


class EpisodeSource(NamedTuple):
    """A generator of episodes.

    Attributes:
        sample: ``key -> Episodes`` (one episode, no leading axis), pure and jit-able.
        name: what the episodes are (for messages and results).
        num_classes: ``ways`` for classification, ``None`` for regression.
    """

    sample: Callable
    name: str
    num_classes: int | None = None


def sample_episodes(source: EpisodeSource, key: jax.Array, num_episodes: int) -> Episodes:
    """``num_episodes`` episodes; episode ``i`` is ``source.sample(fold_in(key, i))``."""
    return jax.vmap(source.sample)(replica_keys(key, int(num_episodes)))


# --- Regression sources ----------------------------------------------------------------


def sinusoid(shots: int, queries: int) -> EpisodeSource:
    """MAML's sinusoid regression (Finn et al., 2017).

    Per episode, amplitude ``A ~ U[0.1, 5]`` and phase ``b ~ U[0, pi]``; every support
    and query point has its own ``x ~ U[-5, 5]`` and ``y = A sin(x - b)`` (MAML's code
    subtracts the phase), without noise. An episode is ``support_x, support_y`` of shape
    ``(shots, 1)`` and ``query_x, query_y`` of shape ``(queries, 1)``, in JAX's default
    float dtype.

    Example:
        >>> import jax
        >>> episode = sinusoid(5, 10).sample(jax.random.key(0))
        >>> episode.support_x.shape, episode.query_y.shape
        ((5, 1), (10, 1))
    """
    shots, queries = _check_sizes("sinusoid", shots, queries)

    def sample(key):
        wave_key, x_key = jax.random.split(key)
        x = _inputs(x_key, shots + queries)
        return _split(x, _sine(wave_key, x), shots)

    return EpisodeSource(sample, "sinusoid")


def sine_line(shots: int, queries: int, noise: float = 0.0) -> EpisodeSource:
    """PLATIPUS's sine-or-line regression (torchmeta's ``SinusoidAndLine``).

    Per episode, with probability 1/2 a sinusoid as in :func:`sinusoid`, otherwise a line
    ``y = slope * x + intercept`` with ``slope, intercept ~ U[-3, 3]``; ``x ~ U[-5, 5]``
    for every point, and ``y`` gets Gaussian noise of standard deviation ``noise``.
    Shapes and dtype are those of :func:`sinusoid`.

    Example:
        >>> import jax
        >>> episode = sine_line(5, 10, noise=0.3).sample(jax.random.key(0))
        >>> episode.support_y.shape, episode.query_x.shape
        ((5, 1), (10, 1))
    """
    shots, queries = _check_sizes("sine_line", shots, queries)
    if isinstance(noise, bool) or not isinstance(noise, int | float | np.integer | np.floating):
        raise TypeError(f"sine_line: noise must be a number >= 0, got {type(noise).__name__}")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"sine_line: noise must be a finite number >= 0, got {noise!r}")
    noise = float(noise)

    def sample(key):
        kind_key, wave_key, line_key, x_key, noise_key = jax.random.split(key, 5)
        x = _inputs(x_key, shots + queries)
        slope, intercept = jax.random.uniform(line_key, (2,), minval=-3.0, maxval=3.0)
        y = jnp.where(jax.random.bernoulli(kind_key), _sine(wave_key, x), slope * x + intercept)
        if noise > 0:
            y = y + noise * jax.random.normal(noise_key, y.shape, y.dtype)
        return _split(x, y, shots)

    return EpisodeSource(sample, "sine_line")


def _inputs(key: jax.Array, count: int) -> jax.Array:
    """``count`` inputs ``x ~ U[-5, 5]``, shape ``(count, 1)``."""
    return jax.random.uniform(key, (count, 1), minval=-5.0, maxval=5.0)


def _sine(key: jax.Array, x: jax.Array) -> jax.Array:
    """``A sin(x - b)`` with ``A ~ U[0.1, 5]`` and ``b ~ U[0, pi]``, the shape of ``x``."""
    amplitude_key, phase_key = jax.random.split(key)
    amplitude = jax.random.uniform(amplitude_key, minval=0.1, maxval=5.0)
    phase = jax.random.uniform(phase_key, minval=0.0, maxval=jnp.pi)
    return amplitude * jnp.sin(x - phase)


def _split(x: jax.Array, y: jax.Array, shots: int) -> Episodes:
    """The first ``shots`` points as the support set, the rest as the query set."""
    return Episodes(x[:shots], y[:shots], x[shots:], y[shots:])


# --- Classification source -------------------------------------------------------------


def digits(ways: int, shots: int, queries: int, split: str = "train") -> EpisodeSource:
    """Few-shot classification on scikit-learn's bundled digits (``load_digits``).

    The 1797 images of 8x8 pixels are flattened to ``x`` of shape ``(64,)`` and scaled
    by 1/16 into ``[0, 1]``. Digits :data:`TRAIN_CLASSES` (0-5) form the ``"train"``
    split and :data:`TEST_CLASSES` (6-9) the ``"test"`` split. Each class keeps its
    first ``m`` images, ``m`` the smallest class count of the split (177 for
    ``"train"``, 174 for ``"test"``), so the draw is a fixed-shape gather from a device
    constant. An episode picks ``ways`` distinct classes of the split uniformly, in
    random order (label ``j`` is the ``j``-th class picked), and ``shots + queries``
    distinct images of each class: the first ``shots`` are its support, the rest its
    query. ``support_x`` is ``(ways * shots, 64)`` and ``support_y`` int32
    ``(ways * shots,)``, class by class (``shots`` images of label 0, then label 1, ...);
    ``query_x`` and ``query_y`` likewise with ``queries``.

    Needs scikit-learn (the ``bench`` extra).

    Example:
        >>> import jax
        >>> source = digits(ways=3, shots=2, queries=4)
        >>> episode = source.sample(jax.random.key(0))
        >>> source.name, episode.support_x.shape, episode.query_y.tolist()
        ('digits-3way-2shot', (6, 64), [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    """
    if split not in _SPLITS:
        raise ValueError(f"digits: split must be 'train' or 'test', got {split!r}")
    classes = _SPLITS[split]
    ways = _check_int("digits", "ways", ways, minimum=1)
    if ways > len(classes):
        raise ValueError(
            f"digits: ways = {ways}, but the {split!r} split has only {len(classes)} classes {classes}"
        )
    shots, queries = _check_sizes("digits", shots, queries)
    images, rows = _digit_table(classes)
    per_class = rows.shape[1]
    if shots + queries > per_class:
        raise ValueError(
            f"digits: shots + queries = {shots} + {queries} = {shots + queries} exceeds the "
            f"{per_class} images per class of the {split!r} split"
        )
    images, rows = jnp.asarray(images), jnp.asarray(rows)
    labels = jnp.repeat(jnp.arange(ways, dtype=jnp.int32), shots + queries).reshape(ways, -1)

    def sample(key):
        class_key, image_key = jax.random.split(key)
        chosen = jax.random.permutation(class_key, len(classes))[:ways]
        picks = jax.vmap(lambda i: jax.random.permutation(jax.random.fold_in(image_key, i), per_class))(
            jnp.arange(ways)
        )[:, : shots + queries]
        x = images[rows[chosen[:, None], picks]]
        return Episodes(
            x[:, :shots].reshape(ways * shots, -1),
            labels[:, :shots].reshape(-1),
            x[:, shots:].reshape(ways * queries, -1),
            labels[:, shots:].reshape(-1),
        )

    return EpisodeSource(sample, f"digits-{ways}way-{shots}shot", num_classes=ways)


@functools.cache
def _digit_table(classes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """All digit images ``(1797, 64)`` in ``[0, 1]`` (float32), and the row numbers of
    each class of ``classes``, ``(len(classes), m)``, truncated to the smallest count."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            "digits needs scikit-learn: pip install scikit-learn (or ppl's 'bench' extra)"
        ) from error
    data = load_digits()
    by_class = [np.flatnonzero(data.target == digit) for digit in classes]
    smallest = min(len(rows) for rows in by_class)
    rows = np.stack([rows[:smallest] for rows in by_class]).astype(np.int32)
    return (data.data / 16.0).astype(np.float32), rows


def _check_sizes(source: str, shots, queries) -> tuple[int, int]:
    """``shots >= 1`` and ``queries >= 0`` as ints, or an error naming ``source``."""
    return _check_int(source, "shots", shots, minimum=1), _check_int(source, "queries", queries, minimum=0)


def _check_int(source: str, name: str, value, *, minimum: int) -> int:
    """``value`` as an ``int >= minimum``, or a ``TypeError``/``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{source}: {name} must be an integer >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{source}: {name} must be an integer >= {minimum}, got {value}")
    return int(value)


# --- User-supplied batches -------------------------------------------------------------


def check_episodes(
    episodes: Episodes, *, classification: bool, num_classes: int | None = None, name: str = "episodes"
) -> Episodes:
    """A user's batch of episodes as checked JAX arrays (float ``x``), or an error.

    Expects a batch with a leading episode axis ``E >= 1``: ``support_x (E, K, *x_shape)``
    with ``K >= 1``, ``query_x (E, Q, *x_shape)`` with ``Q >= 0``, and labels
    ``(E, K, 1)`` / ``(E, Q, 1)`` for regression or integer ``(E, K)`` / ``(E, Q)`` for
    classification, each label in ``[0, num_classes)`` (``num_classes`` when given).
    Inputs and regression labels must be finite. ``episodes`` may also be a 4-tuple or a
    dict with the four field names. Runs on the host (it reads the values): not jit-able.

    Raises:
        TypeError: a field that is not a real array, or float classification labels.
        ValueError: naming ``name``, the field and the shapes, for a missing episode axis,
            disagreeing ``E``, ``K``, ``Q`` or ``x_shape``, an empty support set, labels
            out of range or non-finite values (with their count and first episode).

    Example:
        >>> import numpy as np
        >>> support, query = np.zeros((2, 5, 1)), np.zeros((2, 3, 1))
        >>> batch = Episodes(support, support, query, query)
        >>> check_episodes(batch, classification=False).support_x.dtype
        dtype('float32')
    """
    num_classes = _check_num_classes(classification, num_classes)
    fields = zip(_FIELDS, _as_episodes(name, episodes), strict=True)
    batch = Episodes(*(_as_array(name, field, value) for field, value in fields))
    _check_axes(name, batch, classification)
    if classification:
        for field in ("support_y", "query_y"):
            _check_labels(name, field, getattr(batch, field), num_classes)
        real = ("support_x", "query_x")
    else:
        real = _FIELDS
    for field in real:
        _check_finite(name, field, getattr(batch, field))
    return batch._replace(**{field: _as_float(getattr(batch, field)) for field in real})


def from_iterator(
    iterable: Iterable, *, classification: bool, num_classes: int | None = None
) -> Iterator[Episodes]:
    """The user-supplied episode stream of :func:`ppl.meta.train`: each batch checked.

    ``iterable`` yields batches (leading episode axis) as :class:`Episodes`, 4-tuples
    ``(support_x, support_y, query_x, query_y)`` or dicts with those keys; the generator
    returned yields each as :func:`check_episodes` returns it (batch ``n`` is named
    ``"batch n"`` in errors) and refuses a batch whose shapes differ from the first's,
    since every new shape would recompile the training step. Batches are read lazily,
    so an endless stream works.

    Raises:
        TypeError: if ``iterable`` is not iterable (at once).
        ValueError: from :func:`check_episodes`, or naming the batch number and both
            shapes when a batch's shapes differ from batch 0's (when it is reached).

    Example:
        >>> import numpy as np
        >>> batch = (np.zeros((2, 5, 64)), np.zeros((2, 5), int), np.zeros((2, 3, 64)), np.zeros((2, 3), int))
        >>> stream = from_iterator([batch, batch], classification=True, num_classes=5)
        >>> tuple(b.query_x.shape for b in stream)
        ((2, 3, 64), (2, 3, 64))
    """
    num_classes = _check_num_classes(classification, num_classes)
    try:
        batches = iter(iterable)
    except TypeError as error:
        raise TypeError(
            f"from_iterator: expected an iterable of episode batches, got {type(iterable).__name__}"
        ) from error
    return _checked_stream(batches, classification, num_classes)


def _checked_stream(batches: Iterator, classification: bool, num_classes: int | None) -> Iterator[Episodes]:
    """Each batch checked, and its shapes compared with the first batch's."""
    first = None
    for number, item in enumerate(batches):
        batch = check_episodes(
            item, classification=classification, num_classes=num_classes, name=f"batch {number}"
        )
        if first is None:
            first = batch
        elif _shapes(batch) != _shapes(first):
            raise ValueError(
                f"batch {number} has shapes {_describe(batch)} but batch 0 had {_describe(first)}: "
                "every batch of the stream must have the same shapes"
            )
        yield batch


def _check_num_classes(classification: bool, num_classes) -> int | None:
    """``num_classes`` as an int ``>= 1`` (classification only), or ``None``."""
    if num_classes is None:
        return None
    if not classification:
        raise ValueError(f"num_classes = {num_classes!r} is for classification; classification is False")
    return _check_int("episodes", "num_classes", num_classes, minimum=1)


def _as_episodes(name: str, item) -> Episodes:
    """``item`` (Episodes, a 4-tuple or a dict of the four fields) as :class:`Episodes`."""
    if isinstance(item, Mapping):
        missing = [field for field in _FIELDS if field not in item]
        unexpected = sorted(str(field) for field in item if field not in _FIELDS)
        if missing or unexpected:
            raise ValueError(
                f"{name}: a dict of episodes needs exactly the keys {list(_FIELDS)}; "
                f"missing {missing}, unexpected {unexpected}"
            )
        return Episodes(*(item[field] for field in _FIELDS))
    if isinstance(item, tuple | list) and len(item) == len(_FIELDS):
        return Episodes(*item)
    length = f" of length {len(item)}" if isinstance(item, tuple | list) else ""
    raise TypeError(
        f"{name} must be Episodes, a 4-tuple (support_x, support_y, query_x, query_y) or a dict "
        f"with those keys; got {type(item).__name__}{length}"
    )


def _as_array(name: str, field: str, value) -> jax.Array:
    """``value`` as a JAX array of real numbers (bool, integer or floating dtype)."""
    try:
        array = jnp.asarray(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name}.{field} must be an array, got {type(value).__name__}") from error
    if not any(jnp.issubdtype(array.dtype, kind) for kind in (jnp.bool_, jnp.integer, jnp.floating)):
        raise TypeError(f"{name}.{field} {array.shape} has dtype {array.dtype}; expected real numbers")
    return array


def _check_axes(name: str, batch: Episodes, classification: bool) -> None:
    """Ranks, the shared ``E``, ``K >= 1``, ``Q`` and ``x_shape``, or a ``ValueError``."""
    for field, points in (("support_x", "K"), ("query_x", "Q")):
        if getattr(batch, field).ndim < 2:
            raise ValueError(
                f"{name}.{field} has shape {getattr(batch, field).shape}; expected a batch with a "
                f"leading episode axis, (E, {points}, *x_shape)"
            )
    for field, points in (("support_y", "K"), ("query_y", "Q")):
        shape = getattr(batch, field).shape
        if classification and len(shape) != 2:
            raise ValueError(
                f"{name}.{field} has shape {shape}; expected a batch with a leading episode axis, "
                f"(E, {points}) integer class labels"
            )
        if not classification and (len(shape) != 3 or shape[-1] != 1):
            raise ValueError(
                f"{name}.{field} has shape {shape}; expected a batch with a leading episode axis, "
                f"(E, {points}, 1): regression labels have per-point shape (1,)"
            )
    if len({shape[0] for shape in _shapes(batch)}) > 1:
        raise ValueError(f"{name}: the fields disagree on the number of episodes E: {_describe(batch)}")
    if batch.support_x.shape[0] == 0:
        raise ValueError(f"{name} has no episodes (E = 0): {_describe(batch)}")
    for x, y in (("support_x", "support_y"), ("query_x", "query_y")):
        if getattr(batch, x).shape[1] != getattr(batch, y).shape[1]:
            raise ValueError(f"{name}: {x} and {y} disagree on the number of points: {_describe(batch)}")
    if batch.support_x.shape[1] == 0:
        raise ValueError(
            f"{name}: empty support set (K = 0), every episode needs a support point: {_describe(batch)}"
        )
    if batch.support_x.shape[2:] != batch.query_x.shape[2:]:
        raise ValueError(
            f"{name}: support_x and query_x have different per-point shapes "
            f"{batch.support_x.shape[2:]} and {batch.query_x.shape[2:]}: {_describe(batch)}"
        )


def _check_labels(name: str, field: str, labels: jax.Array, num_classes: int | None) -> None:
    """Integer labels in ``[0, num_classes)`` (``>= 0`` without ``num_classes``)."""
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(
            f"{name}.{field} {labels.shape} has dtype {labels.dtype}; classification labels must "
            "be integers (class indices)"
        )
    bad = labels < 0 if num_classes is None else (labels < 0) | (labels >= num_classes)
    count, episode = _count_and_first_episode(bad)
    if count:
        allowed = "negative" if num_classes is None else f"outside [0, {num_classes})"
        raise ValueError(
            f"{name}.{field} {labels.shape} has {count} labels {allowed} (first in episode {episode})"
        )


def _check_finite(name: str, field: str, values: jax.Array) -> None:
    """Finite ``values``, or a ``ValueError`` with the count and the first episode."""
    count, episode = _count_and_first_episode(~jnp.isfinite(values))
    if count:
        raise ValueError(
            f"{name}.{field} {values.shape} has {count} non-finite values (first in episode {episode})"
        )


def _count_and_first_episode(bad: jax.Array) -> tuple[int, int]:
    """How many entries of ``bad`` ``(E, ...)`` are true, and the first episode with one."""
    per_episode = bad.any(axis=tuple(range(1, bad.ndim)))
    return int(bad.sum()), int(jnp.argmax(per_episode))


def _as_float(array: jax.Array) -> jax.Array:
    """``array`` unchanged if floating, else in JAX's default float dtype."""
    return array if jnp.issubdtype(array.dtype, jnp.floating) else array.astype(jnp.result_type(float))


def _shapes(batch: Episodes) -> tuple[tuple[int, ...], ...]:
    """The shapes of the four fields."""
    return tuple(field.shape for field in batch)


def _describe(batch: Episodes) -> str:
    """``"support_x (E, K, ...), support_y ..., query_x ..., query_y ..."``."""
    return ", ".join(f"{field} {shape}" for field, shape in zip(_FIELDS, _shapes(batch), strict=True))
