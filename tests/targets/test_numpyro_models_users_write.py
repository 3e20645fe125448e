"""NumPyro models as people write them: flat priors, constrained sites, init strategies,
handlers, factors and masks; and the sites a Gaussian family cannot fit, refused by name.

References are closed forms (a flat or Gaussian prior with a Gaussian likelihood of known
scale has a Gaussian posterior, which the mean-field fit recovers exactly) or the
constraints' own definitions.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.infer import init_to_feasible, init_to_median, init_to_uniform, init_to_value

import vi

Y = np.random.default_rng(0).normal(1.0, 2.0, size=40)
NOISE = 2.0


def _flat_mean(y):
    b = numpyro.sample("b", dist.ImproperUniform(constraints.real, (), ()))
    numpyro.sample("y", dist.Normal(b, NOISE), obs=y)


def _mean_and_scale(y, noise=None):
    m = numpyro.sample("m", dist.Normal(0.0, 5.0))
    s = numpyro.sample("s", dist.HalfNormal(5.0)) if noise is None else noise
    numpyro.sample("y", dist.Normal(m, s), obs=y)


def _gaussian_posterior(y, prior_sd=np.inf, extra_precision=0.0):
    """Mean and sd of a normal mean with known noise, a N(0, prior_sd^2) prior and an
    extra N(0, 1 / extra_precision) factor."""
    precision = len(y) / NOISE**2 + 1.0 / prior_sd**2 + extra_precision
    return np.sum(y) / NOISE**2 / precision, 1.0 / np.sqrt(precision)


def _fit(x64, target):
    result = vi.fit(jax.random.key(0), target)
    assert result.stop_reason == "converged"
    return result


@pytest.mark.slow
def test_a_flat_prior_fits_to_the_exact_posterior(x64):
    """A model with an ``ImproperUniform`` site starts (it cannot be sampled) and fits."""
    result = _fit(x64, vi.from_numpyro(_flat_mean, Y))
    mean, sd = _gaussian_posterior(Y)
    np.testing.assert_allclose(result.params.loc, [mean], rtol=1e-6)
    np.testing.assert_allclose(jnp.exp(result.params.log_scale), [sd], rtol=1e-6)


@pytest.mark.slow
def test_a_flat_prior_on_a_positive_scale_has_its_jacobian(x64):
    def model(y):
        b = numpyro.sample("b", dist.ImproperUniform(constraints.real, (), ()))
        s = numpyro.sample("s", dist.ImproperUniform(constraints.positive, (), ()))
        numpyro.sample("y", dist.Normal(b, s), obs=y)

    target = vi.from_numpyro(model, Y)
    b, log_s = 0.7, 0.3
    s = np.exp(log_s)
    by_hand = np.sum(-0.5 * ((Y - b) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)) + log_s
    np.testing.assert_allclose(target.logdensity_fn(jnp.array([b, log_s])), by_hand, rtol=1e-10)
    _fit(x64, target)


@pytest.mark.heavy
def test_every_constraint_with_a_bijection_fits_and_samples_inside_it(x64):
    lower, upper = np.array([0.0, 1.0]), np.array([1.0, 5.0])

    def model(y):
        o = numpyro.sample("ordered", dist.ImproperUniform(constraints.ordered_vector, (), (3,)))
        po = numpyro.sample(
            "pos_ordered", dist.ImproperUniform(constraints.positive_ordered_vector, (), (3,))
        )
        numpyro.sample("simplex", dist.Dirichlet(jnp.ones(4)))
        numpyro.sample("corr_chol", dist.LKJCholesky(3, 2.0))
        numpyro.sample("angle", dist.VonMises(0.5, 2.0))
        lb = numpyro.sample("above", dist.ImproperUniform(constraints.greater_than(1.0), (), ()))
        ub = numpyro.sample("below", dist.ImproperUniform(constraints.less_than(1.0), (), ()))
        numpyro.sample("interval", dist.Uniform(lower, upper))
        # Proper densities for the flat sites, as factors.
        numpyro.factor("tie", -0.5 * jnp.sum(o**2) - 0.5 * jnp.sum(po**2) - (lb - 2) ** 2 - ub**2)
        numpyro.sample("y", dist.Normal(o[0], NOISE), obs=y)

    target = vi.from_numpyro(model, Y)
    # ordered 3, positive-ordered 3, simplex 3, corr Cholesky 3, angle, above, below, interval 2.
    assert target.dim == 3 + 3 + 3 + 3 + 1 + 1 + 1 + 2
    draws = _fit(x64, target).sample(jax.random.key(1), 200)
    assert np.all(np.diff(draws["ordered"], axis=-1) > 0)
    assert np.all(np.diff(draws["pos_ordered"], axis=-1) > 0) and np.all(draws["pos_ordered"] > 0)
    np.testing.assert_allclose(draws["simplex"].sum(-1), 1.0, rtol=1e-10)
    assert np.all(draws["simplex"] > 0)
    chol = draws["corr_chol"]
    np.testing.assert_allclose(np.triu(chol, 1), 0.0, atol=0)
    np.testing.assert_allclose(np.sum(chol**2, axis=-1), 1.0, rtol=1e-10)
    assert np.all(np.abs(draws["angle"]) <= np.pi)
    assert np.all(draws["above"] > 1.0) and np.all(draws["below"] < 1.0)
    assert np.all((draws["interval"] > lower) & (draws["interval"] < upper))


@pytest.mark.parametrize(
    "strategy",
    [init_to_median, init_to_median(num_samples=5), init_to_feasible, init_to_uniform(radius=0.5)],
    ids=["median", "median5", "feasible", "uniform0.5"],
)
@pytest.mark.slow
def test_numpyro_init_strategies_start_a_fit_at_the_same_optimum(x64, strategy):
    default = _fit(x64, vi.from_numpyro(_mean_and_scale, Y))
    result = _fit(x64, vi.from_numpyro(_mean_and_scale, Y, init_strategy=strategy))
    np.testing.assert_allclose(result.params.loc, default.params.loc, atol=1e-4)
    np.testing.assert_allclose(result.params.log_scale, default.params.log_scale, atol=1e-4)


@pytest.mark.slow
def test_init_to_value_starts_where_it_is_told(x64):
    target = vi.from_numpyro(_mean_and_scale, Y, init_strategy=init_to_value(values={"m": 1.5}))
    assert float(target.init_position[0]) == 1.5  # sites in name order: m, then log s


@pytest.mark.heavy
def test_condition_fixes_a_site_and_factor_adds_to_the_density(x64):
    conditioned = vi.from_numpyro(handlers.condition(_mean_and_scale, {"s": NOISE}), Y)
    assert conditioned.dim == 1
    mean, sd = _gaussian_posterior(Y, prior_sd=5.0)
    result = _fit(x64, conditioned)
    np.testing.assert_allclose(result.params.loc, [mean], rtol=1e-6)
    np.testing.assert_allclose(jnp.exp(result.params.log_scale), [sd], rtol=1e-6)

    def factor_on_m(y):
        m = numpyro.sample("m", dist.Normal(0.0, 5.0))
        numpyro.factor("shrink", -0.5 * 3.0 * m**2)
        numpyro.sample("y", dist.Normal(m, NOISE), obs=y)

    mean, sd = _gaussian_posterior(Y, prior_sd=5.0, extra_precision=3.0)
    result = _fit(x64, vi.from_numpyro(factor_on_m, Y))
    np.testing.assert_allclose(result.params.loc, [mean], rtol=1e-6)
    np.testing.assert_allclose(jnp.exp(result.params.log_scale), [sd], rtol=1e-6)


@pytest.mark.slow
def test_a_masked_likelihood_counts_only_the_kept_rows(x64):
    keep = np.arange(len(Y)) % 3 != 0

    def model(y):
        m = numpyro.sample("m", dist.Normal(0.0, 5.0))
        with handlers.mask(mask=keep):
            numpyro.sample("y", dist.Normal(m, NOISE), obs=y)

    mean, sd = _gaussian_posterior(Y[keep], prior_sd=5.0)
    result = _fit(x64, vi.from_numpyro(model, Y))
    np.testing.assert_allclose(result.params.loc, [mean], rtol=1e-6)
    np.testing.assert_allclose(jnp.exp(result.params.log_scale), [sd], rtol=1e-6)


def _missing(y, mask):
    m = numpyro.sample("m", dist.Normal(0.0, 5.0))
    numpyro.sample("y", dist.Normal(m, NOISE).expand([y.shape[0]]), obs=y, obs_mask=mask)


@pytest.mark.slow
def test_missing_data_is_imputed_and_the_observed_entries_are_pinned(x64):
    """``obs_mask``: the fit is over the mean and the missing entries only. The posterior is
    Gaussian: the mean's marginal is the posterior given the observed entries, each missing
    entry has the mean's mean, and the mean-field optimum's variances are the inverse
    diagonal of the precision (the missing entries count for the mean's precision too)."""
    mask = np.arange(len(Y)) % 3 != 0
    y = np.where(mask, Y, 0.0)
    target = vi.from_numpyro(_missing, y, mask)
    assert target.dim == 1 + np.sum(~mask)
    result = _fit(x64, target)
    mean, _ = _gaussian_posterior(Y[mask], prior_sd=5.0)
    np.testing.assert_allclose(result.params.loc, mean, rtol=1e-6)
    precision_m = len(Y) / NOISE**2 + 1 / 25.0
    scales = np.r_[1 / np.sqrt(precision_m), np.full(np.sum(~mask), NOISE)]
    np.testing.assert_allclose(jnp.exp(result.params.log_scale), scales, rtol=1e-6)
    draws = result.sample(jax.random.key(1), 500)
    assert draws["y"].shape == (500, len(Y))
    np.testing.assert_array_equal(draws["y"][:, mask], np.broadcast_to(Y[mask], (500, mask.sum())))
    assert np.all(np.std(draws["y"][:, ~mask], axis=0) > 1.0)


@pytest.mark.heavy
def test_missing_positive_data_are_imputed_inside_their_support(x64):
    def model(y, mask):
        rate = numpyro.sample("rate", dist.Gamma(2.0, 2.0))
        numpyro.sample("y", dist.Exponential(rate).expand([y.shape[0]]), obs=y, obs_mask=mask)

    y = np.random.default_rng(1).exponential(0.5, size=30)
    mask = np.arange(30) % 4 != 0
    target = vi.from_numpyro(model, np.where(mask, y, 1.0), mask)
    assert target.dim == 1 + np.sum(~mask)
    result = vi.fit(jax.random.key(0), target)
    assert result.stop_reason == "converged"
    draws = result.sample(jax.random.key(1), 200)
    assert np.all(draws["y"][:, ~mask] > 0)
    np.testing.assert_array_equal(draws["y"][:, mask], np.broadcast_to(y[mask], (200, mask.sum())))
    # The rate's posterior given the observed entries is Gamma(2 + n, 2 + sum y).
    shape, rate = 2 + mask.sum(), 2 + y[mask].sum()
    np.testing.assert_allclose(np.mean(draws["rate"]), shape / rate, rtol=0.05)


@pytest.mark.slow
def test_a_latent_site_under_a_mask_fits_its_kept_entries_only(x64):
    keep = np.array([True, False, True, False])

    def model():
        with handlers.mask(mask=keep):
            numpyro.sample("z", dist.Normal(jnp.arange(4.0), 0.5))

    target = vi.from_numpyro(model)
    assert target.dim == 2
    result = _fit(x64, target)
    np.testing.assert_allclose(result.params.loc, [0.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(jnp.exp(result.params.log_scale), [0.5, 0.5], rtol=1e-6)


@pytest.mark.heavy
def test_datasets_with_other_missing_entries_stack_into_one_batch(x64):
    """The kept indices are data: two masks with as many missing entries batch together,
    and each member fits its own dataset as a single fit does."""
    masks = [np.arange(len(Y)) % 3 != 0, np.roll(np.arange(len(Y)) % 3 != 0, 1)]
    targets = [vi.from_numpyro(_missing, np.where(m, Y, 0.0), m) for m in masks]
    batch = vi.fit_batch(
        jax.random.split(jax.random.key(0), 2), vi.stack_targets(targets), batched_target=True
    )
    for i, target in enumerate(targets):
        single = vi.fit(jax.random.key(0), target)
        np.testing.assert_allclose(batch.params.loc[i], single.params.loc, rtol=1e-6)


def _discrete(y):
    k = numpyro.sample("k", dist.Bernoulli(0.5))
    numpyro.sample("y", dist.Normal(k, NOISE), obs=y)


def _param(y):
    s = numpyro.param("s", 1.0, constraint=constraints.positive)
    m = numpyro.sample("m", dist.Normal(0.0, 5.0))
    numpyro.sample("y", dist.Normal(m, s), obs=y)


def _mutable(y):
    numpyro.primitives.mutable("calls", {"n": 0})
    _mean_and_scale(y, noise=NOISE)


@pytest.mark.parametrize(
    "model, message",
    [
        (_discrete, r"discrete latent sites \['k'\].*marginalise"),
        (_param, r"numpyro.param sites \['s'\].*give each a prior"),
        (_mutable, r"numpyro.mutable sites \['calls'\].*argument"),
    ],
    ids=["discrete", "param", "mutable"],
)
def test_sites_a_gaussian_cannot_fit_are_named_with_a_cure(model, message):
    with pytest.raises(ValueError, match=message):
        vi.from_numpyro(model, Y)
