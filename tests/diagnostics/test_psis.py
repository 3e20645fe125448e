"""PSIS against a plain-NumPy reference written from the paper, scipy, and known tail shapes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from vi.diagnostics.psis import (
    fit_generalized_pareto,
    interpret_pareto_k,
    pareto_k_threshold,
    pareto_smooth,
    tail_length,
)

# --- Reference: Vehtari et al. (2024), Sec. 3 and App. A; Zhang & Stephens (2009). ---


def reference_gpd_fit(exceedances, prior_adjusted=True):
    """Zhang-Stephens empirical Bayes, looped as in the paper, plus the PSIS weak prior."""
    x = np.sort(np.asarray(exceedances, np.float64))
    n = len(x)
    m = 30 + int(np.floor(np.sqrt(n)))
    first_quartile = x[int(np.floor(n / 4 + 0.5)) - 1]
    thetas = [
        1 / x[-1] + (1 - np.sqrt(m / (j - 0.5))) / (3 * first_quartile) for j in range(1, m + 1)
    ]
    profile = []
    for theta in thetas:
        k = np.mean(np.log(1 - theta * x))
        profile.append(n * (np.log(-theta / k) - k - 1))
    profile = np.array(profile)
    with np.errstate(over="ignore"):  # 1 / inf = 0: grid point j is negligible
        weights = np.array([1 / np.sum(np.exp(profile - profile[j])) for j in range(m)])
    theta_hat = np.sum(weights * np.array(thetas))
    k = np.mean(np.log(1 - theta_hat * x))
    sigma = -k / theta_hat
    if prior_adjusted:
        k = (n * k + 10 * 0.5) / (n + 10)
    return k, sigma


def reference_psis(log_ratios):
    log_ratios = np.asarray(log_ratios, np.float64)
    num = len(log_ratios)
    num_tail = math.ceil(min(0.2 * num, 3 * math.sqrt(num)))
    order = np.argsort(log_ratios, kind="stable")
    tail = order[-num_tail:]
    log_w = log_ratios - log_ratios.max()
    cutoff = log_w[order[-num_tail - 1]]
    k, sigma = reference_gpd_fit(np.exp(log_w[tail]) - np.exp(cutoff))
    p = (np.arange(1, num_tail + 1) - 0.5) / num_tail
    quantiles = sigma / k * ((1 - p) ** (-k) - 1)
    log_w[tail] = np.minimum(np.log(np.exp(cutoff) + quantiles), 0.0)
    return log_w - special.logsumexp(log_w), k


def gaussian_log_ratios(rng_key, proposal_scale, shape):
    """log N(x; 0, I) - log N(x; 0, s^2 I) summed over the last axis, x ~ N(0, s^2 I)."""
    x = proposal_scale * jax.random.normal(rng_key, shape)
    return jnp.sum(-0.5 * x**2 + 0.5 * (x / proposal_scale) ** 2 + jnp.log(proposal_scale), -1)


def example_log_ratios():
    rng = np.random.default_rng(7)
    x = rng.normal(scale=0.6, size=3000)
    t = stats.t(3).rvs(size=2000, random_state=rng)
    return {
        "narrow_normal": stats.norm.logpdf(x) - stats.norm.logpdf(x, scale=0.6),
        "gpd_0.7": np.log(stats.genpareto(0.7).rvs(size=1000, random_state=rng)),
        "t_vs_normal": stats.norm.logpdf(t) - stats.t(3).logpdf(t),
        "wide_uniform": rng.uniform(-3, 0, size=500),
    }


@pytest.mark.parametrize("name", list(example_log_ratios()))
@pytest.mark.slow
def test_matches_reference(name, dtype):
    log_ratios = example_log_ratios()[name]
    expected_log_w, expected_k = reference_psis(log_ratios)
    result = pareto_smooth(jnp.asarray(log_ratios, dtype))
    assert result.log_weights.dtype == dtype
    if dtype == jnp.float64:
        np.testing.assert_allclose(result.pareto_k, expected_k, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(result.log_weights, expected_log_w, rtol=1e-9, atol=1e-9)
    else:
        # float32 rounds the inputs (~1e-7 relative); k-hat and weights move by about as much.
        np.testing.assert_allclose(result.pareto_k, expected_k, atol=1e-3)
        np.testing.assert_allclose(result.log_weights, expected_log_w, atol=1e-3)


@pytest.mark.parametrize("shape", [-0.2, 0.2, 0.5, 0.8, 1.2])
@pytest.mark.slow
def test_gpd_fit_agrees_with_scipy_mle(shape, x64):
    x = stats.genpareto(shape, scale=2.0).rvs(size=2000, random_state=np.random.default_rng(3))
    fit = fit_generalized_pareto(jnp.asarray(x), prior_adjusted=False)
    mle_shape, _, mle_scale = stats.genpareto.fit(x, floc=0)
    reference_k, reference_sigma = reference_gpd_fit(x, prior_adjusted=False)
    np.testing.assert_allclose(fit.shape, reference_k, rtol=1e-10)
    np.testing.assert_allclose(fit.scale, reference_sigma, rtol=1e-10)
    # Both estimators are efficient: they differ by far less than the sampling
    # error of either, whose asymptotic sds are (1 + k) / sqrt(n) for the shape
    # and sqrt(2 (1 + k) / n) for log sigma.
    shape_se = (1 + shape) / np.sqrt(len(x))
    log_scale_se = np.sqrt(2 * (1 + shape) / len(x))
    assert abs(float(fit.shape) - mle_shape) < 0.5 * shape_se
    assert abs(np.log(float(fit.scale) / mle_scale)) < 0.5 * log_scale_se


@pytest.mark.parametrize("shape", [-0.2, 0.2, 0.5, 0.8, 1.2])
@pytest.mark.slow
def test_recovers_known_tail_shape_over_a_batch(shape, x64):
    num_samples, num_fits = 4000, 200
    ratios = stats.genpareto(shape).rvs(
        size=(num_fits, num_samples), random_state=np.random.default_rng(11)
    )
    k_hat = np.asarray(jax.jit(jax.vmap(pareto_smooth))(jnp.log(ratios)).pareto_k)
    num_tail = tail_length(num_samples)
    # The tail of a GPD above any threshold is a GPD of the same shape; PSIS then
    # shrinks it by its weak prior towards 0.5.
    expected = (num_tail * shape + 10 * 0.5) / (num_tail + 10)
    se = k_hat.std(ddof=1) / np.sqrt(num_fits)
    assert abs(k_hat.mean() - expected) < 5 * se
    # The spread matches the asymptotic sd of the shape MLE, (1 + k) / sqrt(M),
    # scaled by the prior's shrinkage; 25% is 5 standard errors of an sd from 200 fits.
    asymptotic_sd = (1 + shape) / np.sqrt(num_tail) * num_tail / (num_tail + 10)
    assert abs(k_hat.std(ddof=1) / asymptotic_sd - 1) < 0.25


@pytest.mark.parametrize("dim", [1, 5])
@pytest.mark.slow
def test_wider_proposal_gives_small_k(dim, x64):
    log_ratios = gaussian_log_ratios(jax.random.key(1), 1.5, (100, 4000, dim))
    k_hat = jax.vmap(pareto_smooth)(log_ratios).pareto_k
    # Ratios are bounded when q is wider, so the true tail shape is <= 0.
    assert np.all(k_hat < 0.5)
    assert interpret_pareto_k(k_hat.max(), 4000) == "good"


@pytest.mark.parametrize("dim", [1, 5])
@pytest.mark.slow
def test_narrow_proposal_gives_large_k(dim, x64):
    # With q = N(0, s^2) and p = N(0, 1), P(w > t) decays like t^{-1/(1 - s^2)}:
    # the tail shape is 1 - s^2 = 0.91 for s = 0.3, reached slowly as N grows.
    k_hat = np.asarray(
        jax.vmap(pareto_smooth)(
            gaussian_log_ratios(jax.random.key(2), 0.3, (100, 4000, dim))
        ).pareto_k
    )
    assert np.mean(k_hat) > 0.7
    assert np.median(k_hat) > 0.7
    assert interpret_pareto_k(np.median(k_hat), 4000) == "unreliable"
    means = [
        np.mean(
            jax.vmap(pareto_smooth)(
                gaussian_log_ratios(jax.random.key(3), s, (100, 4000, dim))
            ).pareto_k
        )
        for s in (0.8, 0.5, 0.3)
    ]
    assert means[0] < means[1] < means[2]


def test_smoothed_weights_structure(x64):
    log_ratios = jnp.asarray(example_log_ratios()["t_vs_normal"])
    result = pareto_smooth(log_ratios)
    np.testing.assert_allclose(special.logsumexp(result.log_weights), 0.0, atol=1e-12)
    num_tail = tail_length(len(log_ratios))
    order = np.argsort(np.asarray(log_ratios))
    body, tail = order[:-num_tail], order[-num_tail:]
    shift = special.logsumexp(np.asarray(result.log_weights)[body]) - special.logsumexp(
        np.asarray(log_ratios)[body]
    )
    np.testing.assert_allclose(result.log_weights[body], log_ratios[body] + shift, atol=1e-12)
    smoothed_tail = np.asarray(result.log_weights)[tail]
    assert np.all(np.diff(smoothed_tail) >= 0)
    assert smoothed_tail[0] >= np.asarray(result.log_weights)[body].max()
    assert smoothed_tail[-1] <= float(log_ratios.max()) + shift + 1e-12


def test_tail_length():
    # ceil(min(N / 5, 3 sqrt(N))): the N / 5 branch below N = 225, 3 sqrt(N) above.
    assert tail_length(21) == 5
    assert tail_length(100) == 20
    assert tail_length(225) == 45
    assert tail_length(10_000) == 300
    assert tail_length(1001) == math.ceil(3 * math.sqrt(1001))


@pytest.mark.slow
def test_edge_cases(x64):
    constant = pareto_smooth(jnp.zeros(100))
    assert constant.pareto_k == -jnp.inf
    np.testing.assert_allclose(constant.log_weights, -np.log(100))

    with_nan = pareto_smooth(jnp.zeros(100).at[3].set(jnp.nan))
    assert jnp.isnan(with_nan.pareto_k) and jnp.all(jnp.isnan(with_nan.log_weights))
    with_inf = pareto_smooth(jnp.linspace(0.0, 1.0, 100).at[3].set(jnp.inf))
    assert with_inf.pareto_k == jnp.inf and jnp.all(jnp.isnan(with_inf.log_weights))
    all_zero = pareto_smooth(jnp.full(100, -jnp.inf))
    assert jnp.isnan(all_zero.pareto_k)

    # -inf ratios (q's draws where p vanishes) are valid and keep zero weight.
    log_ratios = jnp.asarray(example_log_ratios()["narrow_normal"]).at[:10].set(-jnp.inf)
    result = pareto_smooth(log_ratios)
    assert jnp.isfinite(result.pareto_k)
    assert jnp.all(result.log_weights[:10] == -jnp.inf)
    _, expected_k = reference_psis(np.asarray(log_ratios))
    np.testing.assert_allclose(result.pareto_k, expected_k, rtol=1e-9)

    with pytest.raises(ValueError, match="tail of at least 5"):
        pareto_smooth(jnp.zeros(20))
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        pareto_smooth(jnp.zeros((2, 100)))
    with pytest.raises(ValueError, match="n >= 2"):
        fit_generalized_pareto(jnp.ones(1))


@pytest.mark.slow
def test_integer_input_and_large_offsets(x64):
    log_ratios = jnp.asarray(example_log_ratios()["gpd_0.7"])
    shifted = pareto_smooth(log_ratios + 1e4)
    np.testing.assert_allclose(shifted.pareto_k, pareto_smooth(log_ratios).pareto_k, rtol=1e-6)
    assert jnp.isfinite(pareto_smooth(jnp.arange(100)).pareto_k)


@pytest.mark.slow
def test_vmap_and_outer_jit_match_loop(dtype):
    log_ratios = gaussian_log_ratios(jax.random.key(4), 0.7, (6, 500, 2)).astype(dtype)
    looped = [pareto_smooth(row) for row in log_ratios]
    batched = jax.jit(jax.vmap(pareto_smooth))(log_ratios)
    tol = 1e-4 if dtype == jnp.float32 else 1e-12
    np.testing.assert_allclose(batched.pareto_k, [r.pareto_k for r in looped], rtol=tol, atol=tol)
    np.testing.assert_allclose(
        batched.log_weights, np.stack([r.log_weights for r in looped]), rtol=tol, atol=tol
    )


@pytest.mark.slow
def test_compiles_once_per_shape():
    traces = []

    @jax.jit
    def k_hat(log_ratios):
        traces.append(None)
        return pareto_smooth(log_ratios).pareto_k

    k_hat(jnp.linspace(0.0, 1.0, 200))
    k_hat(jnp.linspace(0.0, 3.0, 200))
    assert len(traces) == 1


def test_threshold_and_interpretation():
    # min(1 - 1 / log10(N), 0.7): 0.5 at N = 100, capped at 0.7 from N = 10^(1/0.3).
    assert pareto_k_threshold(100) == pytest.approx(0.5)
    assert pareto_k_threshold(1000) == pytest.approx(1 - 1 / 3)
    assert pareto_k_threshold(10_000) == 0.7
    assert pareto_k_threshold(1) == -math.inf
    assert interpret_pareto_k(0.3, 10_000) == "good"
    assert interpret_pareto_k(0.6, 10_000) == "ok"
    assert interpret_pareto_k(0.68, 1000) == "needs more samples"
    assert interpret_pareto_k(0.45, 50) == "needs more samples"
    assert interpret_pareto_k(0.75, 10_000) == "unreliable"
    assert interpret_pareto_k(jnp.nan, 10_000) == "unreliable"
    assert interpret_pareto_k(-jnp.inf, 10_000) == "good"
    assert interpret_pareto_k(jnp.inf, 10_000) == "unreliable"
