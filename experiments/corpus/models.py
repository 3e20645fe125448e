"""A corpus of real-world-shaped NumPyro models, each with small fixed-seed data.

The models are written the way applied work writes them, Stan translations included:
flat priors (``dist.ImproperUniform``) on coefficients and bounded scales, weak priors,
centred and non-centred hierarchies, GLMs, time series, an ordered mixture, a latent
Gaussian process, and simplex, correlation-Cholesky, positive and interval sites. Every
model's data comes from ``numpy.random.default_rng`` with a fixed seed, a few kB each
(``experiments/corpus/data.py``).

``CORPUS`` maps a name to a ``Case``; ``experiments/corpus/make_references.py`` stores
each one's mean-field optimum and NUTS moments in ``references/<name>.json``.

Examples:
  >>> import vi
  >>> case = CORPUS["eight_schools_noncentred"]
  >>> vi.from_numpyro(case.model, *case.args, **case.kwargs).dim
  10
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from experiments import models as reference_models
from experiments.corpus import data


class Case(NamedTuple):
    """One model of the corpus with its data.

    Attributes:
      model: the NumPyro model.
      args: its positional arguments (numpy arrays, Python scalars).
      kwargs: its keyword arguments (the observations).
      fast: among the quickest to compile and fit with ``vi.fit``'s defaults: the tests fit
        these in every run, the others as ``heavy``.
      note: what the model is and what makes it interesting.
    """

    model: Callable
    args: tuple
    kwargs: dict[str, Any]
    fast: bool
    note: str


def flat(support=constraints.real, shape=()):
    """A flat prior on ``support`` (Stan's default for a parameter without a prior)."""
    return dist.ImproperUniform(support, (), shape)


# Regression ---------------------------------------------------------------------------


def linear_regression_flat(X, y=None):
    alpha = numpyro.sample("alpha", flat())
    beta = numpyro.sample("beta", flat(shape=(X.shape[1],)))
    sigma = numpyro.sample("sigma", flat(constraints.positive))
    numpyro.sample("y", dist.Normal(alpha + X @ beta, sigma), obs=y)


def linear_regression_weak(X, y=None):
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 100.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.Exponential(0.2))
    numpyro.sample("y", dist.Normal(alpha + X @ beta, sigma), obs=y)


def robust_regression(x, y=None):
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", flat(constraints.interval(0.0, 100.0)))
    nu = numpyro.sample("nu", dist.Gamma(2.0, 0.1))
    numpyro.sample("y", dist.StudentT(nu, alpha + beta * x, sigma), obs=y)


# Generalised linear models ------------------------------------------------------------


def logistic_regression(X, y=None):
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 2.5))
    beta = numpyro.sample("beta", dist.Normal(0.0, 2.5).expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Bernoulli(logits=alpha + X @ beta), obs=y)


def poisson_offset(X, log_exposure, y=None):
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 5.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Poisson(jnp.exp(log_exposure + alpha + X @ beta)), obs=y)


def negative_binomial(X, y=None):
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 5.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 2.0).expand([X.shape[1]]).to_event(1))
    inv_phi = numpyro.sample("inv_phi", dist.Exponential(1.0))
    mean = jnp.exp(alpha + X @ beta)
    numpyro.sample("y", dist.NegativeBinomial2(mean, 1.0 / inv_phi), obs=y)


def weibull_censored(x, t, censored):
    """Survival times, right-censored at ``t`` where ``censored``: the log survival adds."""
    beta0 = numpyro.sample("beta0", dist.Normal(0.0, 5.0))
    beta1 = numpyro.sample("beta1", dist.Normal(0.0, 2.0))
    shape = numpyro.sample("shape", dist.Gamma(2.0, 1.0))
    scale = jnp.exp(beta0 + beta1 * x)
    numpyro.sample("t", dist.Weibull(scale, shape).mask(~censored), obs=t)
    numpyro.factor("censored", jnp.sum(jnp.where(censored, -((t / scale) ** shape), 0.0)))


# Hierarchical models ------------------------------------------------------------------


