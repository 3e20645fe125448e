"""Gaussian mixture targets against scipy, grid integration and exact-sample Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from vi.targets.mixture import (
    bimodal_2d,
    diagonal_covariances,
    gaussian_mixture,
    mixture_10d,
    unequal_bimodal_2d,
)


def random_mixture_args(seed, num_components=3, dim=3):
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(num_components))
    means = rng.normal(scale=3.0, size=(num_components, dim))
    factors = rng.normal(size=(num_components, dim, dim))
    covariances = factors @ np.swapaxes(factors, -1, -2) + 0.5 * np.eye(dim)
    return weights, means, covariances


def scipy_logpdf(weights, means, covariances, x):
    log_components = [
        np.log(w) + stats.multivariate_normal(m, c).logpdf(x)
        for w, m, c in zip(weights, means, covariances, strict=True)
    ]
    return special.logsumexp(np.stack(log_components), axis=0)


def concrete_args(target):
    """The mixture's (weights, means, covariances), read back from its Truth and sampler."""
    _, means, chol = target.sample_fn.args
    chol = np.asarray(chol, np.float64)
    return (
        np.asarray(target.truth.mode_weights, np.float64),
        np.asarray(means, np.float64),
        chol @ np.swapaxes(chol, -1, -2),
    )


def builders():
    return {
        "random_full": lambda: gaussian_mixture(*random_mixture_args(0)),
        "bimodal_2d": lambda: bimodal_2d(separation=5.0, scale=0.8),
        "unequal_bimodal_2d": lambda: unequal_bimodal_2d(0.7, 4.0, 1.2, 0.4),
        "mixture_10d": lambda: mixture_10d(4, separation=6.0, scale=1.5),
    }


@pytest.mark.parametrize("name", list(builders()))
@pytest.mark.heavy
def test_logdensity_matches_scipy(name, dtype):
    target = builders()[name]()
    assert target.init_position.dtype == dtype
    weights, means, covariances = concrete_args(target)
    rng = np.random.default_rng(1)
    x = rng.normal(scale=4.0, size=(50, target.dim))
    expected = scipy_logpdf(weights, means, covariances, x)
    got = jax.vmap(target.logdensity_fn)(jnp.asarray(x, dtype))
    tol = 1e-4 if dtype == jnp.float32 else 1e-10
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


@pytest.mark.heavy
def test_random_full_covariance_is_stored_exactly(x64):
    weights, means, covariances = random_mixture_args(0)
    target = gaussian_mixture(weights, means, covariances)
    _, _, got = concrete_args(target)
    np.testing.assert_allclose(got, covariances, rtol=1e-12)
    x = np.random.default_rng(2).normal(size=(20, 3))
    expected = scipy_logpdf(weights, means, covariances, x)
    np.testing.assert_allclose(jax.vmap(target.logdensity_fn)(jnp.asarray(x)), expected, rtol=1e-10)


