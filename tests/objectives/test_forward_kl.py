import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vi.families import mean_field
from vi.objectives import forward_kl


@pytest.mark.slow
def test_moment_match_is_the_sample_mean_and_sd(rng_key):
    draws = jax.random.normal(rng_key, (500, 3)) * jnp.asarray([1.0, 2.0, 0.5]) + 3.0
    params = forward_kl.moment_match(draws)
    np.testing.assert_allclose(params.loc, np.mean(np.asarray(draws), 0), rtol=1e-5)
    np.testing.assert_allclose(jnp.exp(params.log_scale), np.std(np.asarray(draws), 0), rtol=1e-5)


@pytest.mark.slow
def test_moment_match_minimises_the_pool_cross_entropy(rng_key):
    draws = jax.random.normal(rng_key, (200, 2)) * 2.0 - 1.0
    loss_fn = forward_kl.draws_loss(draws, None)
    best = forward_kl.moment_match(draws)
    grad = jax.grad(lambda p: loss_fn(p, rng_key)[0])(best)
    for leaf in jax.tree.leaves(grad):
        np.testing.assert_allclose(leaf, 0.0, atol=1e-5)


@pytest.mark.slow
def test_snis_weights_effective_sample_size():
    _, ess = forward_kl.snis_weights(jnp.zeros(100))
    np.testing.assert_allclose(ess, 1.0, rtol=1e-6)
    _, ess = forward_kl.snis_weights(jnp.asarray([50.0] + [0.0] * 99))
    np.testing.assert_allclose(ess, 0.01, rtol=1e-4)
    # Raw weights (30, 1, ..., 1): truncation at sqrt(n) * mean caps the first.
    raw = np.array([30.0] + [1.0] * 99)
    weights, ess = forward_kl.snis_weights(jnp.log(jnp.asarray(raw)))
    cap = np.sqrt(100) * raw.mean()
    np.testing.assert_allclose(weights[0], cap / (cap + 99.0), rtol=1e-5)
    np.testing.assert_allclose(jnp.sum(weights), 1.0, rtol=1e-6)
    np.testing.assert_allclose(ess, raw.sum() ** 2 / (100 * np.sum(raw**2)), rtol=1e-5)


@pytest.mark.slow
def test_snis_loss_is_unbiased_when_q_is_the_target(rng_key):
    # With q = p, the weights are nearly flat and the loss is the entropy of q.
    params = mean_field.init(jnp.zeros(2), scale=1.5)

    def logdensity(x):
        return mean_field.log_prob(params, x)

    loss, ess = forward_kl.snis_loss(logdensity, 20_000)(params, rng_key)
    entropy = float(mean_field.entropy(params))
    # Per-draw sd of -log q is sqrt(D/2) = 1 nat; allow 5 standard errors at the SNIS ESS.
    assert abs(float(loss) - entropy) < 5.0 / np.sqrt(float(ess) * 20_000)
    assert 0.5 < float(ess) <= 1.0