def radon_intercepts(county, floor, num_counties, y=None):
    """Varying intercepts by county (centred), a common floor effect, a flat bounded noise."""
    mu_a = numpyro.sample("mu_a", dist.Normal(0.0, 10.0))
    sigma_a = numpyro.sample("sigma_a", dist.HalfNormal(1.0))
    b = numpyro.sample("b", dist.Normal(0.0, 10.0))
    sigma_y = numpyro.sample("sigma_y", flat(constraints.interval(0.0, 100.0)))
    with numpyro.plate("county", num_counties):
        a = numpyro.sample("a", dist.Normal(mu_a, sigma_a))
    numpyro.sample("y", dist.Normal(a[county] + b * floor, sigma_y), obs=y)


def radon_slopes(county, floor, uranium, y=None):
    """Varying intercepts (with a county-level predictor) and slopes, non-centred."""
    num_counties = uranium.shape[0]
    mu_a = numpyro.sample("mu_a", dist.Normal(0.0, 10.0))
    gamma = numpyro.sample("gamma", dist.Normal(0.0, 5.0))
    mu_b = numpyro.sample("mu_b", dist.Normal(0.0, 5.0))
    sigma_a = numpyro.sample("sigma_a", dist.HalfNormal(1.0))
    sigma_b = numpyro.sample("sigma_b", dist.HalfNormal(1.0))
    sigma_y = numpyro.sample("sigma_y", dist.HalfNormal(2.0))
    with numpyro.plate("county", num_counties):
        z_a = numpyro.sample("z_a", dist.Normal(0.0, 1.0))
        z_b = numpyro.sample("z_b", dist.Normal(0.0, 1.0))
    a = mu_a + gamma * uranium + sigma_a * z_a
    b = mu_b + sigma_b * z_b
    numpyro.sample("y", dist.Normal(a[county] + b[county] * floor, sigma_y), obs=y)


def hierarchical_logistic(group, x, num_groups, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 2.0))
    with numpyro.plate("group", num_groups):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Bernoulli(logits=mu + sigma * z[group] + beta * x), obs=y)


def beta_binomial_rates(trials, y=None):
    """Rats-style rates: theta_j ~ Beta(phi kappa, (1 - phi) kappa), phi in (0, 1), kappa > 1."""
    phi = numpyro.sample("phi", flat(constraints.unit_interval))
    kappa = numpyro.sample("kappa", dist.Pareto(1.0, 1.5))
    with numpyro.plate("group", trials.shape[0]):
        theta = numpyro.sample("theta", dist.Beta(phi * kappa, (1.0 - phi) * kappa))
        numpyro.sample("y", dist.Binomial(trials, theta), obs=y)


def rasch(student, item, num_students, num_items, y=None):
    mu_b = numpyro.sample("mu_b", dist.Normal(0.0, 5.0))
    sigma_b = numpyro.sample("sigma_b", dist.HalfNormal(2.0))
    with numpyro.plate("students", num_students):
        ability = numpyro.sample("ability", dist.Normal(0.0, 1.0))
    with numpyro.plate("items", num_items):
        difficulty = numpyro.sample("difficulty", dist.Normal(mu_b, sigma_b))
    numpyro.sample("y", dist.Bernoulli(logits=ability[student] - difficulty[item]), obs=y)


# Time series --------------------------------------------------------------------------


def ar1_flat(y):
    alpha = numpyro.sample("alpha", flat())
    beta = numpyro.sample("beta", flat())
    sigma = numpyro.sample("sigma", flat(constraints.positive))
    numpyro.sample("y", dist.Normal(alpha + beta * y[:-1], sigma), obs=y[1:])


def ar2(y):
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 5.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    mean = alpha + beta[0] * y[1:-1] + beta[1] * y[:-2]
    numpyro.sample("y", dist.Normal(mean, sigma), obs=y[2:])


