"""The Rényi and importance-weighted bounds against the Gaussian closed form.

For q = N(m, diag s²) and p = Z · N(μ, Σ), the Rényi divergence of order α has a closed
form (Gil, Alajaji & Linder 2013, "Rényi divergence measures for commonly used univariate
continuous distributions"; the multivariate case): with Σ_α = α Σ + (1 - α) diag s²,

    D_α(q || p) = α/2 (m - μ)ᵀ Σ_α⁻¹ (m - μ) - 1 / (2 (α - 1)) log(|Σ_α| / (|S|^(1-α) |Σ|^α)),

and the bound is ``L_α = log Z - D_α``. The K-draw estimators are biased for finite K,
so the checks of their values use K large enough that the bias is far under the
tolerance, or compare estimators on the same draws.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.scipy.optimize import minimize

import vi
from vi.families.mean_field import MeanFieldParams
from vi.objectives import elbo_from_draws, renyi_bound_from_draws
from vi.objectives.renyi import renyi_from_target_draws

MU = np.array([0.5, -1.0])
SIGMA = np.array([[1.0, 0.6], [0.6, 2.0]])
LOG_Z = 1.7


def _logdensity(x):
    d = x - MU
    log_norm = -0.5 * np.linalg.slogdet(2 * np.pi * SIGMA)[1]
    return LOG_Z + log_norm - 0.5 * d @ jnp.linalg.solve(SIGMA, d)


def _closed_form_bound(params, alpha):
    m, s2 = params.loc, jnp.exp(2 * params.log_scale)
    if alpha == 1:
        return LOG_Z - vi.kl(
            vi.DiagNormal(m, params.log_scale), vi.MultivariateNormal(MU, np.linalg.cholesky(SIGMA))
        )
    sigma_a = alpha * SIGMA + (1 - alpha) * jnp.diag(s2)
    d = m - MU
    quad = 0.5 * alpha * d @ jnp.linalg.solve(sigma_a, d)
    log_dets = (
        jnp.linalg.slogdet(sigma_a)[1]
        - (1 - alpha) * jnp.sum(jnp.log(s2))
        - alpha * np.linalg.slogdet(SIGMA)[1]
    )
    return LOG_Z - (quad - log_dets / (2 * (alpha - 1)))


Q = MeanFieldParams(np.array([0.3, -0.6]), np.log(np.array([0.9, 1.2])))


@pytest.mark.parametrize("alpha", [0.0, 0.5, 2.0])
@pytest.mark.slow
def test_the_bound_from_many_draws_is_the_closed_form(x64, alpha):
    """One group of 10^6 draws: the estimator's bias, about its variance over 2 K, is
    far under the tolerance, which is four delta-method standard errors."""
    eps = jax.random.normal(jax.random.key(0), (1, 1_000_000, 2))
    estimate = renyi_bound_from_draws(Q, _logdensity, eps, alpha)
    x = Q.loc + jnp.exp(Q.log_scale) * eps[0]
    log_w = jax.vmap(_logdensity)(x) - vi.DiagNormal(*Q).log_prob(x)
    u = jnp.exp((1 - alpha) * (log_w - jnp.max(log_w)))
    stderr = jnp.std(u) / jnp.mean(u) / jnp.sqrt(u.size) / abs(1 - alpha)
    assert abs(estimate.value - _closed_form_bound(Q, alpha)) < 4 * stderr + 1e-9
    assert stderr < 0.01


@pytest.mark.slow
def test_order_one_is_the_elbo_and_its_limit(x64):
    """At α = 1 the estimate is the mean log weight: the ELBO estimated with log q at the
    draws, as sticking the landing estimates it."""
    eps = jax.random.normal(jax.random.key(1), (1, 256, 2))
    elbo = elbo_from_draws(Q, _logdensity, eps[0], stick_the_landing=True).value
    at_one = renyi_bound_from_draws(Q, _logdensity, eps, 1.0).value
    np.testing.assert_allclose(at_one, elbo, rtol=1e-12)
    for delta in (1e-3, -1e-3):
        near = renyi_bound_from_draws(Q, _logdensity, eps, 1.0 + delta).value
        assert abs(near - elbo) < 2e-3
        assert abs(near - elbo) > 0  # a limit, not a special case


@pytest.mark.slow
def test_the_bound_decreases_in_alpha_and_iw_tightens_with_k(x64):
    """L_α is non-increasing in α (Li & Turner 2016, Theorem 1), and the expected
    importance-weighted bound rises with K towards log Z (Burda et al. 2016): checked on
    the closed form and on 4,000 groups of each K."""
    alphas = [0.0, 0.5, 1.0, 2.0]
    closed = [float(_closed_form_bound(Q, a)) for a in alphas]
    assert closed[0] == pytest.approx(LOG_Z, abs=1e-12)
    assert all(a > b for a, b in itertools.pairwise(closed))
    means = []
    for k in (1, 8, 64):
        eps = jax.random.normal(jax.random.key(k), (4000, k, 2))
        est = renyi_bound_from_draws(Q, _logdensity, eps, 0.0)
        means.append((float(est.value), float(est.stderr)))
    (v1, s1), (v8, s8), (v64, s64) = means
    assert v1 + 3 * np.hypot(s1, s8) < v8 < v64 - 3 * np.hypot(s8, s64)
    assert v64 < LOG_Z + 3 * s64


@pytest.mark.slow
def test_importance_weighted_is_renyi_of_order_zero(x64):
    target = vi.from_logdensity(_logdensity, jnp.zeros(2))
    eps = jax.random.normal(jax.random.key(2), (4, 8, 2))
    iw = vi.ImportanceWeighted(8)._bound(Q, target.logdensity_fn, eps)
    renyi = vi.Renyi(0.0, num_particles=8)._bound(Q, target.logdensity_fn, eps)
    np.testing.assert_allclose(iw.value, renyi.value, rtol=1e-12)


@pytest.mark.slow
def test_the_doubly_reparameterised_gradient_has_the_same_mean_and_less_noise(x64):
    """DReG (Tucker et al. 2019) is unbiased for the importance-weighted bound's gradient:
    its mean over 2,000 groups matches the plain gradient's within their standard errors,
    and at K = 64 its spread is several times smaller."""
    k, groups = 64, 2000
    eps = jax.random.normal(jax.random.key(3), (groups, 1, k, 2))

    def grads(dreg):
        one = lambda e: jax.grad(
            lambda p: (
                renyi_bound_from_draws(p, _logdensity, e, 0.0, doubly_reparameterised=dreg).value
            )
        )(Q)
        g = jax.lax.map(one, eps)
        return jnp.concatenate([g.loc, g.log_scale], axis=1)

    plain, dreg = grads(False), grads(True)
    se = np.sqrt((plain.var(0) + dreg.var(0)) / groups)
    assert np.all(np.abs(plain.mean(0) - dreg.mean(0)) < 4 * se)
    assert np.all(dreg.std(0) < 0.5 * plain.std(0))


def _sample(rng_key, num_samples):
    return MU + jax.random.normal(rng_key, (num_samples, 2)) @ np.linalg.cholesky(SIGMA).T


WIDE = MeanFieldParams(np.array([0.3, -0.6]), np.log(np.array([1.3, 1.6])))
"""Below 0 the bound is finite only for a q wide enough (``α Σ + (1 - α) S`` positive
definite), and its estimator's variance only for a q wider still."""


