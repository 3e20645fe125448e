"""Discrete KL, entropy, cross-entropy and JS kernels against scipy, edge cases and transforms."""

import doctest

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon

from vi.kernels import discrete, validate
from vi.kernels.discrete import (
    cross_entropy,
    entropy,
    js_divergence,
    kl_div,
    kl_divergence,
    rel_entr,
)
from vi.kernels.log_space import entropy_from_logits, kl_divergence_from_logits, kl_divergence_log
from vi.kernels.validate import check_probabilities

STATIC = ("axis", "base", "normalize", "validate")
# Property tests call the kernels through jit (one compilation per shape and flags, instead of
# one dispatch per operation); test_same_values_with_jit_and_vmap checks eager against jit.
kl_jit = jax.jit(kl_divergence, static_argnames=STATIC)
entropy_jit = jax.jit(entropy, static_argnames=STATIC)
cross_entropy_jit = jax.jit(cross_entropy, static_argnames=STATIC)
js_jit = jax.jit(js_divergence, static_argnames=STATIC)

HYPOTHESIS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def rtol(dtype):
    return 1e-12 if dtype == jnp.float64 else 1e-6


def assert_close(actual, expected, dtype, scale=0.0):
    """|actual - expected| <= rtol (|expected| + 1 + scale), with NaN and inf matching exactly.

    A sum of K terms in floating point is exact only to rounding relative to the size of its
    terms, not of its (possibly cancelling) result, and log(p / q) carries an absolute error
    of about one ulp whatever its size; `scale` is the size of those terms (see
    `term_scale`), so the check is "to rounding" without being blind to small results.
    """
    actual = np.asarray(actual, np.float64)
    expected = np.broadcast_to(np.asarray(expected, np.float64), actual.shape)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(
        actual[~finite & ~np.isnan(expected)], expected[~finite & ~np.isnan(expected)]
    )
    tol = rtol(dtype) * (np.abs(expected) + 1 + np.broadcast_to(scale, actual.shape))
    err = np.abs(actual[finite] - expected[finite])
    assert np.all(err <= tol[finite]), (actual, expected, err.max(initial=0))


def term_scale(p, q, axis=-1):
    """Σ |p̂ log p̂| + |p̂ log q̂| + |log Σp| + |log Σq|: the size of the terms the kernels sum."""
    with np.errstate(all="ignore"):
        p_hat = p / p.sum(axis, keepdims=True)
        q_hat = q / q.sum(axis, keepdims=True)
        terms = np.abs(scipy.special.xlogy(p_hat, p_hat)) + np.abs(
            scipy.special.xlogy(p_hat, q_hat)
        )
        scale = terms.sum(axis) + np.abs(np.log(p.sum(axis))) + np.abs(np.log(q.sum(axis)))
    return np.nan_to_num(scale, nan=0.0, posinf=0.0)


def as_inputs(dtype, *arrays):
    """The arrays in `dtype`, and the same rounded values in float64 for the scipy reference."""
    arrays = tuple(np.asarray(a, np.dtype(dtype)) for a in arrays)
    return arrays, tuple(a.astype(np.float64) for a in arrays)


def scipy_js(p, q, axis=-1):
    """scipy's jensenshannon before its square root (which turns a rounding error of -1e-17 for
    p == q into NaN): normalise, m = (p + q) / 2, half the sum of rel_entr(p, m) + rel_entr(q, m)."""
    with np.errstate(all="ignore"):
        p = np.asarray(p) / np.sum(p, axis=axis, keepdims=True)
        q = np.asarray(q) / np.sum(q, axis=axis, keepdims=True)
        m = (p + q) / 2
        return (scipy.special.rel_entr(p, m) + scipy.special.rel_entr(q, m)).sum(axis) / 2


def scipy_kl(p, q, axis=-1, base=None):
    with np.errstate(all="ignore"):
        return scipy.stats.entropy(p, q, axis=axis, base=base)


def scipy_entropy(p, axis=-1, base=None):
    with np.errstate(all="ignore"):
        return scipy.stats.entropy(p, axis=axis, base=base)


# --- reference values ------------------------------------------------------------------------


@pytest.mark.slow
def test_kl_divergence_known_example(dtype):
    p, q = jnp.array([0.6, 0.3, 0.1], dtype), jnp.array([0.5, 0.4, 0.1], dtype)
    expected = scipy_kl([0.6, 0.3, 0.1], [0.5, 0.4, 0.1])
    np.testing.assert_allclose(expected, 0.023088312340838, rtol=1e-13)
    assert_close(
        kl_divergence(p, q), expected, dtype, scale=term_scale(np.asarray(p), np.asarray(q))
    )
    assert kl_divergence(p, q).dtype == dtype


