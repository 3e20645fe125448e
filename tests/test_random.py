"""vi._random: the Threefry hash against JAX's, and its normal draws against scipy."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry_2x32
from scipy import stats

from vi import _random


def test_the_hash_is_jax_threefry_bit_for_bit():
    keys = jax.random.randint(jax.random.key(1), (5, 2), 0, 2**31 - 1).astype(jnp.uint32)
    counts = jax.random.randint(jax.random.key(2), (64,), 0, 2**31 - 1).astype(jnp.uint32)
    for key in keys:
        want = threefry_2x32(key, counts)
        x0, x1 = _random.threefry2x32(key, counts[:32], counts[32:])
        np.testing.assert_array_equal(np.concatenate([x0, x1]), want)


def test_the_hash_gives_the_random123_known_answer():
    # Threefry-2x32-20, zero key and counter (Random123's kat_vectors).
    zero = jnp.zeros(1, jnp.uint32)
    x0, x1 = _random.threefry2x32(jnp.zeros(2, jnp.uint32), zero, zero)
    assert (int(x0[0]), int(x1[0])) == (0x6B200159, 0x99BA4EFE)


def test_draws_are_standard_normal(dtype):
    draws = np.asarray(_random.normal(jax.random.key(0), (4, 50_000), dtype))
    assert draws.dtype == dtype and draws.shape == (4, 50_000)
    n = draws.size
    # Mean and variance within 5 standard errors; the distribution by Kolmogorov-Smirnov.
    assert abs(draws.mean()) < 5 / np.sqrt(n)
    assert abs(draws.var() - 1.0) < 5 * np.sqrt(2.0 / n)
    assert stats.kstest(draws.ravel(), "norm").pvalue > 1e-3
    # Draws from neighbouring counters and rows are uncorrelated.
    assert abs(np.corrcoef(draws.ravel()[:-1], draws.ravel()[1:])[0, 1]) < 5 / np.sqrt(n)
    assert abs(np.corrcoef(draws[0], draws[1])[0, 1]) < 5 / np.sqrt(draws.shape[1])


def test_split_keys_give_independent_draws():
    first, second = _random.split(jax.random.key(3))
    a, b = (np.asarray(_random.normal(k, (100_000,), jnp.float32)) for k in (first, second))
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(a.size)
    assert stats.kstest(b, "norm").pvalue > 1e-3
    # The new keys are typed keys of the same kind; raw uint32 keys stay raw.
    assert jax.random.key_impl(first) == jax.random.key_impl(jax.random.key(0))
    raw_first, _ = _random.split(jax.random.PRNGKey(3))
    assert raw_first.dtype == jnp.uint32 and raw_first.shape == (2,)
    np.testing.assert_array_equal(raw_first, jax.random.key_data(first))


def test_other_prng_implementations_go_to_jax_random():
    key = jax.random.key(0, impl="rbg")
    np.testing.assert_array_equal(
        _random.normal(key, (3, 2), jnp.float32), jax.random.normal(key, (3, 2), jnp.float32)
    )
    first, second = _random.split(key)
    want = jax.random.split(key)
    np.testing.assert_array_equal(jax.random.key_data(first), jax.random.key_data(want[0]))
    np.testing.assert_array_equal(jax.random.key_data(second), jax.random.key_data(want[1]))


def test_draws_are_the_same_under_jit_and_vmap():
    keys = jax.random.split(jax.random.key(4), 3)
    eager = np.stack([_random.normal(k, (5,), jnp.float32) for k in keys])
    batched = jax.jit(jax.vmap(lambda k: _random.normal(k, (5,), jnp.float32)))(keys)
    # Same hash bits; log and cos may round differently in the vectorised program.
    np.testing.assert_allclose(batched, eager, rtol=1e-6, atol=1e-7)


def test_half_precision_draws_are_rounded_float32_draws():
    key = jax.random.key(5)
    half = _random.normal(key, (1000,), jnp.bfloat16)
    assert half.dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        half, _random.normal(key, (1000,), jnp.float32).astype(half.dtype)
    )
