"""The estimate type and the sample mean with its standard error, against numpy and scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vi.kernels.estimate import Estimate, mean_estimate


def test_mean_estimate_matches_numpy_and_scipy(dtype):
    values = np.random.default_rng(0).gamma(2.0, size=(50, 3))
    estimate = mean_estimate(jnp.asarray(values, dtype))
    assert isinstance(estimate, Estimate)
    assert estimate.value.dtype == estimate.stderr.dtype == dtype
    rtol = 1e-6 if dtype == jnp.float32 else 1e-13
    np.testing.assert_allclose(estimate.value, values.mean(axis=0), rtol=rtol)
    np.testing.assert_allclose(estimate.stderr, stats.sem(values, axis=0), rtol=rtol)


def test_mean_estimate_of_constant_draws_is_exact(dtype):
    # A large offset: a one-pass variance would cancel to a nonzero stderr here.
    estimate = jax.jit(mean_estimate)(jnp.full((100, 2), 1e4, dtype))
    np.testing.assert_array_equal(estimate.value, 1e4)
    np.testing.assert_array_equal(estimate.stderr, 0)


def test_jit_and_vmap_agree_with_eager(dtype):
    values = jnp.asarray(np.random.default_rng(1).normal(size=(4, 30, 2)), dtype)
    eager = [mean_estimate(v) for v in values]
    mapped = jax.jit(jax.vmap(mean_estimate))(values)
    rtol = 1e-6 if dtype == jnp.float32 else 1e-13
    np.testing.assert_allclose(mapped.value, [e.value for e in eager], rtol=rtol)
    np.testing.assert_allclose(mapped.stderr, [e.stderr for e in eager], rtol=rtol)


def test_bad_input():
    with pytest.raises(ValueError, match="at least 2 draws"):
        mean_estimate(jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match="at least 2 draws"):
        mean_estimate(jnp.zeros(()))
    with pytest.raises(TypeError, match="floating"):
        mean_estimate(jnp.zeros(3, jnp.int32))
