"""Fits in the full-rank and low-rank families, end to end, against exact Gaussian posteriors.

On a Gaussian target the optimum of each family is known: the full-rank family holds the
target exactly (KL 0), as does a low-rank family of the target's own rank; the mean-field
family cannot (its KL is the closed form's, far from 0). A fit that says ``converged`` has
an estimated gap to its optimum under ``gap_tol`` (0.02 nats) plus three standard errors,
and on a Gaussian target that gap is its KL to the target (the ELBO is log Z - KL).
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import vi
from vi.families import family

GAP_TOL = vi.Stopping().gap_tol


def _correlated_gaussian(dim=4, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, dim))
    covariance = a @ a.T + 0.5 * np.eye(dim)
    mean = rng.normal(size=dim)
    precision, m = jnp.asarray(np.linalg.inv(covariance)), jnp.asarray(mean)
    target = vi.from_logdensity(lambda x: -0.5 * (x - m) @ precision @ (x - m), jnp.zeros(dim))
    return target, vi.families.mvn_from_covariance(m, jnp.asarray(covariance)), covariance


@pytest.mark.slow
def test_full_rank_fit_holds_a_correlated_gaussian_where_mean_field_cannot():
    target, truth, _ = _correlated_gaussian()
    result = vi.fit(jax.random.key(0), target, family=vi.FullRank())
    assert isinstance(result.params, vi.FullRankParams)
    assert result.stop_reason == "converged"
    kl = float(vi.kl(result.params, truth))
    assert kl < GAP_TOL  # the converged gap bounds it; MC noise of the parameters is below
    assert float(result.info.gap) + 3 * float(result.info.gap_stderr) < GAP_TOL
    mean_field = vi.fit(jax.random.key(0), target)
    assert float(vi.kl(mean_field.params, truth)) > 20 * max(kl, 1e-3)
    # Draws in the model's space carry the correlations.
    draws = result.sample(jax.random.key(1), 20_000)["x"]
    np.testing.assert_allclose(np.corrcoef(np.asarray(draws).T), _corr(truth), atol=0.03)


def _corr(mvn):
    covariance = np.asarray(mvn.scale_tril @ mvn.scale_tril.T)
    sd = np.sqrt(np.diag(covariance))
    return covariance / np.outer(sd, sd)


@pytest.mark.heavy
def test_low_rank_fit_holds_a_target_of_its_rank():
    rng = np.random.default_rng(3)
    dim, rank = 12, 2
    w = rng.normal(size=(dim, rank))
    covariance = w @ w.T + np.diag(rng.uniform(0.2, 1.0, dim))
    precision = jnp.asarray(np.linalg.inv(covariance))
    target = vi.from_logdensity(lambda x: -0.5 * x @ precision @ x, jnp.ones(dim))
    truth = vi.families.mvn_from_covariance(jnp.zeros(dim), jnp.asarray(covariance))
    result = vi.fit(jax.random.key(0), target, family=vi.LowRank(rank))
    assert isinstance(result.params, vi.LowRankParams) and result.params.rank == rank
    kl = float(vi.kl(result.params, truth))
    assert result.stop_reason in ("converged", "stalled")
    assert kl < 0.05
    if result.converged:
        assert kl < GAP_TOL
    mean_field = vi.fit(jax.random.key(0), target)
    assert float(vi.kl(mean_field.params, truth)) > 10 * kl


@pytest.mark.heavy
def test_fit_batch_of_full_rank_fits_is_the_single_fits():
    target, _, _ = _correlated_gaussian(dim=3)
    method = vi.Stochastic(max_steps=600, stopping=None, stick_the_landing=True)
    keys = jax.random.split(jax.random.key(0), 4)  # sharded over the 2 test devices
    batch = vi.fit_batch(keys, target, method=method, family=vi.FullRank(), init_radius=1.0)
    assert batch.params.off_diag.shape == (4, 3, 3)
    for i in (0, 3):
        single = vi.fit(keys[i], target, method=method, family=vi.FullRank(), init_radius=1.0)
        for got, want in zip(
            jax.tree.leaves(batch[i].params), jax.tree.leaves(single.params), strict=True
        ):
            np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


def _linear_regression(x, y=None):
    beta = numpyro.sample("beta", dist.Normal(0.0, 2.0).expand([x.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    numpyro.sample("y", dist.Normal(x @ beta, 0.5), obs=y)
    numpyro.deterministic("noise_sd", sigma)


@pytest.mark.slow
@pytest.mark.heavy
def test_full_rank_fit_of_a_numpyro_model_matches_its_exact_posterior(x64):
    """Correlated features give correlated coefficients; with known noise the posterior of
    ``beta`` is Gaussian in closed form (``sigma`` only adds its own prior)."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(50, 1))
    x = np.hstack([z + 0.4 * rng.normal(size=(50, 1)), z + 0.4 * rng.normal(size=(50, 1))])
    y = x @ np.array([1.0, -0.5]) + 0.5 * rng.normal(size=50)
    target = vi.from_numpyro(_linear_regression, jnp.asarray(x), jnp.asarray(y))
    result = vi.fit(jax.random.key(0), target, family=vi.FullRank())
    assert result.stop_reason == "converged"
    precision = x.T @ x / 0.25 + np.eye(2) / 4.0
    covariance = np.linalg.inv(precision)
    mean = covariance @ x.T @ y / 0.25
    draws = result.sample(jax.random.key(1), 40_000)
    assert set(draws) == {"beta", "sigma", "noise_sd"}
    assert np.all(np.asarray(draws["sigma"]) > 0)
    sd = np.sqrt(np.diag(covariance))
    np.testing.assert_allclose(np.mean(draws["beta"], 0), mean, atol=0.05 * sd.max())
    np.testing.assert_allclose(np.cov(np.asarray(draws["beta"]).T), covariance, rtol=0.05)
    exact = covariance[0, 1] / np.sqrt(covariance[0, 0] * covariance[1, 1])
    assert exact < -0.8  # the mean field would say 0
    np.testing.assert_allclose(np.corrcoef(np.asarray(draws["beta"]).T)[0, 1], exact, atol=0.01)


