"""Moment errors and mode coverage against closed forms, scipy and exact-sample Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vi.diagnostics.moments import (
    chi2_quantile,
    mode_coverage,
    moment_errors,
    target_mass_in_hdr,
)
from vi.families.mean_field import MeanFieldParams
from vi.targets.mixture import bimodal_2d, diagonal_covariances, gaussian_mixture, mixture_10d
from vi.targets.target import Truth


def test_moment_errors_closed_form(dtype):
    truth = Truth(
        mean=jnp.array([1.0, -2.0, 0.0], dtype), variance=jnp.array([4.0, 0.25, 1.0], dtype)
    )
    # loc is 2 sd above, 1 sd below and on the mean; variances are doubled, quartered and exact.
    params = MeanFieldParams(
        loc=jnp.array([5.0, -2.5, 0.0], dtype),
        log_scale=jnp.log(jnp.sqrt(jnp.array([8.0, 0.0625, 1.0], dtype))),
    )
    errors = moment_errors(params, truth)
    tol = 1e-6 if dtype == jnp.float32 else 1e-14
    np.testing.assert_allclose(errors.mean_error, [2.0, -1.0, 0.0], atol=tol)
    np.testing.assert_allclose(errors.log_variance_ratio, np.log([2.0, 0.25, 1.0]), atol=tol)
    assert errors.mean_error.dtype == dtype


@pytest.mark.parametrize("dof", [1, 2, 5, 10, 100])
def test_chi2_quantile_matches_scipy(dof, dtype):
    levels = [0.01, 0.5, 0.95, 0.999999]
    got = [chi2_quantile(level, dof, dtype=dtype) for level in levels]
    assert got[0].dtype == dtype
    rtol = 1e-5 if dtype == jnp.float32 else 1e-11
    levels_as_given = np.asarray(levels, dtype).astype(np.float64)
    np.testing.assert_allclose(got, stats.chi2.ppf(levels_as_given, dof), rtol=rtol)


def test_chi2_quantile_rejects_bad_arguments():
    for level in [0.0, 1.0, -0.1]:
        with pytest.raises(ValueError, match="level"):
            chi2_quantile(level, 2)
    with pytest.raises(ValueError, match="dof"):
        chi2_quantile(0.5, 0)


@pytest.mark.slow
def test_mode_coverage_on_a_separated_bimodal(dtype):
    target = bimodal_2d(separation=jnp.asarray(8.0, dtype), scale=jnp.asarray(1.0, dtype))
    on_left = MeanFieldParams(jnp.array([-4.0, 0.0], dtype), jnp.zeros(2, dtype))
    coverage = mode_coverage(on_left, target.truth)
    np.testing.assert_allclose(coverage.mahalanobis_sq, [0.0, 64.0], rtol=1e-6)
    np.testing.assert_array_equal(coverage.covered, [True, False])
    np.testing.assert_allclose(coverage.covered_weight, 0.5)

    wide = MeanFieldParams(jnp.zeros(2, dtype), jnp.full(2, jnp.log(5.0), dtype))
    coverage = mode_coverage(wide, target.truth)
    np.testing.assert_allclose(coverage.mahalanobis_sq, [16 / 25, 16 / 25], rtol=1e-6)
    np.testing.assert_allclose(coverage.covered_weight, 1.0)

    # A mode exactly on the boundary at level p: d^2 = chi2_2.ppf(p) = -2 log(1 - p).
    boundary = np.sqrt(-2 * np.log(1 - 0.9))
    just_outside = MeanFieldParams(
        jnp.array([-4.0 + 1.001 * boundary, 0.0], dtype), jnp.zeros(2, dtype)
    )
    just_inside = MeanFieldParams(
        jnp.array([-4.0 + 0.999 * boundary, 0.0], dtype), jnp.zeros(2, dtype)
    )
    assert not mode_coverage(just_outside, target.truth, level=0.9).covered[0]
    assert mode_coverage(just_inside, target.truth, level=0.9).covered[0]


@pytest.mark.slow
def test_mode_coverage_uses_weights_or_counts(x64):
    target = mixture_10d(4, weights=[0.4, 0.3, 0.2, 0.1])
    on_second = MeanFieldParams(target.truth.modes[1], jnp.zeros(10))
    coverage = mode_coverage(on_second, target.truth)
    np.testing.assert_array_equal(coverage.covered, [False, True, False, False])
    np.testing.assert_allclose(coverage.covered_weight, 0.3)
    unweighted = target.truth._replace(mode_weights=None)
    np.testing.assert_allclose(mode_coverage(on_second, unweighted).covered_weight, 0.25)
    with pytest.raises(ValueError, match="modes is None"):
        mode_coverage(on_second, target.truth._replace(modes=None))


@pytest.mark.slow
def test_exact_gaussian_fit_covers_its_level(dtype, rng_key):
    scales = jnp.array([0.5, 2.0, 1.0], dtype)
    loc = jnp.array([1.0, -1.0, 3.0], dtype)
    target = gaussian_mixture(
        jnp.ones(1, dtype), loc[None], diagonal_covariances(scales[None] ** 2)
    )
    num_samples = 100_000
    samples = target.sample_fn(rng_key, num_samples)
    params = MeanFieldParams(loc, jnp.log(scales))
    for level in [0.5, 0.95]:
        mass = target_mass_in_hdr(params, samples, level=level)
        se = np.sqrt(level * (1 - level) / num_samples)
        assert abs(float(mass) - level) < 5 * se


@pytest.mark.parametrize("separation", [2.0, 3.0, 6.0])
@pytest.mark.slow
def test_one_mode_fit_on_bimodal_matches_noncentral_chi2(separation, x64, rng_key):
    scale = 0.8
    target = bimodal_2d(separation, scale)
    params = MeanFieldParams(jnp.array([-separation / 2, 0.0]), jnp.full(2, np.log(scale)))
    num_samples = 100_000
    mass = float(target_mass_in_hdr(params, target.sample_fn(rng_key, num_samples)))
    # Mass of each component inside q's 95% ellipse: 0.95 for its own, and a
    # noncentral chi-square probability for the other one.
    radius_sq = stats.chi2.ppf(0.95, 2)
    expected = 0.5 * 0.95 + 0.5 * stats.ncx2.cdf(radius_sq, 2, (separation / scale) ** 2)
    se = np.sqrt(expected * (1 - expected) / num_samples)
    assert abs(mass - expected) < 5 * se


@pytest.mark.heavy
def test_vmap_and_jit_match_loop(dtype):
    separations = jnp.array([2.0, 4.0, 8.0], dtype)
    targets = jax.vmap(bimodal_2d)(separations)
    params = MeanFieldParams(
        loc=jnp.array([[-1.0, 0.0], [0.5, 0.2], [-4.0, 0.0]], dtype),
        log_scale=jnp.array([[0.0, 0.0], [0.7, -0.3], [0.1, 0.0]], dtype),
    )
    samples = jax.vmap(lambda t, k: t.sample_fn(k, 500))(
        targets, jax.random.split(jax.random.key(1), 3)
    )

    def diagnose(p, t, x):
        return moment_errors(p, t.truth), mode_coverage(p, t.truth), target_mass_in_hdr(p, x)

    batched = jax.jit(jax.vmap(diagnose))(params, targets, samples)
    for i in range(3):
        one = diagnose(
            jax.tree.map(lambda leaf, i=i: leaf[i], params),
            bimodal_2d(separations[i]),
            samples[i],
        )
        for got, expected in zip(jax.tree.leaves(batched), jax.tree.leaves(one), strict=True):
            np.testing.assert_allclose(got[i], expected, rtol=1e-5)
