"""The full-rank Gaussian variational family: a mean and a Cholesky factor of the covariance.

``FullRankParams(loc, log_diag, off_diag)``: ``loc`` (D,), ``log_diag`` (D,) the logs of the
factor's diagonal (so the factor stays invertible whatever the optimizer does), and
``off_diag`` (D, D) whose strictly lower triangle is the factor's (its diagonal and upper
triangle are ignored and get zero gradients). ``scale_tril = tril(off_diag, -1) +
diag(exp(log_diag))`` and the covariance is ``scale_tril @ scale_tril.T``. The family of
NumPyro's ``AutoMultivariateNormal``, BlackJAX's ``fullrank_vi`` and full-rank ADVI.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from vi.kernels.gaussian import mvn_entropy, mvn_log_prob

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class FullRankParams(NamedTuple):
    """Parameters of a full-rank Gaussian on R^D (see the module).

    Attributes:
      loc: (..., D) means.
      log_diag: (..., D) logs of the Cholesky factor's diagonal.
      off_diag: (..., D, D) the factor's strictly lower triangle (the rest is ignored).
    """

    loc: jax.Array
    log_diag: jax.Array
    off_diag: jax.Array

    @property
    def scale_tril(self) -> jax.Array:
        """(..., D, D) the lower Cholesky factor of the covariance."""
        return scale_tril(self)

    def sample(self, rng_key: jax.Array, num_samples: int) -> jax.Array:
        """Reparameterised draws, (num_samples, ..., D)."""
        loc = jnp.asarray(self.loc)
        eps = jax.random.normal(rng_key, (num_samples, *loc.shape), loc.dtype)
        return loc + jnp.matmul(self.scale_tril, eps[..., None])[..., 0]

    def log_prob(self, x: ArrayLike) -> jax.Array:
        """Log density of points (..., D); returns (...)."""
        return mvn_log_prob(x, self.loc, self.scale_tril)

    def entropy(self) -> jax.Array:
        """Differential entropy in nats, (...)."""
        return mvn_entropy(self.scale_tril)


def scale_tril(params: FullRankParams) -> jax.Array:
    """(..., D, D) the lower Cholesky factor of q's covariance."""
    log_diag = jnp.asarray(params.log_diag)
    eye = jnp.eye(log_diag.shape[-1], dtype=log_diag.dtype)
    return jnp.tril(params.off_diag, -1) + jnp.exp(log_diag)[..., None] * eye


def init(position: ArrayLike, *, scale: float = 0.1) -> FullRankParams:
    """Centres the family on ``position`` (D,), with covariance ``scale² I``."""
    loc = jnp.asarray(position)
    dim = loc.shape[-1]
    return FullRankParams(
        loc,
        jnp.full_like(loc, jnp.log(scale)),
        jnp.zeros((*loc.shape, dim), loc.dtype),
    )


def noise_dim(params: FullRankParams) -> int:
    """The size of the standard-normal noise of one draw: D."""
    return params.loc.shape[-1]


def transform(params: FullRankParams, eps: jax.Array) -> jax.Array:
    """Maps standard-normal noise ``eps`` (..., D) to draws ``loc + L eps`` (one q)."""
    return params.loc + eps @ scale_tril(params).T


def noise_log_prob(params: FullRankParams, eps: jax.Array) -> jax.Array:
    """``log q(transform(params, eps))``, written in ``eps``: (..., D) -> (...)."""
    dim = eps.shape[-1]
    return -0.5 * jnp.sum(eps**2, axis=-1) - jnp.sum(params.log_diag) - dim * _HALF_LOG_2PI


def held_log_prob(params: FullRankParams, eps: jax.Array, x: jax.Array) -> jax.Array:
    """``log q(x)`` for draws ``x = transform(params, eps)`` (N, D) with q's parameters held
    fixed (sticking the landing): the same value and gradient in ``x``, ``-Σ⁻¹ (x - loc) =
    -L⁻ᵀ eps``, as differentiating ``log_prob`` with the parameters held, for one
    triangular solve where that takes two (``bench_families.py``)."""
    held = jax.lax.stop_gradient(params)
    value = noise_log_prob(held, eps)
    score = -jax.lax.linalg.triangular_solve(scale_tril(held), eps, left_side=False, lower=True)
    return value + jnp.sum((x - jax.lax.stop_gradient(x)) * score, axis=-1)