def _covering_closed_form(params, alpha):
    """``log Z + D_{1-α}(p || q)`` for α < 0, from ``D_α(q || p) = α / (1 - α) D_{1-α}(p || q)``."""
    return LOG_Z + (1 - alpha) / alpha * (LOG_Z - _closed_form_bound(params, alpha))


@pytest.mark.parametrize("alpha", [-0.5, -1.0])
@pytest.mark.slow
def test_below_zero_the_estimate_from_target_draws_is_the_closed_form(x64, alpha):
    x = _sample(jax.random.key(4), 1_000_000)[None]
    log_p = jax.vmap(_logdensity)(x[0])[None]
    estimate = renyi_from_target_draws(WIDE, log_p, x, alpha)
    log_w = log_p[0] - vi.DiagNormal(*WIDE).log_prob(x[0])
    u = jnp.exp(-alpha * (log_w - jnp.max(log_w)))
    stderr = jnp.std(u) / jnp.mean(u) / jnp.sqrt(u.size) / abs(alpha)
    assert abs(estimate.value - _covering_closed_form(WIDE, alpha)) < 4 * stderr + 1e-9
    assert stderr < 0.01


@pytest.mark.slow
def test_below_zero_the_bound_is_above_log_z_and_one_draw_is_the_forward_kl(x64):
    """L_α ≥ log Z below 0 and keeps rising as α falls (the closed form); with K = 1 the
    estimate is ``E_p[log p - log q]``, the forward KL plus log Z, value and gradient."""
    closed = [float(_closed_form_bound(WIDE, a)) for a in (-2.0, -1.0, -0.5)]
    assert closed[0] > closed[1] > closed[2] > LOG_Z
    x = _sample(jax.random.key(5), 64).reshape(64, 1, 2)
    log_p = jax.vmap(_logdensity)(x[:, 0])[:, None]
    one = lambda p: renyi_from_target_draws(p, log_p, x, -1.0).value
    forward = lambda p: jnp.mean(log_p[:, 0] - vi.DiagNormal(*p).log_prob(x[:, 0]))
    np.testing.assert_allclose(one(Q), forward(Q), rtol=1e-12)
    grads = zip(
        jax.tree.leaves(jax.grad(one)(Q)), jax.tree.leaves(jax.grad(forward)(Q)), strict=True
    )
    for a, b in grads:
        np.testing.assert_allclose(a, b, rtol=1e-10)


