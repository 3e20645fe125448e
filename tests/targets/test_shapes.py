"""Banana, funnel and ring targets against scipy, quadrature and exact-sample Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from vi.targets.shapes import banana, funnel, ring


def ring_log_normalizer(dim, radius, width):
    """log of the sphere area times the radial integral, by scipy quadrature."""
    radial, _ = integrate.quad(
        lambda rho: rho ** (dim - 1) * np.exp(-0.5 * ((rho - radius) / width) ** 2),
        0,
        np.inf,
        epsabs=0,
        epsrel=1e-13,
    )
    area = 2 * np.pi ** (dim / 2) / special.gamma(dim / 2)
    return np.log(area * radial)


def ring_variance(dim, radius, width):
    def moment(k):
        return integrate.quad(
            lambda rho: rho**k * np.exp(-0.5 * ((rho - radius) / width) ** 2),
            0,
            np.inf,
            epsabs=0,
            epsrel=1e-13,
        )[0]

    return moment(dim + 1) / moment(dim - 1) / dim


def reference_logpdf(name, params, x):
    """Independent scipy log densities (normalised by construction)."""
    if name == "banana":
        a, b = params["scale"], params["curvature"]
        untwisted = x[:, 1] - b * (x[:, 0] ** 2 - a**2)
        return (
            stats.norm.logpdf(x[:, 0], 0, a)
            + stats.norm.logpdf(untwisted)
            + stats.norm.logpdf(x[:, 2:]).sum(-1)
        )
    if name == "funnel":
        v = x[:, 0]
        return stats.norm.logpdf(v, 0, params["scale"]) + stats.norm.logpdf(
            x[:, 1:], 0, np.exp(v / 2)[:, None]
        ).sum(-1)
    norm = np.linalg.norm(x, axis=-1)
    dim = x.shape[-1]
    log_z = ring_log_normalizer(dim, params["radius"], params["width"])
    return -0.5 * ((norm - params["radius"]) / params["width"]) ** 2 - log_z


CASES = [
    ("banana", 2, {"scale": 10.0, "curvature": 0.03}),
    ("banana", 4, {"scale": 2.0, "curvature": 0.5}),
    ("funnel", 2, {"scale": 1.5}),
    ("funnel", 10, {"scale": 3.0}),
    ("ring", 2, {"radius": 3.0, "width": 0.5}),
    ("ring", 3, {"radius": 1.0, "width": 1.0}),
    ("ring", 5, {"radius": 0.0, "width": 2.0}),
]
BUILDERS = {"banana": banana, "funnel": funnel, "ring": ring}


def case_id(case):
    name, dim, params = case
    return f"{name}-{dim}d-" + "-".join(f"{v}" for v in params.values())


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.slow
def test_logdensity_matches_reference(case, dtype):
    name, dim, params = case
    target = BUILDERS[name](dim, **params)
    assert target.init_position.shape == (dim,)
    assert target.init_position.dtype == dtype
    x = np.random.default_rng(0).normal(scale=2.0, size=(40, dim))
    expected = reference_logpdf(name, params, x)
    got = jax.vmap(target.logdensity_fn)(jnp.asarray(x, dtype))
    tol = 2e-5 if dtype == jnp.float32 else 1e-10
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] == "ring"], ids=case_id)
def test_ring_variance_matches_quadrature(case, x64):
    _, dim, params = case
    truth = ring(dim, **params).truth
    np.testing.assert_allclose(truth.variance, ring_variance(dim, **params), rtol=1e-10)
    assert truth.log_normalizer == 0
    assert truth.modes is None


def test_banana_and_funnel_truth_closed_form(x64):
    truth = banana(3, scale=2.0, curvature=0.5).truth
    np.testing.assert_allclose(truth.variance, [4.0, 1.0 + 2 * 16 * 0.25, 1.0])
    np.testing.assert_allclose(truth.modes, [[0.0, -2.0, 0.0]])
    truth = funnel(10).truth
    np.testing.assert_allclose(truth.variance, [9.0] + [np.exp(4.5)] * 9)
    assert truth.modes is None


@pytest.mark.heavy
def test_banana_mode_is_a_maximum(x64):
    target = banana(3, scale=2.0, curvature=0.5)
    mode = target.truth.modes[0]
    np.testing.assert_allclose(jax.grad(target.logdensity_fn)(mode), 0.0, atol=1e-12)
    assert np.all(np.linalg.eigvalsh(jax.hessian(target.logdensity_fn)(mode)) < 0)


def grid_mass(logdensity_fn, axis0, axis1, transform=None):
    u, w = np.meshgrid(axis0, axis1, indexing="ij")
    points = np.stack([u.ravel(), w.ravel()], -1)
    log_jacobian = np.zeros(len(points))
    if transform is not None:
        points, log_jacobian = transform(points)
    log_p = jax.vmap(logdensity_fn)(jnp.asarray(points)) + log_jacobian
    return float(jnp.sum(jnp.exp(log_p))) * (axis0[1] - axis0[0]) * (axis1[1] - axis1[0])


@pytest.mark.heavy
def test_two_dimensional_densities_integrate_to_one(x64):
    # Riemann sums of smooth, rapidly decaying densities on fine grids are exact
    # to far below the tolerance; the boxes leave out < 1e-9 of the mass.
    target = banana(2, scale=2.0, curvature=0.5)
    mass = grid_mass(target.logdensity_fn, np.arange(-14, 14, 0.02), np.arange(-8, 100, 0.02))
    np.testing.assert_allclose(mass, 1.0, atol=1e-7)

    target = ring(2, radius=3.0, width=0.5)
    axis = np.arange(-7, 7, 0.01)
    np.testing.assert_allclose(grid_mass(target.logdensity_fn, axis, axis), 1.0, atol=1e-7)

    # The funnel's neck is too thin for a uniform grid: integrate over (v, z)
    # with x = exp(v / 2) z, whose Jacobian is exp(v / 2).
    def to_funnel(points):
        v, z = points[:, 0], points[:, 1]
        return np.stack([v, np.exp(v / 2) * z], -1), v / 2

    target = funnel(2, scale=3.0)
    mass = grid_mass(
        target.logdensity_fn, np.arange(-20, 20, 0.02), np.arange(-8, 8, 0.02), to_funnel
    )
    np.testing.assert_allclose(mass, 1.0, atol=1e-7)


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.slow
def test_exact_samples_match_truth(case, dtype, rng_key):
    name, dim, params = case
    target = BUILDERS[name](dim, **params)
    num_samples = 100_000
    samples = np.asarray(target.sample_fn(rng_key, num_samples), np.float64)
    assert samples.shape == (num_samples, dim)
    assert np.all(np.isfinite(samples))
    truth_var = np.asarray(target.truth.variance, np.float64)
    mean_se = np.sqrt(truth_var / num_samples)
    np.testing.assert_array_less(np.abs(samples.mean(0)), 5 * mean_se)
    if name == "funnel":
        # The x_i are heavy tailed: use the exact Var(x^2) = 3 e^{2 s^2} - e^{s^2}
        # rather than a plug-in estimate that would understate the spread.
        s2 = params["scale"] ** 2
        var_of_square = np.full(dim, 3 * np.exp(2 * s2) - np.exp(s2))
        var_of_square[0] = 2 * s2**2
    else:
        var_of_square = np.var(samples**2, axis=0)
    var_se = np.sqrt(var_of_square / num_samples)
    np.testing.assert_array_less(np.abs(np.mean(samples**2, axis=0) - truth_var), 5 * var_se)


@pytest.mark.slow
def test_samples_have_exact_marginals(x64, rng_key):
    samples = np.asarray(banana(3, scale=2.0, curvature=0.5).sample_fn(rng_key, 20_000))
    untwisted = samples[:, 1] - 0.5 * (samples[:, 0] ** 2 - 4.0)
    assert stats.kstest(samples[:, 0] / 2.0, "norm").pvalue > 1e-3
    assert stats.kstest(untwisted, "norm").pvalue > 1e-3
    assert abs(stats.pearsonr(samples[:, 0] ** 2, untwisted).statistic) < 5 / np.sqrt(20_000)

    samples = np.asarray(funnel(4, scale=3.0).sample_fn(rng_key, 20_000))
    v = samples[:, 0]
    assert stats.kstest(v / 3.0, "norm").pvalue > 1e-3
    assert stats.kstest((samples[:, 1:] * np.exp(-v / 2)[:, None]).ravel(), "norm").pvalue > 1e-3


@pytest.mark.parametrize(("dim", "radius", "width"), [(2, 3.0, 0.5), (3, 0.5, 1.0), (6, 0.0, 1.0)])
@pytest.mark.heavy
def test_ring_radius_and_direction_are_exact(dim, radius, width, x64, rng_key):
    samples = np.asarray(ring(dim, radius=radius, width=width).sample_fn(rng_key, 20_000))
    norm = np.linalg.norm(samples, axis=-1)

    def density(rho):
        return rho ** (dim - 1) * np.exp(-0.5 * ((rho - radius) / width) ** 2)

    total = integrate.quad(density, 0, np.inf)[0]
    cdf = np.vectorize(lambda r: integrate.quad(density, 0, r)[0] / total)
    assert stats.kstest(norm, cdf).pvalue > 1e-3
    # Uniform directions: the first coordinate of x / |x| has the law of 2 B - 1,
    # B ~ Beta((D - 1) / 2, (D - 1) / 2).
    first = (samples[:, 0] / norm + 1) / 2
    assert stats.kstest(first, stats.beta((dim - 1) / 2, (dim - 1) / 2).cdf).pvalue > 1e-3


def test_ring_is_finite_with_finite_gradient_at_origin():
    target = ring(2)
    origin = jnp.zeros(2)
    assert np.isfinite(target.logdensity_fn(origin))
    assert np.all(np.isfinite(jax.grad(target.logdensity_fn)(origin)))


@pytest.mark.slow
def test_funnel_neck_is_finite(dtype):
    # Deep in the neck exp(-v) overflows float32; the density itself is modest there.
    x = jnp.array([-100.0, 0.0, 1e-30], dtype)
    expected = stats.norm.logpdf(-100.0, 0, 3) + 2 * (50 - 0.5 * np.log(2 * np.pi))
    np.testing.assert_allclose(funnel(3).logdensity_fn(x), expected, rtol=1e-6)
    assert np.all(np.isfinite(jax.grad(funnel(3).logdensity_fn)(x)))


@pytest.mark.heavy
def test_jit_matches_eager(dtype):
    x = jnp.array([0.3, -1.2, 0.7], dtype)
    for target in [banana(3), funnel(3), ring(3)]:
        jitted = jax.jit(lambda t, y: t.logdensity_fn(y))(target, x)
        np.testing.assert_allclose(jitted, target.logdensity_fn(x), rtol=1e-6)
        key = jax.random.key(5)
        sampled = jax.jit(lambda t, k: t.sample_fn(k, 11))(target, key)
        np.testing.assert_allclose(sampled, target.sample_fn(key, 11), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("builder", "values", "name"),
    [
        (ring, [0.0, 1.0, 4.0], "radius"),
        (banana, [0.0, 0.1, 1.0], "curvature"),
        (funnel, [0.5, 1.0, 3.0], "scale"),
    ],
    ids=["ring", "banana", "funnel"],
)
@pytest.mark.heavy
def test_vmap_over_batch_equals_loop(builder, values, name, dtype):
    values = jnp.asarray(values, dtype)
    batch = jax.vmap(lambda value: builder(3, **{name: value}))(values)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3)), dtype)
    batched = jax.vmap(lambda t, y: t.logdensity_fn(y))(batch, x)
    targets = [builder(3, **{name: value}) for value in values]
    looped = np.stack([t.logdensity_fn(y) for t, y in zip(targets, x, strict=True)])
    tol = 1e-5 if dtype == jnp.float32 else 1e-12
    np.testing.assert_allclose(batched, looped, rtol=tol, atol=tol)
    np.testing.assert_allclose(
        batch.truth.variance, np.stack([t.truth.variance for t in targets]), rtol=tol
    )
    keys = jax.random.split(jax.random.key(2), 3)
    batched_samples = jax.vmap(lambda t, k: t.sample_fn(k, 6))(batch, keys)
    looped_samples = np.stack([t.sample_fn(k, 6) for t, k in zip(targets, keys, strict=True)])
    np.testing.assert_allclose(batched_samples, looped_samples, rtol=tol, atol=tol)


@pytest.mark.slow
def test_same_dimension_targets_share_structure_and_compile_once():
    traces = []

    @jax.jit
    def draw(target, rng_key):
        traces.append(None)
        return target.sample_fn(rng_key, 4), target.logdensity_fn(target.init_position)

    for radius in [1.0, 2.0]:
        draw(ring(2, radius=radius), jax.random.key(0))
    assert len(traces) == 1
    assert jax.tree.structure(funnel(5, scale=1.0)) == jax.tree.structure(funnel(5, scale=2.0))
    assert jax.tree.structure(funnel(5)) != jax.tree.structure(funnel(6))


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: banana(1), "dim"),
        (lambda: funnel(2.5), "dim"),
        (lambda: ring(1), "dim"),
        (lambda: banana(scale=0.0), "scale must be positive"),
        (lambda: banana(curvature=np.nan), "curvature must be finite"),
        (lambda: funnel(scale=-1.0), "scale must be positive"),
        (lambda: ring(radius=-1.0), "radius must be non-negative"),
        (lambda: ring(width=0.0), "width must be positive"),
        (lambda: ring(width=np.inf), "width must be finite"),
    ],
)
def test_invalid_arguments_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build()