@pytest.mark.slow
def test_truth_is_law_of_total_variance(x64):
    weights, means, covariances = random_mixture_args(3, num_components=4, dim=2)
    truth = gaussian_mixture(weights, means, covariances).truth
    mean = np.einsum("k,kd->d", weights, means)
    second = np.einsum("k,kd->d", weights, np.diagonal(covariances, axis1=1, axis2=2) + means**2)
    np.testing.assert_allclose(truth.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(truth.variance, second - mean**2, rtol=1e-10)
    np.testing.assert_allclose(truth.modes, means)
    np.testing.assert_allclose(truth.mode_weights, weights / weights.sum())
    assert truth.log_normalizer == 0


def test_bimodal_truth_closed_form(x64):
    truth = bimodal_2d(separation=6.0, scale=0.5).truth
    np.testing.assert_allclose(truth.variance, [0.25 + 9.0, 0.25])
    np.testing.assert_allclose(truth.modes, [[-3.0, 0.0], [3.0, 0.0]])


@pytest.mark.parametrize(
    "target_fn",
    [
        lambda: bimodal_2d(separation=5.0, scale=0.8),
        lambda: unequal_bimodal_2d(0.7, 4.0, 1.2, 0.4),
    ],
    ids=["bimodal_2d", "unequal_bimodal_2d"],
)
@pytest.mark.heavy
def test_two_dimensional_density_integrates_to_one(target_fn, x64):
    target = target_fn()
    step = 0.02
    axis = np.arange(-9.0, 9.0, step)
    grid = jnp.stack(jnp.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    total = jnp.sum(jnp.exp(jax.vmap(target.logdensity_fn)(grid))) * step**2
    # A Riemann sum of a smooth density decaying well inside the box is exact to
    # far below this tolerance; the mass outside [-9, 9]^2 is < 1e-9.
    np.testing.assert_allclose(total, 1.0, atol=1e-8)


@pytest.mark.parametrize("name", list(builders()))
@pytest.mark.heavy
def test_exact_samples_match_truth(name, dtype, rng_key):
    target = builders()[name]()
    num_samples = 200_000
    samples = np.asarray(target.sample_fn(rng_key, num_samples), np.float64)
    assert samples.shape == (num_samples, target.dim)
    truth_mean = np.asarray(target.truth.mean, np.float64)
    truth_var = np.asarray(target.truth.variance, np.float64)
    mean_se = np.sqrt(truth_var / num_samples)
    np.testing.assert_array_less(np.abs(samples.mean(0) - truth_mean), 5 * mean_se)
    centred = samples - truth_mean
    var_se = np.sqrt(np.var(centred**2, axis=0) / num_samples)
    np.testing.assert_array_less(np.abs(np.mean(centred**2, axis=0) - truth_var), 5 * var_se)


@pytest.mark.slow
def test_unequal_samples_marginal_ks(x64, rng_key):
    weight, separation, scale, minor = 0.7, 4.0, 1.2, 0.4
    target = unequal_bimodal_2d(weight, separation, scale, minor)
    samples = np.asarray(target.sample_fn(rng_key, 20_000))

    def cdf(x):
        return weight * stats.norm.cdf(x, -2.0, scale) + (1 - weight) * stats.norm.cdf(
            x, 2.0, minor
        )

    assert stats.kstest(samples[:, 0], cdf).pvalue > 1e-3
    right = samples[:, 0] > 0
    expected_right = weight * stats.norm.sf(0, -2.0, scale) + (1 - weight) * stats.norm.sf(
        0, 2, minor
    )
    se = np.sqrt(expected_right * (1 - expected_right) / len(samples))
    assert abs(right.mean() - expected_right) < 5 * se


@pytest.mark.slow
def test_gradient_matches_closed_form(x64):
    weights, means, covariances = random_mixture_args(4)
    target = gaussian_mixture(weights, means, covariances)
    x = np.array([0.3, -1.0, 2.0])
    log_components = np.array(
        [
            np.log(w) + stats.multivariate_normal(m, c).logpdf(x)
            for w, m, c in zip(weights, means, covariances, strict=True)
        ]
    )
    responsibilities = np.exp(log_components - special.logsumexp(log_components))
    expected = sum(
        r * np.linalg.solve(c, m - x)
        for r, m, c in zip(responsibilities, means, covariances, strict=True)
    )
    np.testing.assert_allclose(jax.grad(target.logdensity_fn)(jnp.asarray(x)), expected, rtol=1e-9)


@pytest.mark.heavy
def test_jit_matches_eager(dtype):
    target = mixture_10d(3)
    x = jnp.linspace(-2.0, 5.0, 10, dtype=dtype)
    eager = target.logdensity_fn(x)
    jitted = jax.jit(lambda t, y: t.logdensity_fn(y))(target, x)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)
    key = jax.random.key(3)
    sample = jax.jit(lambda t, k: t.sample_fn(k, 7))
    np.testing.assert_allclose(sample(target, key), target.sample_fn(key, 7), rtol=1e-6)


@pytest.mark.heavy
def test_vmap_over_batch_of_separations_equals_loop(dtype):
    separations = jnp.array([1.0, 3.0, 6.0, 10.0], dtype)
    batch = jax.vmap(bimodal_2d)(separations)
    assert batch.truth.variance.shape == (4, 2)
    x = jnp.array([[0.5, -0.2], [2.0, 1.0], [-3.0, 0.0], [5.0, 0.1]], dtype)
    batched = jax.vmap(lambda t, y: t.logdensity_fn(y))(batch, x)
    looped = [bimodal_2d(s).logdensity_fn(y) for s, y in zip(separations, x, strict=True)]
    tol = 1e-5 if dtype == jnp.float32 else 1e-12
    np.testing.assert_allclose(batched, np.stack(looped), rtol=tol)
    np.testing.assert_allclose(
        batch.truth.variance[:, 0], 1.0 + np.asarray(separations) ** 2 / 4, rtol=tol
    )

    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[bimodal_2d(s) for s in separations])
    np.testing.assert_allclose(
        jax.vmap(lambda t, y: t.logdensity_fn(y))(stacked, x), batched, rtol=tol
    )
    keys = jax.random.split(jax.random.key(0), 4)
    batched_samples = jax.vmap(lambda t, k: t.sample_fn(k, 5))(batch, keys)
    looped_samples = [bimodal_2d(s).sample_fn(k, 5) for s, k in zip(separations, keys, strict=True)]
    np.testing.assert_allclose(batched_samples, np.stack(looped_samples), rtol=tol, atol=tol)