probabilities = st.one_of(st.just(0.0), st.floats(1e-4, 10.0))


def prob_arrays(shape):
    return hnp.arrays(np.float64, shape, elements=probabilities)


pairs = st.sampled_from([(1,), (4,), (3, 5), (2, 1, 3)]).flatmap(
    lambda shape: st.tuples(
        prob_arrays(shape), prob_arrays(shape), st.integers(-len(shape), len(shape) - 1)
    )
)


@HYPOTHESIS
@given(pair=pairs, normalize=st.booleans())
@pytest.mark.slow
def test_kl_divergence_matches_scipy(dtype, pair, normalize):
    (p, q), (p64, q64) = as_inputs(dtype, pair[0], pair[1])
    axis = pair[2]
    if normalize:
        expected = scipy_kl(p64, q64, axis=axis)
    else:
        expected = scipy.special.rel_entr(p64, q64).sum(axis)
    scale = (
        term_scale(p64, q64, axis)
        if normalize
        else np.abs(scipy.special.rel_entr(p64, q64)).sum(axis)
    )
    assert_close(kl_jit(p, q, axis=axis, normalize=normalize), expected, dtype, scale)


@HYPOTHESIS
@given(pair=pairs, normalize=st.booleans())
@pytest.mark.slow
def test_entropy_and_cross_entropy_match_scipy(dtype, pair, normalize):
    (p, q), (p64, q64) = as_inputs(dtype, pair[0], pair[1])
    axis = pair[2]
    if normalize:
        h = scipy_entropy(p64, axis=axis)
        ce = h + scipy_kl(p64, q64, axis=axis)
    else:
        h = scipy.special.entr(p64).sum(axis)
        ce = -scipy.special.xlogy(p64, q64).sum(axis)
    scale = (
        term_scale(p64, q64, axis) if normalize else np.abs(scipy.special.xlogy(p64, q64)).sum(axis)
    )
    scale = scale + np.abs(scipy.special.entr(p64)).sum(axis)
    assert_close(entropy_jit(p, axis=axis, normalize=normalize), h, dtype, scale)
    assert_close(cross_entropy_jit(p, q, axis=axis, normalize=normalize), ce, dtype, scale)


@HYPOTHESIS
@given(pair=pairs, normalize=st.booleans())
@pytest.mark.slow
def test_js_divergence_matches_scipy(dtype, pair, normalize):
    (p, q), (p64, q64) = as_inputs(dtype, pair[0], pair[1])
    axis = pair[2]
    if normalize:
        expected = scipy_js(p64, q64, axis=axis)
    else:
        m = (p64 + q64) / 2
        expected = (scipy.special.rel_entr(p64, m) + scipy.special.rel_entr(q64, m)).sum(axis) / 2
    scale = term_scale(p64, q64, axis) + (0 if normalize else np.sum(p64 + q64, axis) * 4)
    assert_close(js_jit(p, q, axis=axis, normalize=normalize), expected, dtype, scale)


@HYPOTHESIS
@given(pair=pairs)
@pytest.mark.slow
def test_elementwise_terms_match_scipy(dtype, pair):
    (p, q), (p64, q64) = as_inputs(dtype, pair[0], pair[1])
    scale = np.abs(p64 * np.log(np.where(p64 > 0, p64, 1))) + np.abs(
        p64 * np.log(np.where(q64 > 0, q64, 1))
    )
    assert_close(jax.jit(rel_entr)(p, q), scipy.special.rel_entr(p64, q64), dtype, scale)
    assert_close(jax.jit(kl_div)(p, q), scipy.special.kl_div(p64, q64), dtype, scale + p64 + q64)


@pytest.mark.parametrize("base", [2, 10, np.e, 0.5])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.slow
def test_base_and_axis_match_scipy(x64, base, axis):
    rng = np.random.default_rng(1)
    p, q = rng.gamma(1.0, size=(2, 4, 3)), rng.gamma(1.0, size=(2, 4, 3))
    scale = term_scale(p, q, axis) + 1
    dtype = jnp.float64
    assert_close(
        kl_divergence(p, q, axis=axis, base=base), scipy_kl(p, q, axis, base), dtype, scale
    )
    assert_close(entropy(p, axis=axis, base=base), scipy_entropy(p, axis, base), dtype, scale)
    # scipy's distance is the square root, NaN for base < 1 where the divergence is negative
    js = jensenshannon(p, q, axis=axis) ** 2 / np.log(base)
    assert_close(js_divergence(p, q, axis=axis, base=base), js, dtype, scale)


