"""Gaussian kernels against scipy, numpyro, exact decimal arithmetic and analytic gradients."""

from decimal import Decimal, localcontext

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as npd
import pytest
from scipy import integrate, stats

from vi.kernels import gaussian

# The tests call the kernels compiled whole, which warms up ~8x faster than op-by-op eager
# dispatch; test_jit_vmap_and_loop_agree checks the eager path gives the same numbers.
diag_normal_log_prob = jax.jit(gaussian.diag_normal_log_prob)
diag_normal_entropy = jax.jit(gaussian.diag_normal_entropy)
diag_normal_kl = jax.jit(gaussian.diag_normal_kl)
diag_normal_kl_from_scale = jax.jit(gaussian.diag_normal_kl_from_scale)
diag_normal_kl_standard = jax.jit(gaussian.diag_normal_kl_standard)
mvn_log_prob = jax.jit(gaussian.mvn_log_prob)
mvn_entropy = jax.jit(gaussian.mvn_entropy)
mvn_kl = jax.jit(gaussian.mvn_kl)
numpyro_kl = jax.jit(lambda q, p: npd.kl_divergence(q, p))


def tol(dtype):
    # float32: sums of 5-64 terms of size O(1-100), each within a few ulps.
    return dict(rtol=2e-5, atol=2e-5) if dtype == jnp.float32 else dict(rtol=1e-11, atol=1e-11)


def diag_params(seed, shape):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=shape),
        0.5 * rng.normal(size=shape),
        rng.normal(size=shape),
        0.5 * rng.normal(size=shape),
    )


def random_tril(rng, batch, dim):
    factor = np.tril(rng.normal(size=(*batch, dim, dim)), -1)
    diag = np.exp(0.3 * rng.normal(size=(*batch, dim)))
    return factor + diag[..., None] * np.eye(dim)


def cast(dtype, *arrays):
    return tuple(jnp.asarray(a, dtype) for a in arrays)


def decimal_half_term(d: float) -> float:
    """(e^(2d) - 1 - 2d) / 2 at 50 significant digits."""
    with localcontext() as ctx:
        ctx.prec = 50
        two_d = 2 * Decimal(d)
        return float((two_d.exp() - 1 - two_d) / 2)


# --- diagonal: references -------------------------------------------------------------------


def test_diag_log_prob_matches_scipy(dtype):
    loc, log_scale, x, _ = diag_params(0, (4, 5))
    out = diag_normal_log_prob(*cast(dtype, x, loc, log_scale))
    expected = stats.norm.logpdf(x, loc, np.exp(log_scale)).sum(-1)
    assert out.dtype == dtype and out.shape == (4,)
    np.testing.assert_allclose(out, expected, **tol(dtype))


def test_diag_entropy_matches_scipy(dtype):
    _, log_scale, _, _ = diag_params(1, (3, 6))
    out = diag_normal_entropy(jnp.asarray(log_scale, dtype))
    expected = stats.norm.entropy(scale=np.exp(log_scale)).sum(-1)
    np.testing.assert_allclose(out, expected, **tol(dtype))


def test_diag_kl_matches_numpyro(dtype):
    loc_q, log_scale_q, loc_p, log_scale_p = cast(dtype, *diag_params(2, (7, 5)))
    out = diag_normal_kl(loc_q, log_scale_q, loc_p, log_scale_p)
    expected = numpyro_kl(
        npd.Independent(npd.Normal(loc_q, jnp.exp(log_scale_q)), 1),
        npd.Independent(npd.Normal(loc_p, jnp.exp(log_scale_p)), 1),
    )
    assert out.dtype == dtype and out.shape == (7,)
    np.testing.assert_allclose(out, expected, **tol(dtype))


def test_diag_kl_matches_numerical_integration():
    loc_q, log_scale_q, loc_p, log_scale_p = diag_params(3, (3,))
    expected = 0.0
    for mq, sq, mp, sp in zip(loc_q, np.exp(log_scale_q), loc_p, np.exp(log_scale_p), strict=True):
        q, p = stats.norm(mq, sq), stats.norm(mp, sp)
        integrand = lambda x, q=q, p=p: q.pdf(x) * (q.logpdf(x) - p.logpdf(x))
        expected += integrate.quad(integrand, mq - 30 * sq, mq + 30 * sq, epsabs=1e-13)[0]
    with jax.enable_x64(True):
        out = diag_normal_kl(loc_q, log_scale_q, loc_p, log_scale_p)
    np.testing.assert_allclose(out, expected, rtol=1e-9)


