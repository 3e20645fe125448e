"""The Gaussian distributions and their closed-form KLs, against numpyro and scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as npd
import pytest
from scipy import stats

from vi.families.gaussian import (
    DiagNormal,
    MultivariateNormal,
    Normal,
    StandardNormal,
    distribution_from_numpyro,
    mvn_from_covariance,
)
from vi.kernels.registry import kl as eager_kl

# Most tests call kl compiled whole, which warms up ~8x faster than op-by-op eager dispatch;
# test_jit_vmap_and_loop_agree checks the eager path gives the same numbers.
kl = jax.jit(eager_kl, static_argnames="num_samples")
numpyro_kl = jax.jit(lambda q, p: npd.kl_divergence(q, p))


def tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == jnp.float32 else dict(rtol=1e-11, atol=1e-11)


def random_tril(rng, batch, dim):
    factor = np.tril(rng.normal(size=(*batch, dim, dim)), -1)
    return factor + np.exp(0.3 * rng.normal(size=(*batch, dim)))[..., None] * np.eye(dim)


def examples(dtype, batch=(), dim=3, seed=0):
    """One of each type, and the numpyro distribution each one stands for."""
    rng = np.random.default_rng(seed)
    a = lambda *shape: jnp.asarray(rng.normal(size=shape), dtype)
    loc, log_scale = a(*batch, dim), 0.5 * a(*batch, dim)
    loc2, scale2 = a(*batch, dim), jnp.exp(0.5 * a(*batch, dim))
    loc3, tril3 = a(*batch, dim), jnp.asarray(random_tril(rng, batch, dim), dtype)
    zeros, ones = jnp.zeros((*batch, dim), dtype), jnp.ones((*batch, dim), dtype)
    independent = lambda m, s: npd.Independent(npd.Normal(m, s), 1)
    return {
        "diag": (DiagNormal(loc, log_scale), independent(loc, jnp.exp(log_scale))),
        "normal": (Normal(loc2, scale2), independent(loc2, scale2)),
        "mvn": (MultivariateNormal(loc3, tril3), npd.MultivariateNormal(loc3, scale_tril=tril3)),
        "standard": (StandardNormal(), independent(zeros, ones)),
    }


def as_numpyro_mvn(dist):
    """Any numpyro Gaussian as a MultivariateNormal, so numpyro can pair it with one."""
    if isinstance(dist, npd.MultivariateNormal):
        return dist
    return npd.MultivariateNormal(
        dist.mean, scale_tril=jnp.sqrt(dist.variance)[..., None] * jnp.eye(3)
    )


PAIRS = [
    (q, p)
    for q in ("diag", "normal", "mvn", "standard")
    for p in ("diag", "normal", "mvn", "standard")
]


@pytest.mark.parametrize(("name_q", "name_p"), PAIRS)
@pytest.mark.slow
def test_every_gaussian_pair_matches_numpyro(dtype, name_q, name_p):
    (q, np_q), (p, np_p) = (
        examples(dtype, (2,), seed=0)[name_q],
        examples(dtype, (2,), seed=1)[name_p],
    )
    if "mvn" in (name_q, name_p):
        np_q, np_p = as_numpyro_mvn(np_q), as_numpyro_mvn(np_p)
    expected = numpyro_kl(np_q, np_p)
    out = kl(q, p)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, np.broadcast_to(expected, (2,)), **tol(dtype))


@pytest.mark.slow
def test_numpyro_distributions_are_converted(dtype):
    dists_q, dists_p = examples(dtype, (4,), seed=0), examples(dtype, (4,), seed=1)
    for name_q, name_p in [("diag", "normal"), ("mvn", "mvn"), ("normal", "normal")]:
        np_q, np_p = dists_q[name_q][1], dists_p[name_p][1]
        np.testing.assert_allclose(kl(np_q, np_p), numpyro_kl(np_q, np_p), **tol(dtype))
    # A scalar-event Normal gives one KL per element, as numpyro does.
    scalar_q, scalar_p = npd.Normal(jnp.zeros(3, dtype), 2.0), npd.Normal(1.0, jnp.ones(3, dtype))
    np.testing.assert_allclose(kl(scalar_q, scalar_p), numpyro_kl(scalar_q, scalar_p), **tol(dtype))
    # Independent over two axes flattens both into the event.
    rng = np.random.default_rng(1)
    loc_q, loc_p = (jnp.asarray(rng.normal(size=(5, 2, 3)), dtype) for _ in "qp")
    deep_q = npd.Independent(npd.Normal(loc_q, 1.5), 2)
    deep_p = npd.Independent(npd.Normal(loc_p, 0.5), 2)
    converted = distribution_from_numpyro(deep_q)
    assert converted.loc.shape == (5, 6)
    expected = numpyro_kl(deep_q, deep_p)
    np.testing.assert_allclose(kl(deep_q, deep_p), expected, **tol(dtype))


def test_unsupported_numpyro_distribution_raises():
    with pytest.raises(TypeError, match="cannot convert numpyro Gamma"):
        kl(npd.Gamma(1.0, 1.0), npd.Gamma(2.0, 1.0))


@pytest.mark.slow
def test_log_prob_and_entropy_match_scipy(dtype):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 3))
    dists = examples(dtype, seed=3)
    for name, (dist, _) in dists.items():
        if name == "mvn":
            cov = (
                np.asarray(dist.scale_tril, np.float64) @ np.asarray(dist.scale_tril, np.float64).T
            )
            ref = stats.multivariate_normal(np.asarray(dist.loc, np.float64), cov)
            expected_log_prob, expected_entropy = ref.logpdf(x), ref.entropy()
        else:
            loc = np.zeros(3) if name == "standard" else np.asarray(dist.loc, np.float64)
            if name == "diag":
                scale = np.exp(np.asarray(dist.log_scale, np.float64))
            else:
                scale = np.ones(3) if name == "standard" else np.asarray(dist.scale, np.float64)
            expected_log_prob = stats.norm.logpdf(x, loc, scale).sum(-1)
            expected_entropy = stats.norm.entropy(scale=scale).sum()
        log_prob = jax.jit(type(dist).log_prob)(dist, jnp.asarray(x, dtype))
        np.testing.assert_allclose(log_prob, expected_log_prob, **tol(dtype))
        if name != "standard":
            entropy = jax.jit(type(dist).entropy)(dist)
            np.testing.assert_allclose(entropy, expected_entropy, **tol(dtype))


@pytest.mark.slow
def test_samples_have_the_right_moments(x64, rng_key):
    num_samples = 20_000
    for name, (dist, np_dist) in examples(jnp.float64, seed=4).items():
        if name == "standard":
            continue
        draws = np.asarray(dist.sample(rng_key, num_samples))
        assert draws.shape == (num_samples, 3)
        mean, cov = np.asarray(np_dist.mean), np.asarray(as_numpyro_mvn(np_dist).covariance_matrix)
        # Each coordinate's sample mean has standard error sqrt(var / n).
        stderr = np.sqrt(np.diag(cov) / num_samples)
        assert np.all(np.abs(draws.mean(0) - mean) < 5 * stderr)
        # Sample covariance entries: standard error sqrt((s_ii s_jj + s_ij^2) / n) for Gaussians.
        cov_stderr = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / num_samples)
        assert np.all(np.abs(np.cov(draws.T) - cov) < 5 * cov_stderr)


@pytest.mark.slow
def test_mvn_from_covariance_matches_scipy(x64):
    rng = np.random.default_rng(5)
    factor = rng.normal(size=(3, 3))
    cov = factor @ factor.T + np.eye(3)
    loc, x = rng.normal(size=3), rng.normal(size=(4, 3))
    dist = mvn_from_covariance(loc, cov)
    np.testing.assert_allclose(
        dist.log_prob(x), stats.multivariate_normal(loc, cov).logpdf(x), rtol=1e-12
    )
    with pytest.raises(ValueError, match=r"\(\.\.\., D, D\)"):
        mvn_from_covariance(loc, np.ones(3))


@pytest.mark.slow
def test_jit_vmap_and_loop_agree(dtype):
    dists = examples(dtype, batch=(4,))
    q, p = dists["diag"][0], dists["mvn"][0]
    eager = eager_kl(q, p)
    np.testing.assert_allclose(kl(q, p), eager, **tol(dtype))
    np.testing.assert_allclose(jax.vmap(eager_kl)(q, p), eager, **tol(dtype))
    take = lambda tree, i: jax.tree.map(lambda a: a[i], tree)
    looped = [eager_kl(take(q, i), take(p, i)) for i in range(4)]
    np.testing.assert_allclose(looped, eager, **tol(dtype))


def test_no_retrace_on_same_shapes(dtype):
    traces = []

    @jax.jit
    def prior_kl(q):
        traces.append(None)
        return eager_kl(q, StandardNormal())

    prior_kl(examples(dtype, seed=1)["diag"][0])
    prior_kl(examples(dtype, seed=2)["diag"][0])
    assert len(traces) == 1


@pytest.mark.slow
def test_kl_of_a_distribution_with_itself_is_zero_with_zero_gradient(dtype):
    for name in ("diag", "normal"):
        dist = examples(dtype, seed=6)[name][0]
        value, grad = jax.value_and_grad(kl)(dist, dist)
        assert value == 0
        for leaf in jax.tree.leaves(grad):
            assert jnp.all(leaf == 0)


def test_standard_normal_cannot_be_sampled(rng_key):
    with pytest.raises(TypeError, match="no event shape"):
        StandardNormal().sample(rng_key, 3)
