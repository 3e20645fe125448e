import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

import vi
from vi.families import mean_field
from vi.families.gaussian import DiagNormal, StandardNormal
from vi.families.mean_field import MeanFieldParams


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


# --- the mean-field family's parameters -----------------------------------------------------


def test_kl_of_mean_field_params_is_the_closed_form(dtype):
    q = MeanFieldParams(jnp.asarray([0.3, -1.0, 2.0], dtype), jnp.asarray([-0.2, 0.1, 0.4], dtype))
    loc_p, scale_p = np.array([0.0, -0.5, 1.0]), np.array([1.2, 1.0, 0.7])
    p = DiagNormal(jnp.asarray(loc_p, dtype), jnp.asarray(np.log(scale_p), dtype))
    loc_q, scale_q = np.asarray(q.loc, np.float64), np.exp(np.asarray(q.log_scale, np.float64))
    rtol = 1e-12 if dtype == jnp.float64 else 2e-6
    # KL(N(m_q, s_q^2) || N(m_p, s_p^2)) per coordinate, by hand.
    expected = np.sum(
        np.log(scale_p / scale_q) + (scale_q**2 + (loc_q - loc_p) ** 2) / (2 * scale_p**2) - 0.5
    )
    np.testing.assert_allclose(vi.kl(q, p), expected, rtol=rtol)
    # And against scipy, by quadrature of q log(q / p) coordinate by coordinate.
    by_quadrature = 0.0
    for mq, sq, mp, sp in zip(loc_q, scale_q, loc_p, scale_p, strict=True):
        nq, np_ = scipy.stats.norm(mq, sq), scipy.stats.norm(mp, sp)
        integrand = lambda x, nq=nq, np_=np_: nq.pdf(x) * (nq.logpdf(x) - np_.logpdf(x))
        by_quadrature += scipy.integrate.quad(integrand, mq - 40 * sq, mq + 40 * sq)[0]
    np.testing.assert_allclose(vi.kl(q, p), by_quadrature, rtol=rtol)
    np.testing.assert_allclose(
        vi.kl(q, StandardNormal()), vi.kl(q, DiagNormal(0 * q.loc, 0 * q.loc))
    )


@pytest.mark.slow
def test_mean_field_params_are_a_diag_normal(dtype, rng_key):
    assert MeanFieldParams is DiagNormal is vi.MeanFieldParams is vi.DiagNormal
    params = mean_field.init(jnp.asarray([1.0, -2.0], dtype), scale=0.5)
    assert isinstance(params, DiagNormal)
    assert params._fields == ("loc", "log_scale")
    moved = params._replace(loc=jnp.zeros(2, dtype))
    assert isinstance(moved, MeanFieldParams) and jnp.all(moved.loc == 0)
    x = jnp.asarray([[0.5, 0.0], [1.0, -3.0]], dtype)
    np.testing.assert_array_equal(params.log_prob(x), mean_field.log_prob(params, x))
    np.testing.assert_array_equal(params.entropy(), mean_field.entropy(params))
    np.testing.assert_array_equal(params.sample(rng_key, 5), mean_field.sample(rng_key, params, 5))
    # A batch of fits is a batch of distributions: one KL per fit.
    batch = MeanFieldParams(jnp.zeros((4, 2), dtype), jnp.zeros((4, 2), dtype))
    assert vi.kl(batch, params).shape == (4,)