def log_prob(params: FullRankParams, x: jax.Array) -> jax.Array:
    """Log density at ``x`` (..., D); returns (...).

    As ``vi.kernels.gaussian.mvn_log_prob`` computes it (the factor's inverse and a matrix
    product, see there), but with the log determinant from ``log_diag`` itself, so that the
    committed full-rank alpha-family study reproduces to the bit."""
    factor = scale_tril(params)
    inverse = jax.lax.linalg.triangular_solve(
        factor, jnp.eye(factor.shape[-1], dtype=factor.dtype), left_side=True, lower=True
    )
    z = (x - params.loc) @ inverse.T
    dim = params.loc.shape[-1]
    return -0.5 * jnp.sum(z**2, axis=-1) - jnp.sum(params.log_diag) - dim * _HALF_LOG_2PI


def entropy(params: FullRankParams) -> jax.Array:
    """Differential entropy in nats; returns ()."""
    return jnp.sum(params.log_diag) + params.loc.shape[-1] * (0.5 + _HALF_LOG_2PI)


def variance(params: FullRankParams) -> jax.Array:
    """(D,) the marginal variances, the covariance's diagonal."""
    return jnp.sum(scale_tril(params) ** 2, axis=-1)


def covariance(params: FullRankParams) -> jax.Array:
    """(D, D) the covariance."""
    factor = scale_tril(params)
    return factor @ factor.T


def widen(params: FullRankParams, factor: jax.Array) -> FullRankParams:
    """q with its covariance multiplied by ``factor²``."""
    return FullRankParams(params.loc, params.log_diag + jnp.log(factor), params.off_diag * factor)


def _conditional_variance(params: FullRankParams) -> jax.Array:
    """(D,) ``1 / (Σ⁻¹)_ii``: each coordinate's variance given all the others."""
    factor = scale_tril(params)
    eye = jnp.eye(factor.shape[-1], dtype=factor.dtype)
    inverse = jax.scipy.linalg.solve_triangular(factor, eye, lower=True)
    return 1.0 / jnp.sum(inverse**2, axis=0)


def precondition(params: FullRankParams, grad: FullRankParams) -> FullRankParams:
    """An approximate inverse Hessian of the negative ELBO near a Gaussian optimum, diagonal.

    The Hessian of ``E_q[-log p]`` for a Gaussian p of precision ``Λ = Σ⁻¹`` (at the optimum)
    is ``Λ`` for the mean and ``Λ_ii`` for each entry of row i of the factor, so their
    Jacobi preconditioner is the conditional variance ``1 / Λ_ii``; a log of the diagonal
    gets ``1 / (2 Λ_ii L_ii²)``.
    """
    conditional = _conditional_variance(params)
    diag2 = jnp.exp(2 * params.log_diag)
    return FullRankParams(
        conditional * grad.loc,
        0.5 * conditional / diag2 * grad.log_diag,
        conditional[:, None] * jnp.tril(grad.off_diag, -1),
    )


def grad_norm(params: FullRankParams, grad: FullRankParams) -> jax.Array:
    """The largest gradient entry in q's own units: per conditional standard deviation of each
    mean and factor entry, and per unit of each log diagonal."""
    sd = jnp.sqrt(_conditional_variance(params))
    return jnp.maximum(
        jnp.maximum(jnp.max(jnp.abs(grad.loc * sd)), jnp.max(jnp.abs(grad.log_diag))),
        jnp.max(jnp.abs(jnp.tril(grad.off_diag, -1) * sd[:, None])),
    )


def moment_match(draws: jax.Array) -> FullRankParams:
    """The full-rank Gaussian minimising the forward KL to the empirical ``draws`` (N, D):
    their mean and (biased) covariance."""
    mean = jnp.mean(draws, axis=0)
    centred = draws - mean
    factor = jnp.linalg.cholesky(centred.T @ centred / draws.shape[0])
    return FullRankParams(mean, jnp.log(jnp.diagonal(factor)), factor)
