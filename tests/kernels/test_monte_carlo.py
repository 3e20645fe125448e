"""Monte-Carlo KL estimators against closed forms (numpyro), quadrature (scipy) and numpy.

Agreement checks use a fixed key and a tolerance of 5 standard errors: for an estimator
that is unbiased with a near-normal sampling distribution, a correct implementation fails
such a check with probability below 1e-6.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as npd
import pytest
from scipy import integrate, stats

from vi.kernels.estimate import Estimate
from vi.kernels.gaussian import diag_normal_log_prob
from vi.kernels.monte_carlo import forward_kl_estimate, monte_carlo_kl, reverse_kl_estimate

LOC_Q, LOG_SCALE_Q = np.array([0.3, -1.0, 2.0]), np.array([-0.2, 0.1, 0.4])
LOC_P, LOG_SCALE_P = np.array([0.0, -0.5, 1.0]), np.array([0.2, 0.0, 0.3])


class Gaussian(NamedTuple):
    loc: jax.Array
    log_scale: jax.Array

    def sample(self, rng_key, num_samples):
        shape = (num_samples, *jnp.broadcast_shapes(self.loc.shape, self.log_scale.shape))
        eps = jax.random.normal(rng_key, shape, self.loc.dtype)
        return self.loc + jnp.exp(self.log_scale) * eps

    def log_prob(self, x):
        return diag_normal_log_prob(x, self.loc, self.log_scale)


class Laplace(NamedTuple):
    loc: jax.Array
    scale: jax.Array

    def sample(self, rng_key, num_samples):
        eps = jax.random.laplace(rng_key, (num_samples, *self.loc.shape), self.loc.dtype)
        return self.loc + self.scale * eps

    def log_prob(self, x):
        return jnp.sum(-jnp.abs(x - self.loc) / self.scale - jnp.log(2 * self.scale), axis=-1)


def gaussians(dtype):
    q = Gaussian(jnp.asarray(LOC_Q, dtype), jnp.asarray(LOG_SCALE_Q, dtype))
    p = Gaussian(jnp.asarray(LOC_P, dtype), jnp.asarray(LOG_SCALE_P, dtype))
    return q, p


def numpyro_kl(a: Gaussian, b: Gaussian) -> float:
    def to_numpyro(g):
        return npd.Independent(npd.Normal(g.loc, jnp.exp(g.log_scale)), 1)

    return float(npd.kl_divergence(to_numpyro(a), to_numpyro(b)))


def compiled(fn, *args):
    """Runs ``fn`` compiled whole: much faster to warm up than op-by-op eager dispatch."""
    return jax.jit(fn)(*args)


def assert_within_stderrs(estimate: Estimate, expected, num_stderrs=5.0):
    assert isinstance(estimate, Estimate)
    value, stderr = np.asarray(estimate.value), np.asarray(estimate.stderr)
    assert np.all(stderr > 0)
    assert np.all(np.abs(value - expected) < num_stderrs * stderr), (value, expected, stderr)


@pytest.mark.slow
def test_reverse_kl_agrees_with_closed_form(dtype, rng_key):
    q, p = gaussians(dtype)
    estimate = compiled(
        lambda: reverse_kl_estimate(rng_key, q.sample, q.log_prob, p.log_prob, 4000)
    )
    assert estimate.value.dtype == dtype
    assert_within_stderrs(estimate, numpyro_kl(q, p))


@pytest.mark.slow
def test_reverse_kl_of_unnormalised_target_is_off_by_its_log_normaliser(x64, rng_key):
    q, p = gaussians(jnp.float64)
    log_z = 3.0
    normalised = compiled(
        lambda: reverse_kl_estimate(rng_key, q.sample, q.log_prob, p.log_prob, 1000)
    )
    shifted_log_p = lambda x: p.log_prob(x) + log_z
    shifted = compiled(
        lambda: reverse_kl_estimate(rng_key, q.sample, q.log_prob, shifted_log_p, 1000)
    )
    np.testing.assert_allclose(shifted.value, normalised.value - log_z, rtol=1e-12)
    np.testing.assert_allclose(shifted.stderr, normalised.stderr, rtol=1e-9)
    assert_within_stderrs(shifted, numpyro_kl(q, p) - log_z)


@pytest.mark.slow
def test_forward_kl_agrees_with_closed_form(dtype, rng_key):
    q, p = gaussians(dtype)
    samples = p.sample(rng_key, 4000)
    from_fn = compiled(lambda: forward_kl_estimate(samples, q.log_prob, logdensity_fn=p.log_prob))
    log_p = compiled(lambda: p.log_prob(samples))
    from_values = compiled(
        lambda: forward_kl_estimate(samples, q.log_prob, logdensity_values=log_p)
    )
    np.testing.assert_allclose(from_fn.value, from_values.value, rtol=1e-5)
    assert_within_stderrs(from_fn, numpyro_kl(p, q))


def test_forward_kl_is_infinite_where_q_has_no_mass(rng_key):
    samples = jax.random.normal(rng_key, (100, 1))
    positive_half = lambda x: jnp.where(
        x[0] > 0, jnp.log(2.0) + diag_normal_log_prob(x, 0.0, 0.0), -jnp.inf
    )
    estimate = compiled(
        lambda: forward_kl_estimate(
            samples, positive_half, logdensity_fn=lambda x: diag_normal_log_prob(x, 0.0, 0.0)
        )
    )
    assert estimate.value == jnp.inf


def laplace_normal_kl_by_quadrature(loc_q, scale_q, loc_p, scale_p) -> float:
    total = 0.0
    for mq, bq, mp, sp in zip(loc_q, scale_q, loc_p, scale_p, strict=True):
        q, p = stats.laplace(mq, bq), stats.norm(mp, sp)
        integrand = lambda x, q=q, p=p: q.pdf(x) * (q.logpdf(x) - p.logpdf(x))
        pieces = [(mq - 60 * bq, mq), (mq, mq + 60 * bq)]  # the density has a kink at mq
        total += sum(integrate.quad(integrand, a, b, epsabs=1e-12)[0] for a, b in pieces)
    return total


def test_monte_carlo_kl_for_a_pair_without_closed_form(dtype, rng_key):
    q = Laplace(jnp.asarray([0.5, -1.0], dtype), jnp.asarray([0.7, 1.5], dtype))
    p = Gaussian(jnp.asarray([0.0, 0.0], dtype), jnp.asarray([0.0, 0.5], dtype))
    expected = laplace_normal_kl_by_quadrature(
        [0.5, -1.0], [0.7, 1.5], [0.0, 0.0], np.exp([0.0, 0.5])
    )
    assert_within_stderrs(compiled(lambda: monte_carlo_kl(rng_key, q, p, 4000)), expected)


@pytest.mark.slow
def test_monte_carlo_kl_is_batched(dtype, rng_key):
    loc_q = np.array([[0.5, -1.0], [0.0, 0.0], [2.0, 1.0]])
    q = Laplace(jnp.asarray(loc_q, dtype), jnp.asarray([0.7, 1.5], dtype))
    p = Gaussian(jnp.zeros(2, dtype), jnp.asarray([0.0, 0.5], dtype))
    estimate = compiled(lambda: monte_carlo_kl(rng_key, q, p, 4000))
    assert estimate.value.shape == estimate.stderr.shape == (3,)
    expected = [
        laplace_normal_kl_by_quadrature(row, [0.7, 1.5], [0.0, 0.0], np.exp([0.0, 0.5]))
        for row in loc_q
    ]
    assert_within_stderrs(estimate, expected)


@pytest.mark.slow
def test_stderr_matches_the_spread_of_repeated_estimates(rng_key):
    q, p = gaussians(jnp.float32)
    keys = jax.random.split(rng_key, 400)
    estimates = compiled(
        jax.vmap(lambda k: reverse_kl_estimate(k, q.sample, q.log_prob, p.log_prob, 64)), keys
    )
    spread = np.std(np.asarray(estimates.value), ddof=1)
    # The spread of 400 near-normal estimates is known to within 1/sqrt(2 * 399) = 3.5 %;
    # 20 % leaves room for the heavier tails of a mean of 64 quadratic forms.
    assert abs(spread / np.mean(estimates.stderr) - 1) < 0.2


def test_gradient_agrees_with_closed_form(x64, rng_key):
    q, p = gaussians(jnp.float64)
    num_samples = 2000

    def estimate(loc_q):
        q_moved = q._replace(loc=loc_q)
        return reverse_kl_estimate(
            rng_key, q_moved.sample, q_moved.log_prob, p.log_prob, num_samples
        ).value

    grad = compiled(jax.grad(estimate), q.loc)
    var_p = np.exp(2 * LOG_SCALE_P)
    # Reparameterised: d/dloc_q of log q(loc + s * eps) is 0 and of -log p is (x - loc_p) / var_p,
    # a per-draw gradient with standard deviation scale_q / var_p.
    stderr = np.exp(LOG_SCALE_Q) / var_p / np.sqrt(num_samples)
    assert np.all(np.abs(grad - (LOC_Q - LOC_P) / var_p) < 5 * stderr)


@pytest.mark.slow
def test_kl_of_q_with_itself_is_zero_with_zero_gradient(dtype, rng_key):
    q, _ = gaussians(dtype)

    def estimate(loc, log_scale):
        q_ = Gaussian(loc, log_scale)
        return reverse_kl_estimate(rng_key, q_.sample, q_.log_prob, q_.log_prob, 100).value

    value, grads = compiled(jax.value_and_grad(estimate, argnums=(0, 1)), q.loc, q.log_scale)
    assert value == 0
    # The two cotangents cancel up to the rounding of separately fused sums of 100 terms.
    for g in grads:
        np.testing.assert_allclose(g, 0, atol=100 * jnp.finfo(dtype).eps)


@pytest.mark.slow
def test_jit_vmap_and_loop_agree(dtype, rng_key):
    q, p = gaussians(dtype)
    run = lambda k: monte_carlo_kl(k, q, p, 256)
    eager = run(rng_key)
    jitted = jax.jit(run)(rng_key)
    rtol = 1e-5 if dtype == jnp.float32 else 1e-12
    np.testing.assert_allclose(jitted.value, eager.value, rtol=rtol)
    np.testing.assert_allclose(jitted.stderr, eager.stderr, rtol=rtol)
    keys = jax.random.split(rng_key, 3)
    mapped = jax.vmap(run)(keys)
    looped = [run(k) for k in keys]
    np.testing.assert_allclose(mapped.value, [e.value for e in looped], rtol=rtol)
    np.testing.assert_allclose(mapped.stderr, [e.stderr for e in looped], rtol=rtol)


@pytest.mark.slow
def test_no_retrace_on_same_shapes(dtype, rng_key):
    traces = []

    @jax.jit
    def run(rng_key, q, p):
        traces.append(None)
        return monte_carlo_kl(rng_key, q, p, 128)

    q, p = gaussians(dtype)
    run(rng_key, q, p)
    run(jax.random.key(1), p, q)
    assert len(traces) == 1


def test_bad_input():
    samples, log_q = jnp.zeros((5, 2)), lambda x: jnp.sum(x)
    with pytest.raises(ValueError, match="exactly one"):
        forward_kl_estimate(samples, log_q)
    with pytest.raises(ValueError, match="exactly one"):
        forward_kl_estimate(samples, log_q, logdensity_fn=log_q, logdensity_values=jnp.zeros(5))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        forward_kl_estimate(samples, log_q, logdensity_values=jnp.zeros(4))
