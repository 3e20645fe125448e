import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import models
from vi import backend
from vi.backend import orthonormal_columns as _orthonormal_columns
from vi.families import mean_field
from vi.kernels.estimate import Estimate
from vi.objectives import elbo, elbo_from_draws, moment_matched_draws
from vi.targets import from_numpyro


def _standard_normal_logdensity(x):
    return -0.5 * jnp.sum(x**2) - 0.5 * x.shape[-1] * jnp.log(2 * jnp.pi)


@pytest.mark.slow
def test_elbo_of_the_target_itself_is_zero_within_its_stderr(rng_key):
    params = mean_field.init(jnp.zeros(3), scale=1.0)
    est = elbo(rng_key, params, _standard_normal_logdensity, 4000)
    assert isinstance(est, Estimate)
    # q = p, so ELBO = log Z = 0; the estimate's error is its stderr.
    assert est.stderr > 0
    assert abs(float(est.value)) < 4 * float(est.stderr)


@pytest.mark.slow
def test_sticking_the_landing_is_exact_with_zero_gradient_at_q_equal_p(rng_key):
    params = mean_field.init(jnp.zeros(3), scale=1.0)
    value, grad = jax.value_and_grad(
        lambda p: elbo(rng_key, p, _standard_normal_logdensity, 16, stick_the_landing=True).value
    )(params)
    np.testing.assert_allclose(value, 0.0, atol=1e-5)
    for leaf in jax.tree.leaves(grad):
        np.testing.assert_allclose(leaf, 0.0, atol=1e-5)


@pytest.mark.slow
def test_fixed_draw_elbo_is_exact_on_a_gaussian_posterior(x64):
    prob = models.random_regression(n=50, d=4)
    target = from_numpyro(
        models.linear_gaussian_model,
        jnp.asarray(prob.X),
        prob.noise,
        prob.prior_scale,
        y=jnp.asarray(prob.y),
    )
    loc = jnp.asarray([0.3, -0.2, 0.1, 0.5])
    scale = jnp.asarray([0.05, 0.1, 0.2, 0.07])
    params = mean_field.MeanFieldParams(loc, jnp.log(scale))
    eps = moment_matched_draws(jax.random.key(3), 8, 4, jnp.float64)
    value = elbo_from_draws(params, target.logdensity_fn, eps).value
    np.testing.assert_allclose(value, prob.elbo(np.asarray(loc), np.asarray(scale)), rtol=1e-12)


@pytest.mark.parametrize("num_draws, dim", [(10, 3), (4, 3), (64, 32)])
@pytest.mark.slow
def test_moment_matched_draws_have_exact_moments(num_draws, dim, x64):
    eps = moment_matched_draws(jax.random.key(0), num_draws, dim, jnp.float64)
    assert eps.shape == (num_draws, dim)
    np.testing.assert_allclose(eps.mean(0), 0.0, atol=1e-12)
    second = eps.T @ eps / num_draws
    if num_draws // 2 >= dim:
        np.testing.assert_allclose(second, np.eye(dim), atol=1e-12)
    else:
        np.testing.assert_allclose(np.diag(second), 1.0, rtol=1e-12)


@pytest.mark.parametrize("half, dim", [(40, 12), (33, 33), (64, 64), (150, 100)])
@pytest.mark.slow
def test_moment_matched_draws_whiten_as_numpy_qr_does(dtype, half, dim):
    # The half-sample y is whitened by the Q of y = QR with R's diagonal made positive
    # (block Gram-Schmidt: a part block; a block and one column; two blocks; several and
    # a part).
    eps = moment_matched_draws(jax.random.key(5), 2 * half, dim, dtype)
    y = np.asarray(backend.normal(jax.random.key(5), (half, dim), dtype), np.float64)
    q, r = np.linalg.qr(y)
    want = q * np.sign(np.diag(r)) * np.sqrt(half)
    tol = 1e-12 if dtype == jnp.float64 else 1e-5
    np.testing.assert_allclose(eps[:half], want, atol=tol)
    np.testing.assert_array_equal(eps[half:], -eps[:half])


@pytest.mark.parametrize("dim", [31, 70])
@pytest.mark.slow
def test_whitening_stays_orthogonal_on_nearly_dependent_columns(x64, dim):
    # Columns in pairs c, c + 1e-3 c' (condition number ~1e4): Gram-Schmidt that projects
    # once loses orthogonality in proportion to it; twice keeps Q orthogonal to rounding.
    rng = np.random.default_rng(dim)
    base = rng.standard_normal((2 * dim, dim))
    y = base.copy()
    y[:, 1::2] = base[:, 0:-1:2] + 1e-3 * base[:, 1::2]
    q = np.asarray(_orthonormal_columns(jnp.asarray(y)))
    np.testing.assert_allclose(q.T @ q, np.eye(dim), atol=1e-13)
    want, r = np.linalg.qr(y)
    np.testing.assert_allclose(q, want * np.sign(np.diag(r)), atol=1e-9)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_draws"):
        moment_matched_draws(jax.random.key(0), 5, 2)
    with pytest.raises(ValueError, match="num_samples"):
        elbo(jax.random.key(0), mean_field.init(jnp.zeros(2)), _standard_normal_logdensity, 0)


@pytest.mark.slow
def test_one_draw_gives_an_estimate_without_a_standard_error(rng_key):
    params = mean_field.init(jnp.zeros(2), scale=1.0)
    est = elbo(rng_key, params, _standard_normal_logdensity, 1)
    assert bool(jnp.isfinite(est.value)) and bool(jnp.isnan(est.stderr))