def _covering_optimum(alpha):
    """The mean-field minimum of the exact upper bound, by BFGS from the marginals, widened
    (the bound is finite only where q is wide enough)."""
    loss = lambda theta: _closed_form_bound(MeanFieldParams(theta[:2], theta[2:]), alpha)
    start = jnp.concatenate([MU, 0.5 * jnp.log(jnp.diag(SIGMA)) + 0.3])
    result = minimize(loss, start, method="BFGS", tol=1e-10)
    assert result.success
    return result.x


@pytest.mark.parametrize(
    "alpha, pool",
    [(-1.0, False), pytest.param(-0.5, True, marks=pytest.mark.heavy)],
)
@pytest.mark.slow
def test_a_fit_below_zero_covers_past_the_marginals_at_the_closed_form_optimum(x64, alpha, pool):
    """Below 0 a mean-field q is wider than p's marginals (D_{1+|α|}(p || q) punishes
    every draw of p that q covers thinly); with 64 draws per group the fit lands within 2%
    of the exact bound's optimum, from fresh draws of p or from a pool, and says
    converged."""
    expected = _covering_optimum(alpha)
    assert np.all(np.exp(expected[2:]) > np.sqrt(np.diag(SIGMA)))
    target = vi.targets.Target(_logdensity, jnp.zeros(2), sample_fn=_sample)
    estimator = vi.Draws(_sample(jax.random.key(6), 20_000)) if pool else None
    objective = vi.Renyi(alpha, num_particles=64, estimator=estimator)
    result = vi.fit(jax.random.key(0), target, objective=objective)
    assert result.stop_reason == "converged"
    sd = np.sqrt(np.diag(SIGMA))
    np.testing.assert_allclose(result.params.loc, expected[:2], atol=0.05 * sd.max())
    np.testing.assert_allclose(result.params.log_scale, expected[2:], atol=0.02)


def _closed_form_optimum(alpha):
    """The mean-field optimum of the exact bound, by BFGS from the ELBO's (closed form:
    the means, and the conditional sds)."""
    loss = lambda theta: -_closed_form_bound(MeanFieldParams(theta[:2], theta[2:]), alpha)
    start = jnp.concatenate([MU, -0.5 * jnp.log(jnp.diag(jnp.linalg.inv(SIGMA)))])
    result = minimize(loss, start, method="BFGS", tol=1e-10)
    assert result.success
    return result.x


@pytest.mark.heavy
@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_a_fit_lands_on_the_closed_form_optimum(x64, alpha):
    """With 256 particles the expected bound's optimum is within a few percent of the
    exact bound's (mean-field over a correlated Gaussian: q is narrower than p, more so
    as α grows); the fit lands there and says converged."""
    expected = _closed_form_optimum(alpha)
    target = vi.from_logdensity(_logdensity, jnp.zeros(2))
    result = vi.fit(jax.random.key(0), target, objective=vi.Renyi(alpha, num_particles=256))
    assert result.stop_reason == "converged"
    sd = np.sqrt(np.diag(SIGMA))
    np.testing.assert_allclose(result.params.loc, expected[:2], atol=0.05 * sd.max())
    np.testing.assert_allclose(result.params.log_scale, expected[2:], atol=0.05)


