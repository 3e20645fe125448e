"""The full-rank and low-rank families: densities, KLs and draws against scipy and closed forms."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import vi
from vi.experiments.plots import FitSummary, _ellipse_axes
from vi.families import family

D = 4


def _full_rank(dtype, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(D, D))
    covariance = a @ a.T + D * np.eye(D)
    factor = np.linalg.cholesky(covariance)
    # The diagonal and the upper triangle of off_diag are ignored: fill them with noise.
    off_diag = factor + np.triu(rng.normal(size=(D, D)))
    loc = rng.normal(size=D)
    params = vi.FullRankParams(
        jnp.asarray(loc, dtype),
        jnp.asarray(np.log(np.diag(factor)), dtype),
        jnp.asarray(off_diag, dtype),
    )
    return params, loc, covariance


def _low_rank(dtype, seed=1, rank=2):
    rng = np.random.default_rng(seed)
    w = np.tril(rng.normal(size=(D, rank)))
    log_scale = 0.3 * rng.normal(size=D)
    loc = rng.normal(size=D)
    cov_factor = w + np.triu(rng.normal(size=(D, rank)), 1)  # the ignored upper part
    params = vi.LowRankParams(
        jnp.asarray(loc, dtype), jnp.asarray(log_scale, dtype), jnp.asarray(cov_factor, dtype)
    )
    return params, loc, w @ w.T + np.diag(np.exp(2 * log_scale))


@pytest.mark.parametrize("make", [_full_rank, _low_rank], ids=["full_rank", "low_rank"])
@pytest.mark.slow
def test_log_prob_entropy_and_moments_match_scipy(make, dtype):
    params, loc, covariance = make(dtype)
    x = np.random.default_rng(2).normal(size=(5, D))
    reference = scipy.stats.multivariate_normal(loc, covariance)
    rtol = 1e-10 if dtype == jnp.float64 else 2e-5
    np.testing.assert_allclose(
        family.log_prob(params, jnp.asarray(x, dtype)), reference.logpdf(x), rtol=rtol
    )
    np.testing.assert_allclose(
        params.log_prob(jnp.asarray(x, dtype)), reference.logpdf(x), rtol=rtol
    )
    np.testing.assert_allclose(family.entropy(params), reference.entropy(), rtol=rtol)
    np.testing.assert_allclose(params.entropy(), reference.entropy(), rtol=rtol)
    np.testing.assert_allclose(family.covariance(params), covariance, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(family.variance(params), np.diag(covariance), rtol=rtol)
    maha = (x[0] - loc) @ np.linalg.solve(covariance, x[0] - loc)
    np.testing.assert_allclose(
        family.mahalanobis_sq(params, jnp.asarray(x[0], dtype)), maha, rtol=10 * rtol
    )
    # log q written in the noise is log q at the draw.
    eps = jax.random.normal(jax.random.key(0), (3, family.noise_dim(params)), dtype)
    np.testing.assert_allclose(
        family.noise_log_prob(params, eps),
        family.log_prob(params, family.transform(params, eps)),
        rtol=rtol,
    )


@pytest.mark.parametrize("make", [_full_rank, _low_rank], ids=["full_rank", "low_rank"])
@pytest.mark.slow
def test_held_log_prob_is_log_q_with_the_parameters_held(make, x64):
    """The sticking-the-landing term: the value of log q at the draws, and the gradient of
    log q with q's parameters held fixed, flowing through the draws only."""
    params, _, _ = make(jnp.float64)
    eps = jax.random.normal(jax.random.key(0), (6, family.noise_dim(params)), jnp.float64)
    weights = jnp.linspace(0.5, 2.0, 6)

    def held(theta):
        x = family.transform(theta, eps)
        return jnp.sum(weights * family.held_log_prob(theta, eps, x))

    def reference(theta):
        x = family.transform(theta, eps)
        return jnp.sum(weights * family.log_prob(jax.lax.stop_gradient(theta), x))

    np.testing.assert_allclose(held(params), reference(params), rtol=1e-12)
    for got, want in zip(jax.grad(held)(params), jax.grad(reference)(params), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make", [_full_rank, _low_rank], ids=["full_rank", "low_rank"])
@pytest.mark.slow
def test_draws_have_the_family_mean_and_covariance(make, rng_key):
    params, loc, covariance = make(jnp.float32)
    n = 40_000
    for x in (family.sample(rng_key, params, n), params.sample(rng_key, n)):
        assert x.shape == (n, D)
        sd = np.sqrt(np.diag(covariance))
        np.testing.assert_array_less(np.abs(np.mean(x, 0) - loc), 5 * sd / np.sqrt(n))
        # The sample covariance's entries have standard errors about sd_i sd_j sqrt(2 / n).
        tolerance = 5 * np.outer(sd, sd) * np.sqrt(2 / n)
        np.testing.assert_array_less(np.abs(np.cov(np.asarray(x).T) - covariance), tolerance)


def _dense_kl(m0, s0, m1, s1):
    inverse = np.linalg.inv(s1)
    d = m1 - m0
    _, logdet0 = np.linalg.slogdet(s0)
    _, logdet1 = np.linalg.slogdet(s1)
    return 0.5 * (np.trace(inverse @ s0) + d @ inverse @ d - len(m0) + logdet1 - logdet0)


@pytest.mark.slow
def test_registry_kls_match_the_dense_closed_form(x64):
    fr, m_fr, s_fr = _full_rank(jnp.float64)
    lr, m_lr, s_lr = _low_rank(jnp.float64)
    mf = vi.MeanFieldParams(jnp.ones(D), jnp.full(D, 0.2))
    m_mf, s_mf = np.ones(D), np.diag(np.full(D, np.exp(0.4)))
    mvn = vi.MultivariateNormal(jnp.asarray(m_fr), jnp.asarray(np.linalg.cholesky(s_fr)))
    dists = {
        "fr": (fr, m_fr, s_fr),
        "lr": (lr, m_lr, s_lr),
        "mf": (mf, m_mf, s_mf),
        "mvn": (mvn, m_fr, s_fr),
    }
    for q, mq, sq in dists.values():
        for p, mp, sp in dists.values():
            np.testing.assert_allclose(
                vi.kl(q, p), _dense_kl(mq, sq, mp, sp), rtol=1e-9, atol=1e-12
            )
        np.testing.assert_allclose(
            vi.kl(q, vi.StandardNormal()), _dense_kl(mq, sq, np.zeros(D), np.eye(D)), rtol=1e-9
        )
        np.testing.assert_allclose(
            vi.kl(vi.StandardNormal(), q), _dense_kl(np.zeros(D), np.eye(D), mq, sq), rtol=1e-9
        )


@pytest.mark.slow
def test_precondition_is_the_inverse_hessian_diagonal_at_a_gaussian_optimum(x64):
    """For a Gaussian target the negative ELBO is exact in closed form; at q = p its Hessian's
    diagonal for the mean and the factor entries is what ``precondition`` inverts."""
    params, loc, covariance = _full_rank(jnp.float64)
    precision = jnp.asarray(np.linalg.inv(covariance))

    def negative_elbo(theta):
        q_cov = family.covariance(theta)
        d = theta.loc - loc
        return 0.5 * jnp.trace(precision @ q_cov) + 0.5 * d @ precision @ d - family.entropy(theta)

    flat, unravel = jax.flatten_util.ravel_pytree(params)
    hessian_diag = jnp.diagonal(jax.hessian(lambda f: negative_elbo(unravel(f)))(flat))
    preconditioned = family.precondition(params, unravel(jnp.ones_like(flat)))
    expected = unravel(hessian_diag)
    np.testing.assert_allclose(preconditioned.loc, 1 / expected.loc, rtol=1e-9)
    lower = np.tril(np.ones((D, D)), -1).astype(bool)
    np.testing.assert_allclose(
        np.asarray(preconditioned.off_diag)[lower],
        1 / np.asarray(expected.off_diag)[lower],
        rtol=1e-9,
    )
    # And the low-rank family's, for its mean.
    lr, _, lr_cov = _low_rank(jnp.float64)
    np.testing.assert_allclose(
        family.precondition(lr, jax.tree.map(jnp.ones_like, lr)).loc,
        1 / np.diag(np.linalg.inv(lr_cov)),
        rtol=1e-9,
    )


def test_widen_multiplies_the_covariance(x64):
    for params, _, covariance in (_full_rank(jnp.float64), _low_rank(jnp.float64)):
        np.testing.assert_allclose(
            family.covariance(family.widen(params, 2.0)), 4 * covariance, rtol=1e-12
        )


@pytest.mark.slow
def test_family_values_init_and_checks():
    fr = vi.FullRank().init(jnp.arange(3.0), scale=0.5)
    np.testing.assert_allclose(fr.scale_tril, 0.5 * np.eye(3))
    lr = vi.LowRank(2).init(jnp.arange(3.0), scale=0.5)
    assert lr.rank == 2 and family.family_of(lr) == vi.LowRank(2)
    # The low-rank start is off the saddle point W = 0, and lower trapezoidal.
    assert np.all(np.asarray(lr.cov_factor) == np.tril(lr.cov_factor)) and np.any(
        lr.cov_factor != 0
    )
    np.testing.assert_allclose(family.variance(lr), [0.3125, 0.3125, 0.25])
    assert family.num_params(fr) == 3 + 6 and family.num_params(lr) == 6 + 5
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="rank must be an integer >= 1"):
            vi.LowRank(bad)
    with pytest.raises(TypeError, match=r"call it, vi.FullRank\(\)"):
        family.check_family(vi.FullRank)
    with pytest.raises(TypeError, match="family must be"):
        family.check_family("full_rank")
    with pytest.raises(
        TypeError, match=r"MeanFieldParams, vi\.FullRankParams or vi\.LowRankParams"
    ):
        family.log_prob((jnp.zeros(2), jnp.zeros(2)), jnp.zeros(2))


def test_a_correlated_fit_is_drawn_as_a_rotated_ellipse():
    fit = FitSummary("reverse", 0, np.zeros(2), np.array([2.0, 1.0]), 0.6)
    width, height, angle = _ellipse_axes(fit)
    values, vectors = np.linalg.eigh(np.array([[4.0, 1.2], [1.2, 1.0]]))
    np.testing.assert_allclose([width, height], np.sqrt(values[::-1]))
    direction = np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))])
    np.testing.assert_allclose(abs(direction @ vectors[:, 1]), 1.0)
    assert _ellipse_axes(FitSummary("r", 0, np.zeros(2), np.array([2.0, 1.0]))) == (2.0, 1.0, 0.0)