@pytest.mark.slow
def test_broadcasting_matches_scipy(x64):
    rng = np.random.default_rng(2)
    p, q = rng.gamma(1.0, size=(3, 1, 5)), rng.gamma(1.0, size=(4, 5))
    out = kl_divergence(p, q)
    assert out.shape == (3, 4)
    assert_close(out, scipy_kl(p, q), jnp.float64, term_scale(*np.broadcast_arrays(p, q)))
    p1 = rng.gamma(1.0, size=(2, 1))  # broadcast along the distribution axis, then normalised
    assert_close(kl_divergence(p1, q[:2]), scipy_kl(p1, q[:2]), jnp.float64, 10)


@pytest.mark.parametrize("k", [16, 600, 1024, 16392])
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.slow
def test_long_distributions_match_scipy(dtype, k, axis):
    # K = 16 and 1024 take float32's one-pass sums (vi.backend._one_pass), 600 and 16392 do
    # not; float64 takes them for 16392 only. With zeros in p and q, and a distribution
    # with a negative entry in q.
    rng = np.random.default_rng(k)
    p, q = rng.gamma(0.5, size=(2, 3, k)), rng.gamma(0.5, size=(2, 3, k))
    p[..., ::7], q[..., ::11] = 0.0, 0.0
    q[1, 2, 5] = -1.0
    p, q = np.moveaxis(p, -1, axis), np.moveaxis(q, -1, axis)
    (p, q), (p64, q64) = as_inputs(dtype, p, q)
    invalid = np.min(q64, axis) < 0
    scale = term_scale(p64, q64, axis)
    expected = np.where(invalid, np.nan, scipy_kl(p64, q64, axis=axis))
    assert_close(kl_jit(p, q, axis=axis), expected, dtype, scale)
    h = scipy_entropy(p64, axis=axis)
    assert_close(entropy_jit(p, axis=axis), h, dtype, scale)
    assert_close(
        cross_entropy_jit(p, q, axis=axis), np.where(invalid, np.nan, h + expected), dtype, scale
    )


def test_mixed_precision_promotes(x64):
    out = kl_divergence(jnp.array([0.6, 0.4], jnp.float32), jnp.array([0.5, 0.5], jnp.float64))
    assert out.dtype == jnp.float64


# --- edge cases on purpose ----------------------------------------------------------------


EDGE_P = np.array([0.0, 0.0, 0.5, 0.0, np.nan, 0.3, np.inf, 1.0, 0.0, 0.2])
EDGE_Q = np.array([0.0, 0.4, 0.0, np.nan, 0.1, np.inf, np.inf, 1.0, np.inf, 0.2])


@pytest.mark.slow
def test_rel_entr_edge_cases_match_scipy(dtype):
    # 0 log(0/0) = 0, 0 log(0/q) = 0, p log(p/0) = inf, NaN -> NaN, p log(p/inf) = -inf, ...
    p, q = jnp.asarray(EDGE_P, dtype), jnp.asarray(EDGE_Q, dtype)
    np.testing.assert_array_equal(
        rel_entr(p, q), scipy.special.rel_entr(EDGE_P, EDGE_Q).astype(dtype)
    )
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(
            kl_div(p, q), scipy.special.kl_div(EDGE_P, EDGE_Q).astype(dtype)
        )


@pytest.mark.slow
def test_negative_entries_give_nan_where_scipy_gives_inf(dtype):
    p = jnp.array([-0.1, 0.5, 0.0, -0.2], dtype)
    q = jnp.array([0.5, -0.1, -0.3, -0.4], dtype)
    assert np.all(np.isinf(scipy.special.rel_entr(np.asarray(p), np.asarray(q))))
    assert np.all(np.isnan(rel_entr(p, q)))
    assert np.all(np.isnan(kl_div(p, q)))
    good = jnp.array([0.5, 0.5], dtype)
    bad = jnp.array([[-0.5, 1.5], [0.5, -0.5], [-0.5, -0.5]], dtype)
    for normalize in (True, False):
        assert np.all(np.isnan(kl_jit(bad, good, normalize=normalize)))
        assert np.all(np.isnan(kl_jit(good, bad, normalize=normalize)))
        assert np.all(np.isnan(entropy_jit(bad, normalize=normalize)))
        assert np.all(np.isnan(cross_entropy_jit(bad, good, normalize=normalize)))
        assert np.all(np.isnan(cross_entropy_jit(good, bad, normalize=normalize)))
        assert np.all(np.isnan(js_jit(bad, good, normalize=normalize)))
        assert np.all(np.isnan(js_jit(good, bad, normalize=normalize)))


