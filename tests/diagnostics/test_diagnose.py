import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vi
from vi.diagnostics import diagnose
from vi.diagnostics.diagnose import DRAWS, EXACT, IMPORTANCE
from vi.families.mean_field import MeanFieldParams
from vi.kernels.gaussian import diag_normal_log_prob
from vi.targets.mixture import bimodal_2d, diagonal_covariances, gaussian_mixture

P_LOC = jnp.asarray([1.0, -2.0])
P_LOG_SCALE = jnp.log(jnp.asarray([1.0, 0.5]))
Q = MeanFieldParams(jnp.asarray([1.3, -1.8]), jnp.log(jnp.asarray([1.4, 0.6])))


def _gaussian_with_sampler():
    return gaussian_mixture(
        jnp.ones(1), P_LOC[None], diagonal_covariances(jnp.exp(2 * P_LOG_SCALE)[None])
    )


def _closed_forms():
    # The fit's parameters are a DiagNormal, so the KL registry takes them as they are.
    p = vi.DiagNormal(P_LOC, P_LOG_SCALE)
    return float(vi.kl(Q, p)), float(vi.kl(p, Q))


@pytest.mark.heavy
def test_both_kls_match_the_closed_form_with_exact_draws():
    d = diagnose(jax.random.key(0), _gaussian_with_sampler(), Q, num_samples=20_000)
    reverse, forward = _closed_forms()
    assert int(d.log_normalizer_method) == EXACT and int(d.forward_kl_method) == EXACT
    assert abs(float(d.reverse_kl) - reverse) < 5 * float(d.reverse_kl_stderr)
    assert abs(float(d.forward_kl) - forward) < 5 * float(d.forward_kl_stderr)
    # q is wider than p on both axes: importance ratios p/q are bounded.
    assert float(d.pareto_k) < 0.5


@pytest.mark.slow
def test_without_sampler_or_normaliser_importance_sampling_is_used_and_said():
    target = vi.from_logdensity(
        lambda x: diag_normal_log_prob(x, P_LOC, P_LOG_SCALE) + 3.0, jnp.zeros(2)
    )
    d = diagnose(jax.random.key(1), target, Q, num_samples=20_000)
    reverse, forward = _closed_forms()
    assert int(d.log_normalizer_method) == IMPORTANCE
    assert int(d.forward_kl_method) == IMPORTANCE
    # The unknown +3 in the log density is estimated away through log Z.
    assert abs(float(d.reverse_kl) - reverse) < 0.01
    assert abs(float(d.forward_kl) - forward) < 5 * float(d.forward_kl_stderr) + 0.01
    assert np.all(np.isnan(np.asarray(d.mean_error)))


@pytest.mark.slow
def test_given_draws_give_the_forward_kl_and_stand_in_for_the_truth():
    target = vi.from_logdensity(lambda x: diag_normal_log_prob(x, P_LOC, P_LOG_SCALE), jnp.zeros(2))
    draws = P_LOC + jnp.exp(P_LOG_SCALE) * jax.random.normal(jax.random.key(2), (20_000, 2))
    d = diagnose(jax.random.key(3), target, Q, num_samples=20_000, draws=draws)
    _, forward = _closed_forms()
    assert int(d.forward_kl_method) == DRAWS
    assert abs(float(d.forward_kl) - forward) < 5 * float(d.forward_kl_stderr) + 0.01
    expected = (np.asarray(Q.loc) - np.asarray(P_LOC)) / np.exp(np.asarray(P_LOG_SCALE))
    np.testing.assert_allclose(d.mean_error, expected, atol=0.03)


@pytest.mark.heavy
def test_a_fit_on_one_of_two_modes():
    target = bimodal_2d(separation=8.0)
    one_mode = MeanFieldParams(jnp.asarray([4.0, 0.0]), jnp.zeros(2))
    d = diagnose(jax.random.key(0), target, one_mode)
    # q is exactly one of two equal components: KL(q || p) = log 2.
    np.testing.assert_allclose(d.reverse_kl, np.log(2.0), atol=1e-3)
    np.testing.assert_array_equal(d.mode_covered, [False, True])
    np.testing.assert_allclose(d.covered_mode_weight, 0.5)
    # Half the target's mass is in the other mode, far outside q's 95 % region.
    assert abs(float(d.mass_in_hdr) - 0.95 / 2) < 0.03
    assert float(d.forward_kl) > 10.0


@pytest.mark.heavy
def test_a_batch_of_fits_is_diagnosed_at_once_like_a_loop():
    target = bimodal_2d(separation=8.0)
    locs = jnp.stack([jnp.asarray([x, 0.0]) for x in (-4.0, 0.0, 4.0)])
    params = MeanFieldParams(locs, jnp.zeros_like(locs))
    keys = jax.random.split(jax.random.key(0), 3)
    batch = jax.jit(jax.vmap(lambda k, p: diagnose(k, target, p, num_samples=1000)))(keys, params)
    for i in range(3):
        member = MeanFieldParams(params.loc[i], params.log_scale[i])
        one = diagnose(keys[i], target, member, num_samples=1000)
        np.testing.assert_allclose(batch.reverse_kl[i], one.reverse_kl, rtol=1e-5)
        np.testing.assert_allclose(batch.forward_kl[i], one.forward_kl, rtol=1e-5)
