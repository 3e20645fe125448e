"""``vi.psis``: k-hat as ArviZ computes it, and expectations corrected towards the truth."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import vi
from vi.diagnostics import pareto_smooth

TARGET_MEAN = np.array([1.0, -2.0])
TARGET_SD = np.array([1.0, 0.5])


def _gaussian_target():
    return vi.from_logdensity(
        lambda x: -0.5 * jnp.sum(((x - TARGET_MEAN) / TARGET_SD) ** 2), jnp.zeros(2)
    )


@pytest.mark.parametrize("scale", [0.3, 0.8, 3.0])
@pytest.mark.slow
def test_k_hat_and_weights_are_arviz_psislw(x64, scale):
    """The same log ratios through ArviZ's ``psislw``: the same k-hat and smoothed weights."""
    arviz = pytest.importorskip("arviz")
    x = jax.random.normal(jax.random.key(0), (4000,)) * scale
    log_ratios = np.asarray(-0.5 * x**2 + 0.5 * (x / scale) ** 2)
    expected_log_w, expected_k = arviz.psislw(log_ratios.copy())
    result = pareto_smooth(log_ratios)
    np.testing.assert_allclose(result.pareto_k, expected_k, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(result.log_weights, expected_log_w, rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_a_wide_q_is_corrected_to_the_target_moments(x64):
    """q off-centre and twice as wide: k-hat is small, and the corrected means and
    variances are the target's within five Monte-Carlo standard errors (ESS-based)."""
    q = vi.MeanFieldParams(jnp.array(TARGET_MEAN + 0.3), jnp.log(2 * TARGET_SD))
    estimate = vi.psis(jax.random.key(1), _gaussian_target(), q, num_draws=20_000)
    assert bool(estimate.reliable) and float(estimate.pareto_k) < 0.5
    se = TARGET_SD / np.sqrt(float(estimate.ess))
    np.testing.assert_array_less(np.abs(estimate.mean - TARGET_MEAN), 5 * se)
    np.testing.assert_allclose(estimate.variance, TARGET_SD**2, rtol=0.05)
    np.testing.assert_allclose(estimate.site_mean["x"], estimate.mean)
    assert np.isclose(float(jnp.sum(jnp.exp(estimate.log_weights))), 1.0)


@pytest.mark.slow
def test_a_q_far_too_narrow_is_reported_unreliable(x64):
    q = vi.MeanFieldParams(jnp.asarray(TARGET_MEAN), jnp.log(0.2 * TARGET_SD))
    estimate = vi.psis(jax.random.key(2), _gaussian_target(), q)
    assert float(estimate.pareto_k) > 0.7
    assert not bool(estimate.reliable)


@pytest.mark.heavy
def test_a_numpyro_fit_is_corrected_in_the_model_space(x64):
    """Poisson counts with a Gamma prior: the posterior of the rate is Gamma(a + Σy, b + n).
    A Gaussian on log(rate) is close but not exact (its variance of the rate is off);
    corrected, the rate's posterior mean and variance land on the closed form."""
    y = np.array([0, 1, 0])
    a, b = 1.0, 1.0

    def model(y):
        rate = numpyro.sample("rate", dist.Gamma(a, b))
        numpyro.sample("y", dist.Poisson(rate), obs=y)

    target = vi.from_numpyro(model, y)
    result = vi.fit(jax.random.key(0), target)
    estimate = vi.psis(jax.random.key(3), target, result, num_draws=20_000)
    shape, rate = a + y.sum(), b + len(y)
    exact_mean, exact_var = shape / rate, shape / rate**2
    assert bool(estimate.reliable)
    q_var = float(jnp.var(result.sample(jax.random.key(4), 100_000)["rate"]))
    corrected = float(estimate.site_mean["rate"])
    assert abs(corrected - exact_mean) < 3 * np.sqrt(exact_var / float(estimate.ess))
    corrected_var = float(estimate.site_variance["rate"])
    assert abs(corrected_var - exact_var) < 0.03 * exact_var < abs(q_var - exact_var)


@pytest.mark.slow
def test_a_batch_of_fits_is_checked_at_once(x64):
    target = _gaussian_target()
    keys = jax.random.split(jax.random.key(0), 3)
    params = vi.MeanFieldParams(
        jnp.asarray(TARGET_MEAN) + jnp.array([[0.1], [0.2], [-0.3]]),
        jnp.log(jnp.asarray(TARGET_SD)) + jnp.array([[0.2], [0.3], [0.1]]),
    )
    estimates = jax.vmap(lambda k, p: vi.psis(k, target, p, 1000))(keys, params)
    assert estimates.pareto_k.shape == (3,)
    for i in range(3):
        single = vi.psis(keys[i], target, jax.tree.map(lambda v, i=i: v[i], params), 1000)
        np.testing.assert_allclose(estimates.pareto_k[i], single.pareto_k, rtol=1e-6)
        np.testing.assert_allclose(estimates.mean[i], single.mean, rtol=1e-6)


def test_bad_arguments_are_named():
    target = _gaussian_target()
    q = vi.MeanFieldParams(jnp.zeros(2), jnp.zeros(2))
    with pytest.raises(
        ValueError, match=r"num_draws must be at least 21 \(a tail of 5 ratios\), got 10"
    ):
        vi.psis(jax.random.key(0), target, q, num_draws=10)
    with pytest.raises(TypeError, match=r"fit must be a vi\.fit result or its params"):
        vi.psis(jax.random.key(0), target, {"loc": 0.0}, num_draws=100)


@pytest.mark.slow
def test_diagnostics_carry_the_corrected_mean_error(x64):
    """A q too wide and off-centre has its mean error repaired by the weights; a q on one
    of two separated modes cannot be (the other mode is never drawn), and k-hat says so."""
    from vi.targets.mixture import bimodal_2d

    target = bimodal_2d(separation=4.0)
    wide = vi.MeanFieldParams(jnp.array([0.5, 0.3]), jnp.log(jnp.array([3.0, 2.0])))
    d = vi.diagnose(jax.random.key(0), target, wide, num_samples=2000)
    assert float(jnp.max(jnp.abs(d.mean_error))) > 0.2
    assert float(jnp.max(jnp.abs(d.corrected_mean_error))) < 0.1
    one_mode = vi.MeanFieldParams(jnp.array([2.0, 0.0]), jnp.log(jnp.array([0.7, 0.7])))
    d = vi.diagnose(jax.random.key(0), target, one_mode, num_samples=2000)
    assert float(jnp.max(jnp.abs(d.corrected_mean_error))) > 0.5
    assert float(d.pareto_k) > 0.7
