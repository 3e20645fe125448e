"""Reference posteriors for tests and benchmarks: NumPyro models with their data.

Linear-Gaussian models here have a known noise scale, so their posterior is
Gaussian and the mean-field optimum is known in closed form: the means are the
posterior mean and the variances are 1 / diag(posterior precision). The
uncentred and polynomial regressions are the ill-conditioned cases on which
plain Adam stalls far from that optimum.
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist


class LinearGaussian(NamedTuple):
    """``y ~ N(X b, noise^2 I)``, ``b ~ N(0, prior_scale^2 I)``, with the exact answer."""

    X: np.ndarray
    y: np.ndarray
    noise: float
    prior_scale: float

    @property
    def precision(self) -> np.ndarray:
        d = self.X.shape[1]
        return self.X.T @ self.X / self.noise**2 + np.eye(d) / self.prior_scale**2

    @property
    def posterior_mean(self) -> np.ndarray:
        return np.linalg.solve(self.precision, self.X.T @ self.y / self.noise**2)

    @property
    def posterior_sd(self) -> np.ndarray:
        return np.sqrt(np.diag(np.linalg.inv(self.precision)))

    @property
    def mean_field_sd(self) -> np.ndarray:
        return 1.0 / np.sqrt(np.diag(self.precision))

    def elbo(self, loc: np.ndarray, scale: np.ndarray) -> float:
        """The exact ELBO of N(loc, diag(scale^2)) against the normalised-by-NumPyro posterior."""
        loc, var = np.asarray(loc, np.float64), np.asarray(scale, np.float64) ** 2
        n, d = self.X.shape
        resid = self.y - self.X @ loc
        expected_sq = resid @ resid + np.sum(np.sum(self.X**2, axis=0) * var)
        log_lik = -0.5 * expected_sq / self.noise**2 - n * np.log(np.sqrt(2 * np.pi) * self.noise)
        log_prior = -0.5 * (loc @ loc + var.sum()) / self.prior_scale**2 - d * np.log(
            np.sqrt(2 * np.pi) * self.prior_scale
        )
        entropy = 0.5 * np.sum(np.log(2 * np.pi * np.e * var))
        return float(log_lik + log_prior + entropy)

    def optimal_elbo(self) -> float:
        return self.elbo(self.posterior_mean, self.mean_field_sd)


def linear_gaussian_model(X, noise, prior_scale, y=None):
    b = numpyro.sample("b", dist.Normal(0.0, prior_scale).expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Normal(X @ b, noise), obs=y)


def _simulate(X, noise, prior_scale, seed):
    rng = np.random.default_rng(seed)
    b = rng.normal(0.0, 1.0, X.shape[1])
    return LinearGaussian(X, X @ b + noise * rng.standard_normal(X.shape[0]), noise, prior_scale)


def conjugate_normal(n: int = 20, seed: int = 0) -> LinearGaussian:
    """One unknown mean with a normal prior: the posterior is exactly Gaussian."""
    return _simulate(np.ones((n, 1)), 1.0, 10.0, seed)


def random_regression(n: int = 200, d: int = 5, seed: int = 0) -> LinearGaussian:
    """A well-conditioned Bayesian linear regression."""
    X = np.random.default_rng(seed + 1).standard_normal((n, d))
    return _simulate(X, 0.5, 3.0, seed)


def uncentred_regression(n: int = 100, seed: int = 0) -> LinearGaussian:
    """Intercept and slope on a covariate x ~ 4000 ± 20: posterior correlation ≈ -0.99999."""
    x = 4000.0 + 20.0 * np.random.default_rng(seed + 1).standard_normal(n)
    return _simulate(np.stack([np.ones(n), x], axis=1), 1.0, 100.0, seed)


def polynomial_regression(n: int = 200, degree: int = 20, seed: int = 0) -> LinearGaussian:
    """Raw monomials 1, x, ..., x^degree on x in [0, 1]: severely collinear columns."""
    x = np.sort(np.random.default_rng(seed + 1).uniform(0.0, 1.0, n))
    X = x[:, None] ** np.arange(degree + 1)
    return _simulate(X, 0.1, 10.0, seed)


def eight_schools_data():
    y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
    return y, sigma


def eight_schools_noncentred(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", sigma.shape[0]):
        theta_raw = numpyro.sample("theta_raw", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_raw)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def hierarchical_funnel(sigma, y=None):
    """Eight schools, centred: the hierarchical funnel between tau and theta."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", sigma.shape[0]):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def logistic_data(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.standard_normal(d).astype(np.float32) / np.sqrt(d)
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-X @ w))).astype(np.float32)
    return X, y


def logistic_regression(X, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Bernoulli(logits=X @ w), obs=y)


def bimodal_2d(x=None):
    """An equal mixture of two unit Gaussians at (±3, 0), as a NumPyro model."""
    mix = dist.MixtureSameFamily(
        dist.Categorical(probs=jnp.array([0.5, 0.5])),
        dist.Normal(jnp.array([[-3.0, 0.0], [3.0, 0.0]]), 1.0).to_event(1),
    )
    numpyro.sample("x", mix)