def garch11(r, sigma1):
    """GARCH(1, 1) as in Stan's manual, flat priors, ``beta1`` in ``(0, 1 - alpha1)``."""
    mu = numpyro.sample("mu", flat())
    alpha0 = numpyro.sample("alpha0", flat(constraints.positive))
    alpha1 = numpyro.sample("alpha1", flat(constraints.unit_interval))
    beta1 = numpyro.sample("beta1", flat(constraints.interval(0.0, 1.0 - alpha1)))

    def variance(previous, r_previous):
        current = alpha0 + alpha1 * (r_previous - mu) ** 2 + beta1 * previous
        return current, current

    _, variances = jax.lax.scan(variance, sigma1**2, r[:-1])
    scale = jnp.sqrt(jnp.concatenate([jnp.reshape(sigma1**2, (1,)), variances]))
    numpyro.sample("r", dist.Normal(mu, scale), obs=r)


def stochastic_volatility(y):
    """Stan's manual, non-centred: h_t = mu + phi (h_{t-1} - mu) + sigma z_t."""
    mu = numpyro.sample("mu", dist.Cauchy(0.0, 10.0))
    phi = numpyro.sample("phi", dist.Uniform(-1.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(5.0))
    z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([y.shape[0]]).to_event(1))
    first = z[0] * sigma / jnp.sqrt(1.0 - phi**2)

    def step(previous, z_t):
        current = phi * previous + sigma * z_t
        return current, current

    _, rest = jax.lax.scan(step, first, z[1:])
    h = mu + jnp.concatenate([first[None], rest])
    numpyro.sample("y", dist.Normal(0.0, jnp.exp(h / 2.0)), obs=y)


def change_point(counts, rate_early, rate_late):
    """Disaster counts with a rate change at an unknown year, the year summed out."""
    early = numpyro.sample("early", dist.Exponential(rate_early))
    late = numpyro.sample("late", dist.Exponential(rate_late))
    before = jnp.concatenate([jnp.zeros(1), jnp.cumsum(dist.Poisson(early).log_prob(counts))])
    after_all = jnp.cumsum(dist.Poisson(late).log_prob(counts))
    after = after_all[-1] - jnp.concatenate([jnp.zeros(1), after_all])
    log_joint = before[:-1] + after[:-1] - jnp.log(counts.shape[0])
    numpyro.factor("switch", jax.nn.logsumexp(log_joint))


# Mixtures, latent GP, constrained sites -----------------------------------------------


def mixture2_ordered(y=None):
    """Stan's ``ordered[2] mu; mu ~ normal(0, 10)``: a flat ordered site plus a prior term."""
    mu = numpyro.sample("mu", flat(constraints.ordered_vector, (2,)))
    numpyro.factor("mu_prior", jnp.sum(dist.Normal(0.0, 10.0).log_prob(mu)))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
    theta = numpyro.sample("theta", flat(constraints.unit_interval))
    weights = jnp.stack([theta, 1.0 - theta])
    mix = dist.MixtureSameFamily(dist.Categorical(weights), dist.Normal(mu, sigma))
    numpyro.sample("y", mix, obs=y)


def mixture3_ordered(y=None):
    ordered = dist.transforms.OrderedTransform()
    mu = numpyro.sample(
        "mu", dist.TransformedDistribution(dist.Normal(0.0, 5.0).expand([3]).to_event(1), ordered)
    )
    weights = numpyro.sample("weights", dist.Dirichlet(jnp.full(3, 2.0)))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    mix = dist.MixtureSameFamily(dist.Categorical(weights), dist.Normal(mu, sigma))
    numpyro.sample("y", mix, obs=y)


def gp_poisson(x, y=None):
    """Counts with a latent squared-exponential GP log rate, non-centred (f = m + L z)."""
    lengthscale = numpyro.sample("lengthscale", dist.InverseGamma(5.0, 5.0))
    amplitude = numpyro.sample("amplitude", dist.HalfNormal(1.0))
    m = numpyro.sample("m", dist.Normal(0.0, 2.0))
    z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[0]]).to_event(1))
    d2 = (x[:, None] - x[None, :]) ** 2
    K = amplitude**2 * jnp.exp(-0.5 * d2 / lengthscale**2) + 1e-6 * jnp.eye(x.shape[0])
    f = m + jnp.linalg.cholesky(K) @ z
    numpyro.sample("y", dist.Poisson(jnp.exp(f)), obs=y)


