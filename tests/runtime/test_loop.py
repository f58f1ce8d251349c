"""The chunked loop: chunks never change results; the callbacks see every step once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.runtime.loop import chunk_bounds, loop_until, scan_in_chunks


def test_chunk_bounds_cover_every_step_with_at_most_two_lengths():
    for num_steps in (1, 7, 20, 101, 1000):
        for num_chunks in (1, 3, 20):
            bounds = chunk_bounds(num_steps, num_chunks)
            assert bounds[0][0] == 0 and bounds[-1][1] == num_steps
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
            assert len({stop - start for start, stop in bounds[:-1]}) <= 1 and len(bounds) <= num_chunks
    assert chunk_bounds(0, 5) == []


@jax.jit
def advance(carry, xs):
    def body(total, x):
        total = total * 0.5 + jnp.sin(x)
        return total, total

    return jax.lax.scan(body, carry, xs)


@pytest.mark.parametrize("num_chunks", [1, 3, 7])
def test_chunks_do_not_change_the_result(num_chunks):
    xs = np.linspace(0.0, 3.0, 50, dtype=np.float32)
    whole_carry, whole = advance(jnp.float32(0.0), xs)
    seen = []
    carry, outputs = scan_in_chunks(
        advance,
        jnp.float32(0.0),
        xs,
        progress_bar=False,
        num_chunks=num_chunks,
        on_chunk=lambda carry, out, stop: seen.append((stop, len(out))),
    )
    np.testing.assert_array_equal(outputs, whole)
    assert float(carry) == float(whole_carry)
    assert seen[-1][0] == 50 and sum(length for _, length in seen) == 50


def test_keep_false_returns_no_outputs_and_the_bar_runs():
    carry, outputs = scan_in_chunks(
        advance, jnp.float32(0.0), np.ones(10, np.float32), progress_bar=True, keep=False
    )
    assert outputs is None and np.isfinite(float(carry))


def test_loop_until_stops_when_done():
    calls = []

    def step(count):
        calls.append(count)
        return count + 1

    result = loop_until(step, 0, status=lambda c: (c >= 4, c / 4), progress_bar=True, max_calls=100)
    assert result == 4 and len(calls) == 4
    assert loop_until(step, 0, status=lambda c: (False, 0.0), progress_bar=False, max_calls=3) == 3