@pytest.mark.slow
def test_diag_kl_from_scale_matches_numpyro(dtype):
    loc_q, log_scale_q, loc_p, log_scale_p = diag_params(4, (2, 3, 4))
    scale_q, scale_p = np.exp(log_scale_q), np.exp(log_scale_p)
    args = cast(dtype, loc_q, scale_q, loc_p, scale_p)
    expected = numpyro_kl(
        npd.Independent(npd.Normal(args[0], args[1]), 1),
        npd.Independent(npd.Normal(args[2], args[3]), 1),
    )
    np.testing.assert_allclose(diag_normal_kl_from_scale(*args), expected, **tol(dtype))


@pytest.mark.slow
def test_diag_kl_standard_matches_numpyro(dtype):
    loc, log_scale, _, _ = cast(dtype, *diag_params(5, (6, 8)))
    expected = numpyro_kl(
        npd.Independent(npd.Normal(loc, jnp.exp(log_scale)), 1),
        npd.Independent(npd.Normal(jnp.zeros_like(loc), jnp.ones_like(loc)), 1),
    )
    np.testing.assert_allclose(diag_normal_kl_standard(loc, log_scale), expected, **tol(dtype))


def test_diag_kl_broadcasts_batch_axes(dtype):
    rng = np.random.default_rng(6)
    shapes = [(4, 1, 3), (3,), (1, 3), (2, 1, 1, 3)]
    args = cast(dtype, *(rng.normal(size=shape) for shape in shapes))
    out = diag_normal_kl(*args)
    full = [np.broadcast_to(a, (2, 4, 1, 3)) for a in args]
    expected = numpyro_kl(
        npd.Independent(npd.Normal(full[0], np.exp(full[1])), 1),
        npd.Independent(npd.Normal(full[2], np.exp(full[3])), 1),
    )
    assert out.shape == (2, 4, 1)
    np.testing.assert_allclose(out, expected, **tol(dtype))