def simplex_multinomial(totals, y):
    p = numpyro.sample("p", dist.Dirichlet(jnp.full(y.shape[-1], 2.0)))
    numpyro.sample("y", dist.Multinomial(totals, p), obs=y)


def lkj_mvnormal(y):
    dim = y.shape[1]
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0).expand([dim]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5).expand([dim]).to_event(1))
    L = numpyro.sample("L", dist.LKJCholesky(dim, 2.0))
    numpyro.sample("y", dist.MultivariateNormal(mu, scale_tril=sigma[:, None] * L), obs=y)


def _case(model, make_data, fast, note) -> Case:
    args, kwargs = make_data()
    return Case(model, args, kwargs, fast, note)


CORPUS: dict[str, Case] = {
    "linear_regression_flat": _case(
        linear_regression_flat, data.flat, True, "flat coefficients and scale (Stan default)"
    ),
    "regression_uncentred": _case(
        linear_regression_weak, data.uncentred, True, "predictors at mean 100 and 50, correlated"
    ),
    "regression_collinear": _case(
        linear_regression_weak, data.collinear, False, "four predictors, pairwise correlation 0.95"
    ),
    "robust_regression": _case(
        robust_regression, data.robust, False, "Student-t noise, flat scale on (0, 100), outliers"
    ),
    "logistic_regression": _case(
        logistic_regression, data.logistic, True, "weakly informative Normal(0, 2.5) priors"
    ),
    "poisson_offset": _case(poisson_offset, data.poisson, True, "log-exposure offset"),
    "negative_binomial": _case(
        negative_binomial, data.negative_binomial, False, "overdispersed counts, 1/phi ~ Exp(1)"
    ),
    "weibull_censored": _case(
        weibull_censored, data.weibull, True, "survival regression, right-censored times"
    ),
    "eight_schools_centred": _case(
        reference_models.hierarchical_funnel,
        data.eight_schools,
        True,
        "centred hierarchy: the funnel between tau and theta",
    ),
    "eight_schools_noncentred": _case(
        reference_models.eight_schools_noncentred,
        data.eight_schools,
        True,
        "non-centred hierarchy",
    ),
    "radon_intercepts": _case(
        radon_intercepts, data.radon_intercepts, False, "varying intercepts, centred, 10 counties"
    ),
    "radon_slopes": _case(
        radon_slopes, data.radon_slopes, False, "varying intercepts and slopes, non-centred"
    ),
    "hierarchical_logistic": _case(
        hierarchical_logistic, data.hierarchical_logistic, False, "8 groups, non-centred"
    ),
    "beta_binomial_rates": _case(
        beta_binomial_rates, data.beta_binomial, False, "rats-style rates, Pareto concentration"
    ),
    "rasch": _case(rasch, data.rasch, False, "item response, 25 students by 10 items"),
    "ar1_flat": _case(ar1_flat, data.ar1, True, "AR(1), flat priors (Stan's manual)"),
    "ar2": _case(ar2, data.ar2, False, "AR(2), weak priors"),
    "garch11": _case(garch11, data.garch, False, "GARCH(1,1), flat priors, dependent bound"),
    "stochastic_volatility": _case(
        stochastic_volatility, data.volatility, False, "latent log volatility, T = 100"
    ),
    "change_point": _case(
        change_point, data.change_point, False, "Poisson rates, switch year summed out"
    ),
    "mixture2_ordered": _case(
        mixture2_ordered, data.mixture2, False, "flat ordered means plus a Normal prior term"
    ),
    "mixture3_ordered": _case(
        mixture3_ordered, data.mixture3, False, "ordered means (transformed), Dirichlet weights"
    ),
    "gp_poisson": _case(gp_poisson, data.gp, False, "latent GP, n = 20, Cholesky with jitter"),
    "simplex_multinomial": _case(
        simplex_multinomial, data.simplex, False, "Dirichlet simplex over 6 categories"
    ),
    "lkj_mvnormal": _case(
        lkj_mvnormal, data.lkj, False, "LKJ correlation Cholesky, HalfCauchy scales"
    ),
}
"""The corpus by name; ``fast`` cases are the ones the test suite fits."""