@pytest.mark.heavy
def test_full_rank_forward_kl_matches_the_moments_of_its_draws():
    target, _, covariance = _correlated_gaussian(dim=3)
    draws = jax.random.multivariate_normal(
        jax.random.key(2), jnp.zeros(3), jnp.asarray(covariance, jnp.float32), (400,)
    )
    result = vi.fit(
        jax.random.key(0), target, family=vi.FullRank(), objective=vi.ForwardKL(vi.Draws(draws))
    )
    best = family.moment_match(result.params, draws)  # the closed-form optimum
    gap = float(vi.kl(best, result.params))
    assert result.stop_reason == "converged" and gap < GAP_TOL
    np.testing.assert_allclose(result.info.gap, gap, atol=3 * float(result.info.gap_stderr) + 1e-3)


@pytest.mark.heavy
def test_renyi_full_rank_fit_and_psis_on_it():
    target, truth, _ = _correlated_gaussian(dim=3)
    result = vi.fit(jax.random.key(0), target, family=vi.FullRank(), objective=vi.Renyi(0.5))
    assert float(vi.kl(result.params, truth)) < 0.05
    estimate = vi.psis(jax.random.key(1), target, result, 4000)
    assert bool(estimate.reliable)
    diagnostics = vi.diagnose(jax.random.key(2), target, result.params)
    np.testing.assert_allclose(diagnostics.reverse_kl, vi.kl(result.params, truth), atol=0.02)


def test_family_errors_are_named():
    target, _, _ = _correlated_gaussian(dim=2)
    with pytest.raises(TypeError, match=r"FixedDraws\(\) fits the mean-field family only"):
        vi.fit(jax.random.key(0), target, method=vi.FixedDraws(), family=vi.FullRank())
    start = vi.FullRank().init(jnp.zeros(2))
    with pytest.raises(ValueError, match="init_params are FullRankParams"):
        vi.fit(jax.random.key(0), target, init_params=start, family=vi.LowRank(1))
    bad = start._replace(off_diag=jnp.zeros((2, 3)))
    with pytest.raises(
        ValueError, match=r"init_params.off_diag has shape \(2, 3\), expected \(2, 2\)"
    ):
        vi.fit(jax.random.key(0), target, init_params=bad)
    with pytest.raises(TypeError, match=r"call it, vi.LowRank\(\)"):
        vi.fit(jax.random.key(0), target, family=vi.LowRank)
