"""The corpus's data: small, deterministic (``numpy.random.default_rng`` with a fixed seed).

Each function returns a model's ``(args, kwargs)``: covariates and fixed settings as
positional arguments, observations as keyword arguments where the model takes them so.
"""

import numpy as np

from experiments.models import eight_schools_data


def eight_schools():
    """Rubin's (1981) eight schools: effects and their standard errors."""
    y, sigma = eight_schools_data()
    return (sigma,), {"y": y}


def _regression(n, mean, cov, coef, intercept, noise, seed):
    rng = np.random.default_rng(seed)
    X = rng.multivariate_normal(mean, cov, size=n)
    return X, intercept + X @ coef + noise * rng.standard_normal(n)


def flat():
    X, y = _regression(60, np.zeros(3), np.eye(3), np.array([1.0, -0.5, 0.2]), 2.0, 0.8, 1)
    return (X,), {"y": y}


def uncentred():
    cov = np.array([[25.0, 10.0], [10.0, 9.0]])
    X, y = _regression(80, np.array([100.0, 50.0]), cov, np.array([0.3, -0.2]), 5.0, 1.5, 2)
    return (X,), {"y": y}


def collinear():
    cov = 0.05 + 0.95 * np.ones((4, 4))
    X, y = _regression(100, np.zeros(4), cov, np.array([1.0, 0.5, 0.0, -1.0]), 1.0, 1.0, 3)
    return (X,), {"y": y}


def robust():
    rng = np.random.default_rng(4)
    x = rng.uniform(-2.0, 2.0, 80)
    y = 1.0 + 2.0 * x + 0.5 * rng.standard_t(3.0, 80)
    y[:4] += np.array([8.0, -9.0, 10.0, 7.0])
    return (x,), {"y": y}


def logistic():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((150, 3))
    p = 1.0 / (1.0 + np.exp(-(-0.5 + X @ np.array([1.2, -0.7, 0.3]))))
    return (X,), {"y": (rng.uniform(size=150) < p).astype(np.float64)}


def poisson():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((100, 2))
    log_exposure = np.log(rng.uniform(0.5, 5.0, 100))
    y = rng.poisson(np.exp(log_exposure + 0.5 + X @ np.array([0.4, -0.3])))
    return (X, log_exposure), {"y": y}


def negative_binomial():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((120, 2))
    mean = np.exp(1.5 + X @ np.array([0.6, -0.4]))
    return (X,), {"y": rng.negative_binomial(2.0, 2.0 / (2.0 + mean))}


def weibull():
    rng = np.random.default_rng(8)
    x = rng.standard_normal(100)
    t = np.exp(2.0 + 0.5 * x) * rng.weibull(1.5, 100)
    end = rng.uniform(3.0, 15.0, 100)
    return (x, np.minimum(t, end), t > end), {}


def _radon(num_counties, n, seed):
    rng = np.random.default_rng(seed)
    county = np.sort(rng.choice(num_counties, n, p=rng.dirichlet(np.full(num_counties, 2.0))))
    county[:num_counties] = np.arange(num_counties)  # every county has a house
    floor = (rng.uniform(size=n) < 0.2).astype(np.float64)
    uranium = rng.normal(0.0, 0.5, num_counties)
    a = 1.4 + 0.7 * uranium + 0.3 * rng.standard_normal(num_counties)
    b = -0.6 + 0.2 * rng.standard_normal(num_counties)
    return county, floor, uranium, a[county] + b[county] * floor + 0.7 * rng.standard_normal(n)


def radon_intercepts():
    county, floor, _, y = _radon(10, 120, 9)
    return (county, floor, 10), {"y": y}


def radon_slopes():
    county, floor, uranium, y = _radon(12, 160, 10)
    return (county, floor, uranium), {"y": y}


def hierarchical_logistic():
    rng = np.random.default_rng(11)
    group = np.repeat(np.arange(8), 20)
    x = rng.standard_normal(160)
    logits = -0.3 + 0.8 * rng.standard_normal(8)[group] + 0.9 * x
    return (group, x, 8), {"y": (rng.uniform(size=160) < 1 / (1 + np.exp(-logits))) * 1.0}


def beta_binomial():
    rng = np.random.default_rng(12)
    trials = rng.integers(10, 40, 15)
    return (trials,), {"y": rng.binomial(trials, rng.beta(2.0, 12.0, 15))}


def rasch():
    rng = np.random.default_rng(13)
    student, item = (x.ravel() for x in np.meshgrid(np.arange(25), np.arange(10), indexing="ij"))
    logits = rng.standard_normal(25)[student] - rng.normal(0.0, 1.2, 10)[item]
    y = (rng.uniform(size=250) < 1.0 / (1.0 + np.exp(-logits))) * 1.0
    return (student, item, 25, 10), {"y": y}


def ar1():
    rng = np.random.default_rng(14)
    y = np.zeros(100)
    for t in range(1, 100):
        y[t] = 0.5 + 0.7 * y[t - 1] + 0.4 * rng.standard_normal()
    return (y,), {}


def ar2():
    rng = np.random.default_rng(15)
    y = np.zeros(120)
    for t in range(2, 120):
        y[t] = 0.2 + 0.5 * y[t - 1] - 0.3 * y[t - 2] + rng.standard_normal()
    return (y,), {}


def garch():
    rng = np.random.default_rng(16)
    r, variance = np.zeros(150), 0.5
    for t in range(150):
        r[t] = 0.1 + np.sqrt(variance) * rng.standard_normal()
        variance = 0.05 + 0.15 * (r[t] - 0.1) ** 2 + 0.75 * variance
    return (r, 0.7), {}


def volatility():
    rng = np.random.default_rng(17)
    h = np.zeros(100)
    h[0] = -1.0 + 0.3 / np.sqrt(1 - 0.95**2) * rng.standard_normal()
    for t in range(1, 100):
        h[t] = -1.0 + 0.95 * (h[t - 1] + 1.0) + 0.3 * rng.standard_normal()
    return (np.exp(h / 2) * rng.standard_normal(100),), {}


def change_point():
    rng = np.random.default_rng(18)
    counts = np.concatenate([rng.poisson(3.0, 40), rng.poisson(1.0, 60)])
    return (counts, 1.0 / counts.mean(), 1.0 / counts.mean()), {}


def mixture2():
    rng = np.random.default_rng(19)
    first = rng.uniform(size=150) < 0.4
    return (), {"y": np.where(first, rng.normal(-1.5, 0.7, 150), rng.normal(2.0, 1.0, 150))}


def mixture3():
    rng = np.random.default_rng(20)
    component = rng.choice(3, 150, p=[0.3, 0.4, 0.3])
    return (), {"y": np.array([-5.0, 0.0, 5.0])[component] + rng.standard_normal(150)}


def gp():
    rng = np.random.default_rng(21)
    x = np.linspace(0.0, 10.0, 20)
    return (x,), {"y": rng.poisson(np.exp(1.0 + np.sin(x)))}


def simplex():
    rng = np.random.default_rng(22)
    totals = rng.integers(20, 60, 30)
    y = np.stack([rng.multinomial(n, [0.3, 0.25, 0.2, 0.1, 0.1, 0.05]) for n in totals])
    return (totals,), {"y": y}


def lkj():
    rng = np.random.default_rng(23)
    corr = np.array([[1.0, 0.6, -0.3], [0.6, 1.0, 0.1], [-0.3, 0.1, 1.0]])
    cov = np.outer([1.0, 2.0, 0.5], [1.0, 2.0, 0.5]) * corr
    return (rng.multivariate_normal([1.0, -2.0, 0.0], cov, size=100),), {}
