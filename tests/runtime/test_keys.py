"""Key validation and the fold_in derivation rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.runtime.keys import replica_keys, validate_key


def test_typed_and_raw_keys_give_the_same_stream():
    typed = validate_key(jax.random.key(3))
    raw = validate_key(jax.random.PRNGKey(3))
    assert jnp.issubdtype(raw.dtype, jax.dtypes.prng_key) and raw.shape == ()
    np.testing.assert_array_equal(jax.random.normal(typed, (4,)), jax.random.normal(raw, (4,)))


@pytest.mark.parametrize(
    "bad,message",
    [
        (None, "got NoneType"),
        (0, "got int"),
        (True, "got bool"),
        (np.int64(1), "got int64"),
        ("key", "got str"),
        (jnp.zeros(2), "dtype float32 and shape \\(2,\\)"),
        (jnp.zeros(3, jnp.uint32), "shape \\(3,\\)"),
        (jax.random.split(jax.random.key(0), 2), "batch of keys of shape \\(2,\\)"),
    ],
)
def test_bad_keys_raise_a_type_error_that_says_what_to_pass(bad, message):
    with pytest.raises(TypeError, match=message):
        validate_key(bad)


def test_replica_keys_do_not_depend_on_the_number_of_replicas():
    key = jax.random.key(5)
    few, many = replica_keys(key, 3), replica_keys(key, 8)
    np.testing.assert_array_equal(jax.random.key_data(few), jax.random.key_data(many[:3]))
    np.testing.assert_array_equal(
        jax.random.key_data(many[5]), jax.random.key_data(jax.random.fold_in(key, 5))
    )