@pytest.mark.slow
def test_distribution_edge_cases_match_scipy(dtype):
    rows_p = np.array(
        [
            [0.0, 0.5, 0.5],
            [0.5, 0.5, 0.0],
            [0.0, 0.0, 0.0],
            [0.2, 0.8, 0.0],
            [np.nan, 1, 1],
            [np.inf, 1, 1],
            [1, 1, 0],
        ]
    )
    rows_q = np.array(
        [
            [0.0, 0.5, 0.5],
            [0.5, 0.0, 0.5],
            [0.2, 0.3, 0.5],
            [0.0, 0.0, 0.0],
            [1, 1, 1],
            [1, 1, 1],
            [1, 1, np.inf],
        ]
    )
    p, q = jnp.asarray(rows_p, dtype), jnp.asarray(rows_q, dtype)
    scale = term_scale(rows_p, rows_q)
    assert_close(kl_jit(p, q), scipy_kl(rows_p, rows_q), dtype, scale)
    assert_close(entropy_jit(p), scipy_entropy(rows_p), dtype, scale)
    ce = scipy_entropy(rows_p) + scipy_kl(rows_p, rows_q)
    assert_close(cross_entropy_jit(p, q), ce, dtype, scale)
    assert_close(js_jit(p, q), scipy_js(rows_p, rows_q), dtype, scale)
    with np.errstate(all="ignore"):
        unnormalised = scipy.special.rel_entr(rows_p, rows_q).sum(-1)
    # documented deviation outside float32's one-pass path: an infinite q where p == 0 gives NaN
    # there, 0 in scipy's rel_entr
    deviation = kl_jit(p[-1], q[-1], normalize=False)
    assert unnormalised[-1] == 0
    assert deviation == 0 if dtype == jnp.float32 else np.isnan(deviation)
    assert_close(kl_jit(p[:-1], q[:-1], normalize=False), unnormalised[:-1], dtype, 1)


def test_disjoint_supports(dtype):
    p, q = jnp.array([1.0, 0.0], dtype), jnp.array([0.0, 1.0], dtype)
    assert kl_jit(p, q) == jnp.inf
    assert cross_entropy_jit(p, q) == jnp.inf
    assert_close(js_jit(p, q), jensenshannon([1.0, 0.0], [0.0, 1.0]) ** 2, dtype)
    np.testing.assert_allclose(js_jit(p, q, base=2), 1.0, rtol=rtol(dtype))


@pytest.mark.slow
def test_empty_distributions_give_zero_like_scipy(dtype):
    empty = jnp.zeros((3, 0), dtype)
    np.testing.assert_array_equal(scipy_kl(np.zeros((3, 0)), np.zeros((3, 0))), np.zeros(3))
    np.testing.assert_array_equal(scipy_entropy(np.zeros((3, 0))), np.zeros(3))
    np.testing.assert_array_equal(jensenshannon(np.zeros((3, 0)), np.zeros((3, 0)), axis=-1), 0)
    for out in (
        kl_divergence(empty, empty),
        kl_divergence(empty, empty, normalize=False),
        entropy(empty),
        cross_entropy(empty, empty),
        js_divergence(empty, empty),
        kl_divergence_log(empty, empty),
        kl_divergence_from_logits(empty, empty),
        entropy_from_logits(empty),
    ):
        assert out.shape == (3,) and out.dtype == dtype
        np.testing.assert_array_equal(out, 0)
    assert kl_divergence(jnp.zeros((0, 4), dtype), jnp.zeros((0, 4), dtype)).shape == (0,)


# --- gradients ------------------------------------------------------------------------------


def central_difference(fn, x, direction, h=1e-6):
    return (fn(x + h * direction) - fn(x - h * direction)) / (2 * h)


