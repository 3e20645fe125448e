"""The models of ``bench_fit.py``, with hand-written log densities to compare formulations.

Each ``Case`` is a NumPyro model with its data, the same log density written by hand in jnp
for one draw (``[hand]`` rows) and for all draws at once (``[batch]`` rows), and the number
of steps to time. ``check_hand_formulas`` checks the hand-written forms against NumPyro's
potential before anything is timed.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import vi
from experiments import models

HALF_LOG_2PI = 0.5 * np.log(2 * np.pi)


# Hand-written log densities on the same unconstrained, flattened space as NumPyro's
# potential (sites in sorted order, positive sites through exp with their log-Jacobian).


def normal_logpdf(x, loc, scale):
    return -0.5 * ((x - loc) / scale) ** 2 - jnp.log(scale) - HALF_LOG_2PI


def bimodal_logdensity(x):
    centres = jnp.array([[-3.0, 0.0], [3.0, 0.0]])
    log_components = jnp.sum(normal_logpdf(x, centres, 1.0), axis=-1)
    return jax.nn.logsumexp(log_components) + jnp.log(0.5)


def eight_schools_logdensity(sigma, y):
    def logdensity_fn(x):
        mu, log_tau, theta_raw = x[0], x[1], x[2:]
        tau = jnp.exp(log_tau)
        log_prior_tau = jnp.log(2.0 / (5.0 * jnp.pi)) - jnp.log1p((tau / 5.0) ** 2) + log_tau
        return (
            normal_logpdf(mu, 0.0, 5.0)
            + log_prior_tau
            + jnp.sum(normal_logpdf(theta_raw, 0.0, 1.0))
            + jnp.sum(normal_logpdf(y, mu + tau * theta_raw, sigma))
        )

    return logdensity_fn


def log_sigmoid_terms(z, y):
    """y log sigmoid(z) + (1 - y) log sigmoid(-z), written so XLA shares exp(-|z|) with the
    gradient (``jax.nn.softplus`` measured slower here)."""
    return y * z - jnp.maximum(z, 0.0) - jnp.log1p(jnp.exp(-jnp.abs(z)))


def logistic_logdensity(X, y):
    X, y = jnp.asarray(X), jnp.asarray(y)

    def logdensity_fn(w):
        return jnp.sum(log_sigmoid_terms(X @ w, y)) + jnp.sum(normal_logpdf(w, 0.0, 1.0))

    return logdensity_fn


def logistic_batch_logdensity(X, y):
    """(S, D) -> (S,): all draws in one matrix product."""
    X, y = jnp.asarray(X), jnp.asarray(y)

    def batch_logdensity_fn(W):
        log_lik = jnp.sum(log_sigmoid_terms(X @ W.T, y[:, None]), axis=0)
        return log_lik + jnp.sum(normal_logpdf(W, 0.0, 1.0), axis=-1)

    return batch_logdensity_fn


def linear_gaussian_logdensity(problem: models.LinearGaussian):
    X, y = jnp.asarray(problem.X, jnp.float32), jnp.asarray(problem.y, jnp.float32)

    def logdensity_fn(b):
        return jnp.sum(normal_logpdf(b, 0.0, problem.prior_scale)) + jnp.sum(
            normal_logpdf(y, X @ b, problem.noise)
        )

    return logdensity_fn


class Case(NamedTuple):
    name: str
    model: Callable
    args: tuple
    kwargs: dict
    hand_logdensity_fn: Callable | None
    batch_logdensity_fn: Callable | None
    num_steps: int


def make_cases(quick: bool, big_steps: int) -> list[Case]:
    y8, sigma8 = (jnp.asarray(a, jnp.float32) for a in models.eight_schools_data())
    X5k, y5k = (jnp.asarray(a) for a in models.logistic_data(5000, 20))
    uncentred = models.uncentred_regression()
    unc_args = (jnp.asarray(uncentred.X, jnp.float32), uncentred.noise, uncentred.prior_scale)
    cases = [
        Case("bimodal 2-D", models.bimodal_2d, (), {}, bimodal_logdensity, None, 5000),
        Case(
            "eight schools (nc)",
            models.eight_schools_noncentred,
            (sigma8,),
            {"y": y8},
            eight_schools_logdensity(sigma8, y8),
            None,
            5000,
        ),
        Case(
            "logistic N=5000 D=20",
            models.logistic_regression,
            (X5k,),
            {"y": y5k},
            logistic_logdensity(X5k, y5k),
            logistic_batch_logdensity(X5k, y5k),
            2000,
        ),
    ]
    if not quick:
        X50k, y50k = (jnp.asarray(a) for a in models.logistic_data(50_000, 100))
        cases.append(
            Case(
                "logistic N=50000 D=100",
                models.logistic_regression,
                (X50k,),
                {"y": y50k},
                logistic_logdensity(X50k, y50k),
                logistic_batch_logdensity(X50k, y50k),
                big_steps,
            )
        )
    cases.append(
        Case(
            "uncentred regression",
            models.linear_gaussian_model,
            unc_args,
            {"y": jnp.asarray(uncentred.y, jnp.float32)},
            linear_gaussian_logdensity(uncentred),
            None,
            5000,
        )
    )
    if quick:
        cases = [c._replace(num_steps=50) for c in cases if c.name.startswith("logistic")]
    return cases


def check_hand_formulas(case: Case, target: vi.Target) -> None:
    """The hand-written log densities agree with NumPyro's potential."""
    x = target.init_position + 0.3 * jax.random.normal(jax.random.key(1), (4, target.dim))
    reference = jax.vmap(target.logdensity_fn)(x)
    scale = float(jnp.max(jnp.abs(reference)))
    for fn in (jax.vmap(case.hand_logdensity_fn), case.batch_logdensity_fn):
        if fn is not None:
            err = float(jnp.max(jnp.abs(fn(x) - reference)))
            assert err <= 1e-5 * max(scale, 1.0), (case.name, err, scale)
