"""Episode generators (shapes, ranges, the digits sampling) and the checks of user batches."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.meta import episodes
from ppl.meta.episodes import Episodes, check_episodes, from_iterator, sample_episodes
from tests.seeds import key


def draw(source, seed, num_episodes):
    """``num_episodes`` episodes of ``source``, drawn in one jitted vmap, as numpy arrays."""
    batch = jax.jit(lambda k: sample_episodes(source, k, num_episodes))(key(seed))
    return Episodes(*(np.asarray(field) for field in batch))


@pytest.fixture(scope="module")
def digit_rows():
    """The scaled digit images, as bytes -> (dataset row, digit)."""
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_digits()
    images = (data.data / 16.0).astype(np.float32)
    return {row.tobytes(): (index, int(data.target[index])) for index, row in enumerate(images)}


@pytest.mark.parametrize(
    ("source", "x_shape", "support", "query"),
    [
        (episodes.sinusoid(3, 4), (1,), 3, 4),
        (episodes.sine_line(3, 0, noise=0.1), (1,), 3, 0),
        (episodes.digits(3, 2, 5), (64,), 6, 15),
        (episodes.digits(4, 1, 1, split="test"), (64,), 4, 4),
    ],
    ids=["sinusoid", "sine_line", "digits-train", "digits-test"],
)
def test_shapes_and_dtypes_under_jit_and_vmap(source, x_shape, support, query):
    batch = draw(source, 0, 5)
    classification = source.num_classes is not None
    y_shape, y_dtype = ((), np.int32) if classification else ((1,), np.float32)
    assert batch.support_x.shape == (5, support, *x_shape) and batch.query_x.shape == (5, query, *x_shape)
    assert batch.support_y.shape == (5, support, *y_shape) and batch.query_y.shape == (5, query, *y_shape)
    assert batch.support_x.dtype == batch.query_x.dtype == np.float32
    assert batch.support_y.dtype == batch.query_y.dtype == y_dtype
    check_episodes(batch, classification=classification, num_classes=source.num_classes)


def test_sinusoid_ranges_and_name():
    source = episodes.sinusoid(5, 10)
    batch = draw(source, 1, 500)
    x = np.concatenate([batch.support_x, batch.query_x], axis=1)
    y = np.concatenate([batch.support_y, batch.query_y], axis=1)
    assert source.name == "sinusoid" and source.num_classes is None
    assert np.all(np.abs(x) <= 5) and np.all(np.abs(y) <= 5)
    assert x.min() < -4.9 and x.max() > 4.9
    # Each episode is one wave A sin(x - b): a nonlinear function of x (A >= 0.1).
    assert np.all(line_residual(x, y)[1] > 1e-3)


def line_residual(x, y):
    """Each episode's least-squares line ``(slope, intercept)`` ``(E, 2)`` and its largest
    absolute residual ``(E,)``."""
    x, y = x[..., 0].astype(np.float64), y[..., 0].astype(np.float64)
    design = np.stack([x, np.ones_like(x)], axis=-1)
    fits = np.stack([np.linalg.lstsq(d, t, rcond=None)[0] for d, t in zip(design, y, strict=True)])
    return fits, np.max(np.abs(np.einsum("ekp,ep->ek", design, fits) - y), axis=1)


def test_sine_line_is_half_sines_half_lines():
    source = episodes.sine_line(10, 10)
    batch = draw(source, 2, 2000)
    x = np.concatenate([batch.support_x, batch.query_x], axis=1)
    y = np.concatenate([batch.support_y, batch.query_y], axis=1)
    fits, residual = line_residual(x, y)
    lines = residual < 1e-3
    assert source.name == "sine_line" and np.all(np.abs(x) <= 5)
    assert abs(lines.mean() - 0.5) < 5 * math.sqrt(0.25 / len(lines))
    assert np.all(np.abs(fits[lines]) <= 3 + 1e-3)  # slope and intercept in [-3, 3]
    assert np.all(np.abs(y[~lines]) <= 5)  # sines: |A sin(x - b)| <= 5


def test_sine_line_noise_is_gaussian_with_the_given_std():
    clean = draw(episodes.sine_line(10, 10), 3, 2000)
    noisy = draw(episodes.sine_line(10, 10, noise=0.5), 3, 2000)
    np.testing.assert_array_equal(clean.support_x, noisy.support_x)
    difference = (noisy.support_y - clean.support_y).ravel()
    assert abs(difference.std() - 0.5) < 0.02 and abs(difference.mean()) < 0.02


@pytest.mark.parametrize(
    ("split", "classes"), [("train", episodes.TRAIN_CLASSES), ("test", episodes.TEST_CLASSES)]
)
def test_digits_episodes_are_distinct_images_of_distinct_split_classes(digit_rows, split, classes):
    ways, shots, queries = 3, 2, 4
    source = episodes.digits(ways, shots, queries, split=split)
    batch = draw(source, 4, 20)
    assert source.name == "digits-3way-2shot" and source.num_classes == ways
    first_classes = set()
    for episode in range(20):
        x = np.concatenate([batch.support_x[episode], batch.query_x[episode]])
        labels = np.concatenate([batch.support_y[episode], batch.query_y[episode]])
        assert np.array_equal(np.bincount(batch.support_y[episode], minlength=ways), [shots] * ways)
        assert np.array_equal(np.bincount(batch.query_y[episode], minlength=ways), [queries] * ways)
        rows, digit = zip(*(digit_rows[image.tobytes()] for image in x), strict=True)
        assert len(set(rows)) == len(rows)  # distinct images of the dataset
        label_digit = {
            label: {d for d, l in zip(digit, labels, strict=True) if l == label} for label in range(ways)
        }
        assert all(len(found) == 1 for found in label_digit.values())  # one digit per label
        chosen = [found.pop() for found in label_digit.values()]
        assert len(set(chosen)) == ways and set(chosen) <= set(classes)
        first_classes.add(chosen[0])
    assert len(first_classes) > 1  # the classes come in random order


def test_digits_same_key_same_episode_and_other_keys_other_episodes():
    source = episodes.digits(5, 1, 2)
    one, again = source.sample(key(5)), source.sample(key(5))
    for field, same in zip(one, again, strict=True):
        np.testing.assert_array_equal(field, same)
    batch = draw(source, 5, 4)
    for i in range(4):
        for j in range(i):
            assert not np.array_equal(batch.support_x[i], batch.support_x[j])
    assert np.all((batch.support_x >= 0) & (batch.support_x <= 1))


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"ways": 7, "shots": 1, "queries": 1}, ValueError, r"ways = 7.*'train' split has only 6"),
        ({"ways": 5, "shots": 1, "queries": 1, "split": "test"}, ValueError, r"only 4 classes"),
        ({"ways": 2, "shots": 0, "queries": 1}, ValueError, r"shots must be an integer >= 1, got 0"),
        ({"ways": 2, "shots": 1, "queries": -1}, ValueError, r"queries must be an integer >= 0"),
        ({"ways": 2, "shots": 100, "queries": 78}, ValueError, r"178 exceeds the 177 images per class"),
        (
            {"ways": 2, "shots": 1, "queries": 1, "split": "val"},
            ValueError,
            r"split must be 'train' or 'test'",
        ),
        ({"ways": 2.0, "shots": 1, "queries": 1}, TypeError, r"ways must be an integer"),
    ],
)
def test_digits_refuses_bad_arguments(arguments, error, match):
    pytest.importorskip("sklearn")
    with pytest.raises(error, match=match):
        episodes.digits(**arguments)


def test_regression_sources_refuse_bad_arguments():
    with pytest.raises(ValueError, match=r"sinusoid: shots must be an integer >= 1"):
        episodes.sinusoid(0, 5)
    with pytest.raises(ValueError, match=r"sine_line: noise must be a finite number >= 0, got -1"):
        episodes.sine_line(5, 5, noise=-1.0)


def regression_batch(num_episodes=3, shots=4, queries=2):
    return Episodes(
        np.zeros((num_episodes, shots, 1)),
        np.zeros((num_episodes, shots, 1)),
        np.zeros((num_episodes, queries, 1)),
        np.zeros((num_episodes, queries, 1)),
    )


def classification_batch(num_episodes=3, shots=4, queries=2):
    return Episodes(
        np.zeros((num_episodes, shots, 8), np.int64),
        np.zeros((num_episodes, shots), np.int64),
        np.zeros((num_episodes, queries, 8), np.int64),
        np.zeros((num_episodes, queries), np.int64),
    )


def test_check_episodes_returns_jax_arrays_with_float_inputs():
    batch = check_episodes(classification_batch(), classification=True, num_classes=2)
    assert all(isinstance(field, jax.Array) for field in batch)
    assert batch.support_x.dtype == jnp.result_type(float) and jnp.issubdtype(
        batch.support_y.dtype, jnp.integer
    )
    batch = check_episodes(dict(regression_batch()._asdict()), classification=False)
    assert batch.query_y.shape == (3, 2, 1)


def test_check_episodes_errors():
    bad = regression_batch()._replace(query_x=np.zeros((2, 2, 1)))
    with pytest.raises(ValueError, match=r"disagree on the number of episodes E: .*query_x \(2, 2, 1\)"):
        check_episodes(bad, classification=False)
    with pytest.raises(ValueError, match=r"empty support set \(K = 0\)"):
        check_episodes(regression_batch(shots=0), classification=False)
    query_y = np.zeros((3, 2, 1))
    query_y[1, 0], query_y[2, :] = np.nan, np.inf
    with pytest.raises(
        ValueError, match=r"query_y \(3, 2, 1\) has 3 non-finite values \(first in episode 1\)"
    ):
        check_episodes(regression_batch()._replace(query_y=query_y), classification=False)
    labels = np.zeros((3, 4), int)
    labels[2, 1] = 5
    with pytest.raises(
        ValueError, match=r"support_y \(3, 4\) has 1 labels outside \[0, 5\) \(first in episode 2\)"
    ):
        check_episodes(classification_batch()._replace(support_y=labels), classification=True, num_classes=5)
    with pytest.raises(
        TypeError, match=r"query_y \(3, 2\) has dtype float32; classification labels must be integers"
    ):
        check_episodes(classification_batch()._replace(query_y=np.zeros((3, 2))), classification=True)
    one_episode = Episodes(*(field[0] for field in regression_batch()))
    with pytest.raises(
        ValueError, match=r"support_y has shape \(4, 1\); expected a batch with a leading episode axis"
    ):
        check_episodes(one_episode, classification=False)
    with pytest.raises(
        ValueError, match=r"support_x and query_x have different per-point shapes \(1,\) and \(2,\)"
    ):
        check_episodes(regression_batch()._replace(query_x=np.zeros((3, 2, 2))), classification=False)
    with pytest.raises(TypeError, match=r"must be Episodes, a 4-tuple .* got tuple of length 3"):
        check_episodes(tuple(regression_batch())[:3], classification=False)


def test_from_iterator_checks_every_batch_and_refuses_a_change_of_shape():
    batches = [classification_batch(), tuple(classification_batch()), classification_batch(queries=3)]
    stream = from_iterator(batches, classification=True, num_classes=2)
    assert next(stream).query_y.shape == next(stream).query_y.shape == (3, 2)
    with pytest.raises(
        ValueError, match=r"batch 2 has shapes .*query_y \(3, 3\) but batch 0 had .*query_y \(3, 2\)"
    ):
        next(stream)
    with pytest.raises(ValueError, match=r"batch 0\.support_y .* labels outside \[0, 1\)"):
        list(
            from_iterator(
                [classification_batch()._replace(support_y=np.ones((3, 4), int))],
                classification=True,
                num_classes=1,
            )
        )
    with pytest.raises(TypeError, match=r"expected an iterable of episode batches, got int"):
        from_iterator(3, classification=False)