@pytest.mark.slow
def test_diag_kl_analytic_gradients(x64):
    loc_q, log_scale_q, loc_p, log_scale_p = diag_params(7, (5,))
    grads = jax.grad(diag_normal_kl, argnums=(0, 1, 2, 3))(loc_q, log_scale_q, loc_p, log_scale_p)
    var_p = np.exp(2 * log_scale_p)
    ratio = np.exp(2 * (log_scale_q - log_scale_p))
    z2 = (loc_q - loc_p) ** 2 / var_p
    expected = ((loc_q - loc_p) / var_p, ratio - 1, (loc_p - loc_q) / var_p, 1 - ratio - z2)
    for got, want in zip(grads, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


# --- diagonal: precision and limits ---------------------------------------------------------


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_diag_kl_is_accurate_for_nearby_scales(dtype, sign):
    d = sign * np.logspace(-12, 1.3, 60)
    log_scale_q, log_scale_p = cast(dtype, 0.7 + d, np.full_like(d, 0.7))
    # The reference starts from d as rounded to dtype (one IEEE subtraction, exact while
    # |d| < 0.7), so only the kernel's own error is measured.
    d_rounded = (np.asarray(log_scale_q) - np.asarray(log_scale_p)).astype(np.float64)
    expected = np.array([decimal_half_term(x) for x in d_rounded])
    loc = jnp.zeros((60, 1), dtype)
    out = diag_normal_kl(loc, log_scale_q[:, None], loc, log_scale_p[:, None])
    np.testing.assert_allclose(out, expected, rtol=8 * jnp.finfo(dtype).eps, atol=0)


def test_diag_kl_from_scale_is_accurate_for_nearby_scales(dtype):
    rel = np.concatenate([np.logspace(-9, 0.5, 30), -np.logspace(-9, -0.01, 30), [-1 + 1e-12]])
    scale_p = np.full_like(rel, 20.0)
    scale_q, scale_p = cast(dtype, scale_p * (1 + rel), scale_p)
    expected = []
    for sq, sp in zip(
        np.asarray(scale_q, np.float64), np.asarray(scale_p, np.float64), strict=True
    ):
        with localcontext() as ctx:
            ctx.prec = 50
            ratio = Decimal(sq) / Decimal(sp)
            expected.append(float((ratio * ratio - 1 - 2 * ratio.ln()) / 2))
    loc = jnp.zeros((rel.size, 1), dtype)
    out = diag_normal_kl_from_scale(loc, scale_q[:, None], loc, scale_p[:, None])
    np.testing.assert_allclose(out, expected, rtol=12 * jnp.finfo(dtype).eps, atol=0)


@pytest.mark.slow
def test_identical_distributions_give_zero_and_zero_gradient(dtype):
    loc, log_scale, _, _ = cast(dtype, *diag_params(8, (3, 4)))
    value, grads = jax.value_and_grad(lambda *a: jnp.sum(diag_normal_kl(*a)), argnums=(0, 1, 2, 3))(
        loc, log_scale, loc, log_scale
    )
    assert value == 0
    for g in grads:
        assert jnp.all(g == 0)
    assert jnp.all(diag_normal_kl_from_scale(loc, jnp.exp(log_scale), loc, jnp.exp(log_scale)) == 0)
    assert jnp.all(diag_normal_kl_standard(jnp.zeros(4, dtype), jnp.zeros(4, dtype)) == 0)


def test_diag_kl_limits(dtype):
    zero, one = jnp.zeros(2, dtype), jnp.ones(2, dtype)
    # q collapsing to a point (scale 0) or infinitely far away: KL is +inf.
    assert diag_normal_kl(zero, jnp.full(2, -jnp.inf, dtype), zero, zero) == jnp.inf
    assert diag_normal_kl(jnp.array([jnp.inf, 0.0], dtype), zero, zero, zero) == jnp.inf
    assert diag_normal_kl(zero, jnp.full(2, jnp.inf, dtype), zero, zero) == jnp.inf
    assert diag_normal_kl_from_scale(zero, jnp.zeros(2, dtype), zero, one) == jnp.inf
    assert jnp.isnan(diag_normal_kl(jnp.array([jnp.nan, 0.0], dtype), zero, zero, zero))
    # Large but finite ratios stay finite: d = -40 gives (e^-80 - 1 + 80) / 2 per coordinate.
    out = diag_normal_kl(zero, jnp.full(2, -40.0, dtype), zero, zero)
    np.testing.assert_allclose(out, 2 * decimal_half_term(-40.0), rtol=4 * jnp.finfo(dtype).eps)


def test_diag_kernels_on_empty_arrays(dtype):
    empty_batch = jnp.zeros((0, 3), dtype)
    assert diag_normal_kl(*(4 * (empty_batch,))).shape == (0,)
    no_event = jnp.zeros((2, 0), dtype)
    np.testing.assert_array_equal(diag_normal_kl(*(4 * (no_event,))), np.zeros(2))
    np.testing.assert_array_equal(diag_normal_log_prob(no_event, no_event, no_event), np.zeros(2))


# --- diagonal: transformations ------------------------------------------------------------


@pytest.mark.slow
def test_jit_vmap_and_loop_agree(dtype):
    args = cast(dtype, *diag_params(9, (6, 5)))
    eager = gaussian.diag_normal_kl(*args)
    # Fused (jit) and op-by-op (eager) evaluation may round differently, by an ulp or so.
    np.testing.assert_allclose(diag_normal_kl(*args), eager, rtol=4 * jnp.finfo(dtype).eps)
    mapped = jax.vmap(gaussian.diag_normal_kl)(*args)
    looped = jnp.stack([gaussian.diag_normal_kl(*(a[i] for a in args)) for i in range(6)])
    np.testing.assert_allclose(mapped, eager, **tol(dtype))
    np.testing.assert_allclose(looped, eager, **tol(dtype))


def test_no_retrace_on_same_shapes(dtype):
    traces = []

    @jax.jit
    def kl_and_log_prob(loc_q, log_scale_q, loc_p, log_scale_p):
        traces.append(None)
        return gaussian.diag_normal_kl(loc_q, log_scale_q, loc_p, log_scale_p), gaussian.mvn_kl(
            loc_q, jnp.diag(jnp.exp(log_scale_q)), loc_p, jnp.diag(jnp.exp(log_scale_p))
        )

    kl_and_log_prob(*cast(dtype, *diag_params(10, (3,))))
    kl_and_log_prob(*cast(dtype, *diag_params(11, (3,))))
    assert len(traces) == 1


# --- full covariance ------------------------------------------------------------------------


def test_mvn_log_prob_matches_scipy(dtype):
    rng = np.random.default_rng(12)
    loc, scale_tril = rng.normal(size=4), random_tril(rng, (), 4)
    x = rng.normal(size=(3, 5, 4))
    expected = stats.multivariate_normal(loc, scale_tril @ scale_tril.T).logpdf(x)
    out = mvn_log_prob(*cast(dtype, x, loc, scale_tril))
    assert out.shape == (3, 5)
    np.testing.assert_allclose(out, expected, **tol(dtype))


def test_mvn_log_prob_with_batched_factors_matches_scipy(dtype):
    rng = np.random.default_rng(13)
    loc, scale_tril = rng.normal(size=(2, 1, 3)), random_tril(rng, (2, 4), 3)
    x = rng.normal(size=(4, 3))
    out = mvn_log_prob(*cast(dtype, x, loc, scale_tril))
    expected = [
        [
            stats.multivariate_normal(loc[i, 0], scale_tril[i, j] @ scale_tril[i, j].T).logpdf(x[j])
            for j in range(4)
        ]
        for i in range(2)
    ]
    np.testing.assert_allclose(out, expected, **tol(dtype))


def test_mvn_entropy_matches_scipy(dtype):
    rng = np.random.default_rng(14)
    scale_tril = random_tril(rng, (3,), 5)
    expected = [stats.multivariate_normal(np.zeros(5), s @ s.T).entropy() for s in scale_tril]
    np.testing.assert_allclose(mvn_entropy(jnp.asarray(scale_tril, dtype)), expected, **tol(dtype))


@pytest.mark.slow
def test_mvn_kl_matches_numpyro(dtype):
    rng = np.random.default_rng(15)
    loc_q, loc_p = rng.normal(size=(2, 3, 4))
    tril_q, tril_p = random_tril(rng, (3,), 4), random_tril(rng, (), 4)
    args = cast(dtype, loc_q, tril_q, loc_p, tril_p)
    expected = numpyro_kl(
        npd.MultivariateNormal(args[0], scale_tril=args[1]),
        npd.MultivariateNormal(args[2], scale_tril=args[3]),
    )
    out = mvn_kl(*args)
    assert out.shape == (3,)
    np.testing.assert_allclose(out, expected, **tol(dtype))


def test_mvn_kl_matches_textbook_formula(x64):
    rng = np.random.default_rng(16)
    loc_q, loc_p = rng.normal(size=(2, 5))
    tril_q, tril_p = random_tril(rng, (), 5), random_tril(rng, (), 5)
    cov_q, cov_p = tril_q @ tril_q.T, tril_p @ tril_p.T
    prec_p, diff = np.linalg.inv(cov_p), loc_p - loc_q
    expected = 0.5 * (
        np.trace(prec_p @ cov_q)
        + diff @ prec_p @ diff
        - 5
        + np.linalg.slogdet(cov_p)[1]
        - np.linalg.slogdet(cov_q)[1]
    )
    np.testing.assert_allclose(mvn_kl(loc_q, tril_q, loc_p, tril_p), expected, rtol=1e-11)


@pytest.mark.slow
def test_mvn_kl_ignores_upper_triangle_and_sign_of_diagonal(x64):
    rng = np.random.default_rng(17)
    loc_q, loc_p = rng.normal(size=(2, 3))
    tril_q, tril_p = random_tril(rng, (), 3), random_tril(rng, (), 3)
    expected = numpyro_kl(
        npd.MultivariateNormal(loc_q, scale_tril=tril_q),
        npd.MultivariateNormal(loc_p, scale_tril=tril_p),
    )
    noisy_q = tril_q + np.triu(rng.normal(size=(3, 3)), 1)
    flipped_p = tril_p * np.array([1.0, -1.0, 1.0])  # same covariance, a column negated
    np.testing.assert_allclose(mvn_kl(loc_q, noisy_q, loc_p, flipped_p), expected, rtol=1e-12)


def test_mvn_kl_is_accurate_for_nearby_scales(dtype):
    rel = np.concatenate([np.logspace(-9, -1, 5), -np.logspace(-9, -1, 5)])
    diag_p = np.exp(np.linspace(-2.0, 3.0, 10))
    tril_q, tril_p = cast(dtype, np.diag(diag_p * (1 + rel)), np.diag(diag_p))
    expected = 0.0
    pairs = zip(np.diag(np.asarray(tril_q)), np.diag(np.asarray(tril_p)), strict=True)
    with localcontext() as ctx:
        ctx.prec = 50
        for sq, sp in pairs:
            ratio = Decimal(float(sq)) / Decimal(float(sp))
            expected += float((ratio * ratio - 1 - 2 * ratio.ln()) / 2)
    loc = jnp.zeros(10, dtype)
    out = mvn_kl(loc, tril_q, loc, tril_p)
    np.testing.assert_allclose(out, expected, rtol=12 * jnp.finfo(dtype).eps, atol=0)


@pytest.mark.slow
def test_mvn_kl_identical_is_zero_with_zero_gradient(dtype):
    rng = np.random.default_rng(18)
    loc, tril = cast(dtype, rng.normal(size=3), random_tril(rng, (), 3))
    value, grads = jax.value_and_grad(mvn_kl, argnums=(0, 1, 2, 3))(loc, tril, loc, tril)
    # The triangular solve of L by itself is the identity up to rounding.
    np.testing.assert_allclose(value, 0, atol=10 * jnp.finfo(dtype).eps)
    for g in grads:
        np.testing.assert_allclose(g, 0, atol=10 * jnp.finfo(dtype).eps)


@pytest.mark.slow
def test_mvn_kl_jit_and_vmap_agree(dtype):
    rng = np.random.default_rng(19)
    args = cast(dtype, *rng.normal(size=(2, 4, 3)), *(random_tril(rng, (4,), 3) for _ in "qp"))
    loc_q, loc_p, tril_q, tril_p = args
    eager = gaussian.mvn_kl(loc_q, tril_q, loc_p, tril_p)
    np.testing.assert_allclose(mvn_kl(loc_q, tril_q, loc_p, tril_p), eager, **tol(dtype))
    np.testing.assert_allclose(
        jax.vmap(gaussian.mvn_kl)(loc_q, tril_q, loc_p, tril_p), eager, **tol(dtype)
    )


# --- bad input ------------------------------------------------------------------------------


def test_integer_inputs_raise_type_error_naming_the_argument():
    floats = jnp.zeros(3)
    with pytest.raises(TypeError, match="log_scale_p must have a floating dtype, got int32"):
        diag_normal_kl(floats, floats, floats, jnp.zeros(3, jnp.int32))
    with pytest.raises(TypeError, match="scale_tril_q"):
        mvn_kl(floats, jnp.eye(3, dtype=jnp.int32), floats, jnp.eye(3))
    with pytest.raises(TypeError, match=r"^x must"):
        diag_normal_log_prob(jnp.arange(3), floats, floats)


def test_shape_mismatch_raises_value_error_naming_shapes():
    with pytest.raises(ValueError, match=r"loc_q: \(3,\), log_scale_q: \(3,\), loc_p: \(4,\)"):
        diag_normal_kl(jnp.zeros(3), jnp.zeros(3), jnp.zeros(4), jnp.zeros(4))
    with pytest.raises(ValueError, match="event axis"):
        diag_normal_kl_standard(jnp.float32(0.0), jnp.float32(0.0))
    with pytest.raises(
        ValueError, match=r"scale_tril_p must have shape \(\.\.\., 3, 3\), got \(2, 2\)"
    ):
        mvn_kl(jnp.zeros(3), jnp.eye(3), jnp.zeros(3), jnp.eye(2))
    with pytest.raises(ValueError, match=r"scale_tril must have shape"):
        mvn_entropy(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"locs: \(2,\), scale_tril_q: \(3,\)"):
        mvn_kl(jnp.zeros((2, 3)), jnp.zeros((3, 3, 3)), jnp.zeros(3), jnp.eye(3))


def test_bad_input_fails_at_trace_time():
    traced = jax.jit(gaussian.diag_normal_kl)
    with pytest.raises(ValueError, match="do not broadcast"):
        traced(jnp.zeros((2, 3)), jnp.zeros(3), jnp.zeros((4, 3)), jnp.zeros(3))