def test_jit_does_not_retrace_for_a_new_mixture_of_same_shape():
    traces = []

    @jax.jit
    def logdensity(target, x):
        traces.append(None)
        return target.logdensity_fn(x)

    x = jnp.zeros(2)
    logdensity(bimodal_2d(2.0), x)
    logdensity(bimodal_2d(7.0, 0.3), x)
    assert len(traces) == 1


@pytest.mark.slow
def test_zero_weight_component_is_ignored(x64):
    means = np.array([[0.0, 0.0], [50.0, 50.0]])
    target = gaussian_mixture([1.0, 0.0], means, diagonal_covariances(np.ones((2, 2))))
    x = np.array([[0.1, 0.2], [50.0, 50.0]])
    expected = stats.multivariate_normal(np.zeros(2)).logpdf(x)
    np.testing.assert_allclose(jax.vmap(target.logdensity_fn)(jnp.asarray(x)), expected)
    assert np.all(np.asarray(target.sample_fn(jax.random.key(0), 100)) < 10)


def test_diagonal_covariances():
    variances = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    expected = np.stack([np.diag(v) for v in variances])
    np.testing.assert_array_equal(diagonal_covariances(variances), expected)


@pytest.mark.parametrize(
    ("weights", "means", "covariances", "match"),
    [
        ([0.5, 0.6], np.zeros((2, 1)), np.ones((2, 1, 1)), "weights must sum to 1"),
        ([1.2, -0.2], np.zeros((2, 1)), np.ones((2, 1, 1)), r"weights\[1\] is negative"),
        ([np.nan, 1.0], np.zeros((2, 1)), np.ones((2, 1, 1)), r"weights\[0\] is not finite"),
        ([0.5, 0.5], np.zeros((3, 1)), np.ones((2, 1, 1)), "means must have shape"),
        ([0.5, 0.5], np.zeros((2, 2)), np.ones((2, 1, 1)), "covariances must have shape"),
        ([[0.5, 0.5]], np.zeros((2, 1)), np.ones((2, 1, 1)), "weights must have shape"),
        ([], np.zeros((0, 1)), np.ones((0, 1, 1)), "weights must have shape"),
        ([0.5, 0.5], [[0.0], [np.inf]], np.ones((2, 1, 1)), r"means\[1\] is not finite"),
        (
            [0.5, 0.5],
            np.zeros((2, 2)),
            [np.eye(2), [[1.0, 0.5], [0.0, 1.0]]],
            r"covariances\[1\] is not symmetric",
        ),
        (
            [0.5, 0.5],
            np.zeros((2, 2)),
            [[[1.0, 2.0], [2.0, 1.0]], np.eye(2)],
            r"covariances\[0\] is not positive definite",
        ),
        ([0.5, 0.5], np.zeros((2, 1)), [[[1.0]], [[0.0]]], r"covariances\[1\] is not positive"),
    ],
)
def test_invalid_arguments_raise(weights, means, covariances, match):
    with pytest.raises(ValueError, match=match):
        gaussian_mixture(
            np.asarray(weights, np.float32),
            np.asarray(means, np.float32),
            np.asarray(covariances, np.float32),
        )


@pytest.mark.slow
def test_weights_within_tolerance_are_renormalised(x64):
    target = gaussian_mixture(
        [0.3333333, 0.3333333, 0.3333333], np.zeros((3, 1)), np.ones((3, 1, 1))
    )
    np.testing.assert_allclose(np.sum(target.truth.mode_weights), 1.0, rtol=1e-15)


@pytest.mark.heavy
def test_mixture_10d_layout(x64):
    target = mixture_10d(5, separation=6.0, weights=[0.4, 0.3, 0.1, 0.1, 0.1])
    modes = np.asarray(target.truth.modes)
    assert modes.shape == (5, 10)
    distances = np.linalg.norm(modes[:, None] - modes[None], axis=-1)
    np.testing.assert_allclose(distances[~np.eye(5, dtype=bool)], 6.0)
    with pytest.raises(ValueError, match="num_modes"):
        mixture_10d(11)
    with pytest.raises(ValueError, match="weights must sum to 1"):
        mixture_10d(2, weights=[0.5, 0.6])
