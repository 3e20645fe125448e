"""Forward and reverse KL on targets whose truth is known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vi
from vi.objectives.forward_kl import moment_match
from vi.targets.mixture import bimodal_2d, mixture_10d


@pytest.mark.parametrize(
    "make_target", [bimodal_2d, mixture_10d], ids=["bimodal_2d", "mixture_10d"]
)
def test_forward_kl_from_exact_samples_matches_the_true_moments(make_target):
    target = make_target()
    result = vi.fit(jax.random.key(0), target, objective="forward_kl", estimator="exact")
    true_sd = np.sqrt(np.asarray(target.truth.variance))
    assert result.stop_reason == "converged"
    # The optimum is moment matching; what is left is the optimiser's noise at
    # its final step size (256 draws a step).
    np.testing.assert_array_less(np.abs(result.params.loc - target.truth.mean) / true_sd, 0.05)
    np.testing.assert_allclose(np.exp(result.params.log_scale), true_sd, rtol=0.03)


def test_forward_kl_from_snis_matches_the_true_moments_in_2d():
    target = bimodal_2d()
    result = vi.fit(jax.random.key(1), target, objective="forward_kl", estimator="snis")
    true_sd = np.sqrt(np.asarray(target.truth.variance))
    assert result.stop_reason == "converged"
    assert 0.1 < float(result.info.ess_fraction) <= 1.0
    np.testing.assert_array_less(np.abs(result.params.loc - target.truth.mean) / true_sd, 0.05)
    np.testing.assert_allclose(np.exp(result.params.log_scale), true_sd, rtol=0.03)


def test_snis_weight_collapse_is_flagged():
    # In 10-D with four far-apart modes the ESS of q's draws is a few percent.
    result = vi.fit(
        jax.random.key(0),
        mixture_10d(),
        objective="forward_kl",
        estimator="snis",
        min_ess_fraction=0.3,
        max_steps=1500,
    )
    assert result.stop_reason == "weights_collapsed"
    assert float(result.info.ess_fraction) < 0.3


def test_reverse_kl_seeks_one_mode_and_forward_kl_covers_both():
    target = bimodal_2d(separation=8.0)
    modes = np.asarray(target.truth.modes)
    reverse = vi.fit(jax.random.key(3), target, init_radius=2.0)
    nearest = modes[np.argmin(np.linalg.norm(modes - np.asarray(reverse.params.loc), axis=1))]
    np.testing.assert_allclose(reverse.params.loc, nearest, atol=1e-2)
    np.testing.assert_allclose(np.exp(reverse.params.log_scale), 1.0, atol=1e-2)

    forward = vi.fit(jax.random.key(3), target, objective="forward_kl")
    np.testing.assert_allclose(forward.params.loc, 0.0, atol=0.15)
    np.testing.assert_allclose(np.exp(forward.params.log_scale), np.sqrt([17.0, 1.0]), rtol=0.03)


def test_forward_kl_from_given_draws_is_moment_matching():
    draws = jax.random.normal(jax.random.key(0), (2000, 3)) * jnp.asarray([0.5, 1.0, 2.0]) + 1.0
    target = vi.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(3))
    result = vi.fit(jax.random.key(1), target, objective="forward_kl", draws=draws)
    best = moment_match(draws)
    sd = np.exp(np.asarray(best.log_scale))
    np.testing.assert_array_less(np.abs(result.params.loc - best.loc) / sd, 0.05)
    np.testing.assert_allclose(np.exp(result.params.log_scale), sd, rtol=0.03)


def test_forward_kl_bad_input_is_named():
    plain = vi.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(3))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="sample_fn is None"):
        vi.fit(key, plain, objective="forward_kl", estimator="exact")
    with pytest.raises(ValueError, match=r"draws must have shape \(N, 3\)"):
        vi.fit(key, plain, objective="forward_kl", draws=jnp.zeros((10, 2)))
    with pytest.raises(ValueError, match=r"draws\[4\] is not finite"):
        vi.fit(key, plain, objective="forward_kl", draws=jnp.zeros((10, 3)).at[4, 1].set(jnp.nan))
    with pytest.raises(ValueError, match="estimator must be one of"):
        vi.fit(key, plain, objective="forward_kl", estimator="mcmc")
    with pytest.raises(ValueError, match="objective must be one of"):
        vi.fit(key, plain, objective="alpha")
    with pytest.raises(ValueError, match="forward_kl"):
        vi.fit(key, plain, estimator="snis")