@pytest.mark.slow
def test_gradients_are_finite_at_zeros(x64):
    p = jnp.array([[0.0, 0.3, 0.7], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    q = jnp.array([[0.2, 0.3, 0.5], [0.0, 0.4, 0.6], [0.5, 0.4, 0.1]])
    for fn in (
        lambda p, q: kl_divergence(p, q),
        lambda p, q: kl_divergence(p, q, normalize=False),
        lambda p, q: cross_entropy(p, q),
        lambda p, q: js_divergence(p, q),
        lambda p, q: entropy(p) + entropy(q),
        lambda p, q: rel_entr(p, q),
    ):
        grad_p, grad_q = jax.jit(jax.grad(lambda p, q, fn=fn: fn(p, q).sum(), argnums=(0, 1)))(p, q)
        assert np.all(np.isfinite(grad_p)) and np.all(np.isfinite(grad_q))
    # JS with both zero in a slot, where m = 0 too
    grads = jax.grad(lambda p, q: js_divergence(p, q), argnums=(0, 1))(
        jnp.array([0.0, 1.0]), jnp.array([0.0, 1.0])
    )
    assert all(np.all(np.isfinite(g)) for g in grads)


@pytest.mark.slow
def test_kl_gradient_in_q_where_p_is_zero_is_analytic(x64):
    # d/dq_i KL(p/Sp ‖ q/Sq) = -p_i / (Sp q_i) + 1/Sq, which is 1/Sq where p_i = 0 (also q_i = 0)
    p = jnp.array([0.0, 0.0, 2.0, 1.0])
    q = jnp.array([0.0, 0.5, 1.5, 1.0])
    grad_q = jax.grad(lambda q: kl_divergence(p, q))(q)
    s_p, s_q = 3.0, 3.0
    expected = np.array([1 / s_q, 1 / s_q, -2.0 / (s_p * 1.5) + 1 / s_q, -1.0 / s_p + 1 / s_q])
    np.testing.assert_allclose(grad_q, expected, rtol=1e-12)


@pytest.mark.parametrize(
    "name, fn, reference",
    [
        ("kl", lambda p, q: kl_divergence(p, q), lambda p, q: scipy_kl(p, q)),
        ("entropy", lambda p, q: entropy(p), lambda p, q: scipy_entropy(p)),
        ("cross", lambda p, q: cross_entropy(p, q), lambda p, q: scipy_entropy(p) + scipy_kl(p, q)),
        ("js", lambda p, q: js_divergence(p, q), lambda p, q: scipy_js(p, q)),
        (
            "kl_unnorm",
            lambda p, q: kl_divergence(p, q, normalize=False),
            lambda p, q: scipy.special.rel_entr(p, q).sum(),
        ),
    ],
)
@pytest.mark.slow
def test_directional_derivatives_match_scipy_finite_differences(x64, name, fn, reference):
    # Directions that keep the zero entries of p at zero, where scipy's value is differentiable.
    rng = np.random.default_rng(3)
    p = np.array([0.0, 0.2, 0.5, 0.3, 0.0])
    q = np.array([0.1, 0.3, 0.2, 0.4, 0.0])
    for _ in range(3):
        dp = rng.normal(size=5) * (p > 0)
        dq = rng.normal(size=5) * (q > 0)
        _, jvp = jax.jit(lambda *a: jax.jvp(fn, a[:2], a[2:]))(p, q, dp, dq)
        grad_p, grad_q = jax.jit(jax.grad(fn, argnums=(0, 1)))(p, q)
        fd = central_difference(lambda t, dp=dp, dq=dq: reference(p + t * dp, q + t * dq), 0.0, 1.0)
        np.testing.assert_allclose(jvp, fd, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(grad_p @ dp + grad_q @ dq, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("k", [4, 1024])
@pytest.mark.slow
def test_float32_one_pass_gradients_match_float64(x64, k):
    # In float32, KL and the normalised entropy and cross-entropy sum in one pass
    # (vi.backend._one_pass), float64 does not; their derivatives must agree, with zeros in p
    # alone and in both p and q (finite KLs).
    rng = np.random.default_rng(k)
    p, q = rng.gamma(1.0, size=(3, k)), rng.gamma(1.0, size=(3, k))
    p[:, ::3], q[:, ::6] = 0.0, 0.0
    dp, dq = rng.normal(size=(3, k)), rng.normal(size=(3, k))

    def total(p, q):
        unnormalised = kl_divergence(p, q, normalize=False)
        return jnp.sum(kl_divergence(p, q) + unnormalised + entropy(p) + cross_entropy(p, q))

    fn = jax.jit(jax.value_and_grad(total, argnums=(0, 1)))
    jvp = jax.jit(lambda *a: jax.jvp(lambda p, q: kl_divergence(p, q), a[:2], a[2:])[1])
    (v32, g32), (v64, g64) = fn(*cast32(p, q)), fn(p, q)
    np.testing.assert_allclose(v32, v64, rtol=1e-5)
    for a, b in zip(g32, g64, strict=True):
        assert a.dtype == jnp.float32
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(jvp(*cast32(p, q, dp, dq)), jvp(p, q, dp, dq), rtol=2e-4, atol=1e-5)
    p0, q0 = cast32([0.0, 0.4, 0.6], [0.0, 0.5, 0.5])
    assert np.all(np.isfinite(jax.jit(jax.hessian(lambda q: kl_divergence(p0, q)))(q0)))


def test_float64_one_pass_gradients_match_the_formula(x64):
    # Long float64 rows sum in one pass (vi.backend._one_pass); its derivatives must be
    # those of the plain formula, on positive inputs where that formula is exact.
    rng = np.random.default_rng(1)
    p, q = (
        jnp.asarray(rng.gamma(1.0, size=(2, 16392))),
        jnp.asarray(rng.gamma(1.0, size=(2, 16392))),
    )

    assert " reduce[" in str(jax.make_jaxpr(kl_divergence)(p, q))  # the one-pass reduce

    def plain(p, q):
        p, q = p / jnp.sum(p, -1, keepdims=True), q / jnp.sum(q, -1, keepdims=True)
        kl = jnp.sum(p * jnp.log(p / q), -1)
        return jnp.sum(kl - jnp.sum(p * jnp.log(q), -1) + jnp.sum(p * jnp.log(p), -1))

    def total(p, q):
        return jnp.sum(kl_divergence(p, q) + cross_entropy(p, q) - entropy(p))

    (value, grads), (want, want_grads) = (
        jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(p, q) for f in (total, plain)
    )
    np.testing.assert_allclose(value, want, rtol=1e-10)
    for a, b in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-15)


def cast32(*arrays):
    return tuple(jnp.asarray(a, jnp.float32) for a in arrays)


def test_second_derivatives_are_finite(x64):
    p = jnp.array([0.0, 0.4, 0.6])
    q = jnp.array([0.0, 0.5, 0.5])
    hess = jax.jit(jax.hessian(lambda q: kl_divergence(p, q)))(q)
    assert np.all(np.isfinite(hess))


@pytest.mark.slow
def test_log_space_gradients_are_finite_with_masked_outcomes(x64):
    # -inf logits mark outcomes of probability 0, in p alone, in q where p is 0, or in both
    logits_p = jnp.array([[0.0, -jnp.inf, 1.0, -jnp.inf], [0.0, 2.0, -jnp.inf, -jnp.inf]])
    logits_q = jnp.array([[0.3, -jnp.inf, 1.0, 0.0], [1.0, 0.5, -jnp.inf, 0.0]])
    for fn in (kl_divergence_from_logits, lambda a, b: kl_divergence_log(a, b)):
        value, grads = jax.value_and_grad(lambda a, b, fn=fn: fn(a, b).sum(), argnums=(0, 1))(
            logits_p, logits_q
        )
        assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads)
    assert np.all(np.isfinite(jax.grad(lambda a: entropy_from_logits(a).sum())(logits_p)))


# --- log-space forms --------------------------------------------------------------------------


@HYPOTHESIS
@given(
    logits=hnp.arrays(np.float64, (3, 6), elements=st.one_of(st.just(-np.inf), st.floats(-30, 30))),
    shift=st.floats(-500, 0),
)
@pytest.mark.slow
def test_from_logits_matches_scipy(dtype, logits, shift):
    logits_p, logits_q = logits[:, :3] + shift, logits[:, 3:]
    (lp, lq), (lp64, lq64) = as_inputs(dtype, logits_p, logits_q)
    with np.errstate(all="ignore"):
        p64, q64 = scipy.special.softmax(lp64, axis=-1), scipy.special.softmax(lq64, axis=-1)
        log_p64 = scipy.special.log_softmax(lp64, axis=-1)
        log_q64 = scipy.special.log_softmax(lq64, axis=-1)
    scale = np.nansum(np.abs(p64 * np.where(np.isfinite(log_p64), log_p64, 0)), -1)
    scale = scale + np.nansum(np.abs(p64 * np.where(np.isfinite(log_q64), log_q64, 0)), -1)
    # log_softmax is exact to rounding relative to the logits themselves
    scale = scale + np.abs(np.where(np.isfinite(logits), logits, 0)).max(-1) + abs(shift)
    assert_close(jax.jit(kl_divergence_from_logits)(lp, lq), scipy_kl(p64, q64), dtype, scale)
    assert_close(jax.jit(entropy_from_logits)(lp), scipy_entropy(p64), dtype, scale)


@pytest.mark.slow
def test_kl_divergence_log_matches_scipy_without_underflow(dtype):
    # exp(-200) underflows in float32 but not in float64, where scipy's reference is computed.
    log_p = np.array(
        [[np.log(0.6), np.log(0.4) - 200, -np.inf], [np.log(0.5), np.log(0.5), -np.inf]]
    )
    log_q = np.array([[-120.0, np.log(0.5), -np.inf], [-np.inf, 0.0, 0.0]])
    with np.errstate(all="ignore"):
        expected = scipy.special.rel_entr(np.exp(log_p), np.exp(log_q)).sum(-1)
    out = kl_divergence_log(jnp.asarray(log_p, dtype), jnp.asarray(log_q, dtype))
    assert_close(out, expected, dtype, 200)
    assert out[1] == jnp.inf
    nan_out = kl_divergence_log(jnp.array([-jnp.inf, 0.0], dtype), jnp.array([jnp.nan, 0.0], dtype))
    assert np.isnan(nan_out)


@pytest.mark.slow
def test_kl_divergence_from_logits_is_shift_invariant(dtype):
    logits_p = jnp.array([1000.0, 999.0, 998.0], dtype)
    logits_q = jnp.array([-1000.0, -1001.0, -1000.0], dtype)
    p = scipy.special.softmax(np.asarray(logits_p, np.float64))
    q = scipy.special.softmax(np.asarray(logits_q, np.float64))
    assert_close(kl_divergence_from_logits(logits_p, logits_q), scipy_kl(p, q), dtype, 2000)


# --- transforms: jit, vmap, retracing --------------------------------------------------------

ALL_PAIRWISE = {
    "kl": kl_divergence,
    "kl_unnorm": lambda p, q: kl_divergence(p, q, normalize=False),
    "cross_entropy": cross_entropy,
    "js": js_divergence,
    "entropy": lambda p, q: entropy(p),
    "kl_log": lambda p, q: kl_divergence_log(jnp.log(p), jnp.log(q)),
    "kl_logits": lambda p, q: kl_divergence_from_logits(jnp.log(p), jnp.log(q)),
    "entropy_logits": lambda p, q: entropy_from_logits(jnp.log(p)),
}


@pytest.mark.parametrize("name", sorted(ALL_PAIRWISE))
@pytest.mark.slow
def test_same_values_with_jit_and_vmap(dtype, name):
    fn = ALL_PAIRWISE[name]
    rng = np.random.default_rng(4)
    p = rng.gamma(1.0, size=(4, 6)) * (rng.random((4, 6)) > 0.2)
    q = rng.gamma(1.0, size=(4, 6))
    p, q = jnp.asarray(p, dtype), jnp.asarray(q, dtype)
    eager = fn(p, q)
    loop = jnp.stack([fn(p[i], q[i]) for i in range(4)])
    tol = dict(rtol=4 * rtol(dtype), atol=4 * rtol(dtype))
    np.testing.assert_allclose(jax.jit(fn)(p, q), eager, **tol)
    np.testing.assert_allclose(jax.vmap(fn)(p, q), loop, **tol)
    np.testing.assert_allclose(loop, eager, **tol)
    assert eager.dtype == dtype


def test_compiled_once_for_the_same_shapes(dtype):
    traces = []

    @jax.jit
    def kl(p, q):
        traces.append(p.shape)
        return kl_divergence(p, q) + entropy(p) + js_divergence(p, q)

    rng = np.random.default_rng(5)
    for _ in range(3):
        kl(jnp.asarray(rng.random((2, 3)), dtype), jnp.asarray(rng.random((2, 3)), dtype))
    assert len(traces) == 1
    jitted = jax.jit(kl_divergence, static_argnames=("axis", "base", "normalize"))
    jitted(jnp.ones((2, 7), dtype), jnp.ones((2, 7), dtype))
    size = jitted._cache_size()
    jitted(jnp.full((2, 7), 0.5, dtype), jnp.ones((2, 7), dtype))
    assert jitted._cache_size() == size


# --- bad input ------------------------------------------------------------------------------


def test_shapes_that_do_not_broadcast_raise():
    with pytest.raises(
        ValueError, match=r"p has shape \(3, 4\) and q has shape \(5,\): they do not broadcast"
    ):
        kl_divergence(jnp.ones((3, 4)), jnp.ones(5))
    with pytest.raises(ValueError, match="logits_p has shape"):
        jax.jit(kl_divergence_from_logits)(jnp.ones((3, 4)), jnp.ones((2, 4)))


def test_axis_out_of_range_raises():
    with pytest.raises(ValueError, match=r"axis 2 is out of range for p and q of shape \(3, 4\)"):
        kl_divergence(jnp.ones((3, 4)), jnp.ones((3, 4)), axis=2)
    with pytest.raises(ValueError, match="axis -2 is out of range for p of shape"):
        entropy(jnp.ones(4), axis=-2)
    with pytest.raises(ValueError, match="out of range"):
        entropy(jnp.array(1.0))
    with pytest.raises(TypeError, match="axis must be an int"):
        entropy(jnp.ones(4), axis=(0,))


@pytest.mark.parametrize(
    "bad", [np.array([1, 2, 3]), np.array([True, False, True]), np.array([1j, 1, 1])]
)
def test_non_float_dtypes_raise(bad):
    with pytest.raises(TypeError, match=f"p must have a real floating dtype, got {bad.dtype.kind}"):
        kl_divergence(bad, jnp.ones(3))
    with pytest.raises(TypeError, match="q must have a real floating dtype"):
        cross_entropy(jnp.ones(3), bad)
    with pytest.raises(TypeError, match="logits must have a real floating dtype"):
        entropy_from_logits(bad)
    with pytest.raises(TypeError, match="p must have a real floating dtype"):
        rel_entr(bad, jnp.ones(3))
    with pytest.raises(TypeError, match="must be a real floating-point array"):
        entropy(np.array([object(), object()]))


def test_integer_counts_error_suggests_a_cast():
    with pytest.raises(TypeError, match=r"cast counts with \.astype\(float\)"):
        entropy(np.array([3, 1, 0]))


@pytest.mark.parametrize("base", [0, -2, 1])
def test_bad_base_raises(base):
    with pytest.raises(ValueError, match="base must be a positive number other than 1"):
        kl_divergence(jnp.ones(3), jnp.ones(3), base=base)


@pytest.mark.parametrize("base", ["2", True, [2]])
def test_a_base_that_is_not_a_number_is_named(base):
    with pytest.raises(TypeError, match=r"base must be a number \(e\.g\. 2 for bits\) or None"):
        kl_divergence(jnp.ones(3), jnp.ones(3), base=base)


# --- eager validation -------------------------------------------------------------------------


def test_check_probabilities_names_the_first_offending_entry():
    p = np.full((4, 6), 0.1)
    p[2, 5], p[3, 0] = -0.1, -0.2
    with pytest.raises(ValueError, match=r"^p\[2, 5\] = -0.1 is negative$"):
        check_probabilities(p)
    with pytest.raises(ValueError, match=r"^logits\[1\] = nan is not finite$"):
        check_probabilities(np.array([0.5, np.nan]), name="logits")
    with pytest.raises(ValueError, match=r"q\[0\] = inf is not finite"):
        check_probabilities(np.array([np.inf, 0.5]), name="q")
    with pytest.raises(ValueError, match=r"^p\[1, :\] sums to 0.9, not 1$"):
        check_probabilities(np.array([[0.5, 0.5], [0.45, 0.45]]), sums_to_one=True)
    with pytest.raises(ValueError, match=r"^p\[:, 1\] sums to 1.1, not 1$"):
        check_probabilities(np.array([[0.5, 0.6], [0.5, 0.5]]), axis=0, sums_to_one=True)
    check_probabilities(np.array([[0.5, 0.5], [1.0, 0.0]]), sums_to_one=True)


@pytest.mark.slow
def test_validate_keyword_raises_eagerly_and_refuses_tracers():
    good = jnp.array([[0.5, 0.5], [0.2, 0.8]])
    bad = jnp.array([[0.5, 0.5], [0.2, -0.8]])
    with pytest.raises(ValueError, match=r"q\[1, 1\] = -0.8"):
        kl_divergence(good, bad, validate=True)
    with pytest.raises(ValueError, match=r"p\[1, :\] sums to 0 and cannot be normalised"):
        entropy(jnp.array([[0.5, 0.5], [0.0, 0.0]]), validate=True)
    entropy(jnp.array([[0.5, 0.5], [0.0, 0.0]]), validate=True, normalize=False)
    for fn in (kl_divergence, cross_entropy, js_divergence):
        with pytest.raises(ValueError, match="is negative"):
            fn(bad, good, validate=True)
    with pytest.raises(TypeError, match=r"cannot validate p inside jax\.jit"):
        jax.jit(lambda p: entropy(p, validate=True))(good)
    # without validate the same inputs follow the documented NaN semantics
    assert np.isnan(kl_divergence(good, bad)[1]) and np.isfinite(kl_divergence(good, bad)[0])


def test_docstring_examples_run():
    for module in (discrete, validate):
        result = doctest.testmod(module, extraglobs={"jnp": jnp}, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0