@pytest.mark.heavy
def test_alpha_orders_the_widths_between_reverse_kl_and_the_marginals(x64):
    """On a correlated Gaussian, reverse KL's mean-field scales are the conditional sds; a
    smaller α widens q towards the marginal sds (closed form)."""
    widths = [np.exp(_closed_form_optimum(a)[2:]) for a in (2.0, 1.0, 0.5, 0.1)]
    for narrow, wide in itertools.pairwise(widths):
        assert np.all(narrow < wide)
    assert np.all(widths[-1] < np.sqrt(np.diag(SIGMA)))
    conditional = 1 / np.sqrt(np.diag(np.linalg.inv(SIGMA)))
    np.testing.assert_allclose(widths[1], conditional, rtol=1e-5)


@pytest.mark.slow
def test_the_step_api_and_a_batch_agree_with_fit():
    target = vi.from_logdensity(lambda x: -0.5 * jnp.sum((x - 1.0) ** 2), jnp.zeros(2))
    objective = vi.ImportanceWeighted(4, doubly_reparameterised=True)
    method = vi.Stochastic(optimizer=optax.adam(0.05), num_samples=8, stopping=None, max_steps=300)
    state = method.init(jax.random.key(0), target, objective=objective)
    step = jax.jit(method.step)
    for i in range(300):
        state, _info = step(jax.random.fold_in(jax.random.key(1), i), state)
    assert np.all(np.abs(state.params.loc - 1.0) < 0.2)
    keys = jax.random.split(jax.random.key(2), 3)
    batch = vi.fit_batch(keys, target, method=method, objective=objective)
    for i, key in enumerate(keys):
        single = vi.fit(key, target, method=method, objective=objective)
        np.testing.assert_allclose(batch.params.loc[i], single.params.loc, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: vi.Renyi(float("-inf")), r"alpha must be a finite number, got -inf"),
        (lambda: vi.Renyi(float("nan")), r"alpha must be a finite number"),
        (lambda: vi.Renyi("0.5"), r"alpha must be a finite number, got '0.5'"),
        (lambda: vi.Renyi(0.5, estimator=vi.Exact()), r"estimator=.*for alpha < 0 only"),
        (lambda: vi.ImportanceWeighted(0), r"num_particles must be an integer >= 1, got 0"),
        (lambda: vi.Renyi(0.5, num_particles=2.0), r"num_particles must be an integer"),
    ],
)
def test_bad_options_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_below_zero_self_normalised_draws_of_q_are_refused_with_the_reason():
    with pytest.raises(TypeError, match=r"takes vi.Exact\(\) or vi.Draws\(draws\), got SNIS"):
        vi.Renyi(-1.0, estimator=vi.SNIS())


def test_combinations_that_cannot_run_are_named():
    target = vi.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))
    key = jax.random.key(0)
    with pytest.raises(
        ValueError, match=r"num_samples=12\) must be a multiple of.*num_particles=8"
    ):
        vi.fit(key, target, objective=vi.Renyi(0.5), method=vi.Stochastic(num_samples=12))
    with pytest.raises(ValueError, match=r"stick_the_landing=True\) is for vi.ReverseKL"):
        vi.fit(
            key,
            target,
            objective=vi.ImportanceWeighted(),
            method=vi.Stochastic(stick_the_landing=True),
        )
    with pytest.raises(TypeError, match=r"FixedDraws\(\) fits vi.ReverseKL\(\) only"):
        vi.fit(key, target, objective=vi.Renyi(0.5), method=vi.FixedDraws())
    with pytest.raises(ValueError, match=r"Renyi\(alpha=-1.0\) needs draws of the target.*Draws"):
        vi.fit(key, target, objective=vi.Renyi(-1.0))
    with pytest.raises(ValueError, match=r"draws must have shape \(N, 2\).*got \(10, 3\)"):
        vi.fit(key, target, objective=vi.Renyi(-1.0, estimator=vi.Draws(jnp.zeros((10, 3)))))
