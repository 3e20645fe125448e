import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from vi.families import mean_field


def test_log_prob_and_entropy_match_scipy(dtype):
    loc = jnp.asarray([0.5, -1.0, 2.0], dtype)
    log_scale = jnp.asarray([0.1, -2.0, 1.5], dtype)
    params = mean_field.MeanFieldParams(loc, log_scale)
    x = jnp.asarray([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5]], dtype)
    scale = np.exp(np.asarray(log_scale, np.float64))
    expected = scipy.stats.norm.logpdf(
        np.asarray(x, np.float64), np.asarray(loc, np.float64), scale
    ).sum(-1)
    rtol = 1e-12 if dtype == jnp.float64 else 1e-6
    np.testing.assert_allclose(mean_field.log_prob(params, x), expected, rtol=rtol)
    np.testing.assert_allclose(
        mean_field.entropy(params), scipy.stats.norm.entropy(scale=scale).sum(), rtol=rtol
    )


def test_samples_have_the_family_moments(rng_key):
    params = mean_field.MeanFieldParams(jnp.asarray([1.0, -2.0]), jnp.log(jnp.asarray([0.5, 3.0])))
    n = 20_000
    x = mean_field.sample(rng_key, params, n)
    assert x.shape == (n, 2)
    # Standard errors of the sample mean and sample sd are sd/sqrt(n) and sd/sqrt(2n).
    sd = np.array([0.5, 3.0])
    np.testing.assert_array_less(np.abs(x.mean(0) - np.array([1.0, -2.0])), 5 * sd / np.sqrt(n))
    np.testing.assert_array_less(np.abs(x.std(0) - sd), 5 * sd / np.sqrt(2 * n))


def test_init_checks_its_arguments():
    with pytest.raises(ValueError, match=r"shape \(D,\)"):
        mean_field.init(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="scale must be positive"):
        mean_field.init(jnp.zeros(2), scale=0.0)
    params = mean_field.init(jnp.arange(3), scale=0.1)
    assert jnp.issubdtype(params.loc.dtype, jnp.floating)
    np.testing.assert_allclose(jnp.exp(params.log_scale), 0.1, rtol=1e-6)
