"""The low-rank-plus-diagonal Gaussian variational family.

``LowRankParams(loc, log_scale, cov_factor)``: covariance ``W Wᵀ + diag(exp(2 log_scale))``
with ``W`` the lower trapezoid of ``cov_factor`` (D, r): entries above the diagonal are
ignored. That fixes the gauge: ``W R`` for an orthogonal R gives the same q, so a full
``W`` would leave the ELBO flat along r (r - 1) / 2 rotations, a Hessian with a null space
that the gap check cannot solve against; every ``W Wᵀ`` of rank r has a lower-trapezoidal
factor (an LQ decomposition), so nothing is lost. A draw is ``loc + σ ⊙ ε + W η`` from D + r standard
normals; densities and the entropy use the Woodbury identity and the matrix determinant
lemma through the r × r capacitance ``C = I + Wᵀ diag(σ⁻²) W``, so a step costs O(D r²)
beside the target's log density, not the O(D²) to O(D³) of the full-rank family. The family
of NumPyro's ``AutoLowRankMultivariateNormal``.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

_LOG_2PI = math.log(2 * math.pi)


class LowRankParams(NamedTuple):
    """Parameters of a low-rank-plus-diagonal Gaussian on R^D (see the module).

    Attributes:
      loc: (..., D) means.
      log_scale: (..., D) logs of the diagonal part's standard deviations.
      cov_factor: (..., D, r) the low-rank factor ``W``; its entries above the diagonal are
        ignored (see the module).
    """

    loc: jax.Array
    log_scale: jax.Array
    cov_factor: jax.Array

    @property
    def rank(self) -> int:
        """r, the rank of the low-rank part."""
        return self.cov_factor.shape[-1]

    def sample(self, rng_key: jax.Array, num_samples: int) -> jax.Array:
        """Reparameterised draws, (num_samples, ..., D)."""
        loc = jnp.asarray(self.loc)
        shape = (num_samples, *loc.shape[:-1], noise_dim(self))
        eps = jax.random.normal(rng_key, shape, loc.dtype)
        dim = loc.shape[-1]
        low = jnp.matmul(factor(self), eps[..., dim:, None])[..., 0]
        return loc + jnp.exp(self.log_scale) * eps[..., :dim] + low

    def log_prob(self, x: ArrayLike) -> jax.Array:
        """Log density of points (..., D); returns (...)."""
        if jnp.ndim(self.loc) > 1:
            return jnp.vectorize(
                lambda x, *p: log_prob(LowRankParams(*p), x), signature="(d),(d),(d),(d,r)->()"
            )(x, *self)
        return log_prob(self, jnp.asarray(x))

    def entropy(self) -> jax.Array:
        """Differential entropy in nats, (...)."""
        return jnp.vectorize(lambda *p: entropy(LowRankParams(*p)), signature="(d),(d),(d,r)->()")(
            *self
        )


def factor(params: LowRankParams) -> jax.Array:
    """(..., D, r) the factor ``W``: the lower trapezoid of ``cov_factor``."""
    return jnp.tril(params.cov_factor)


def init(position: ArrayLike, *, rank: int, scale: float = 0.1) -> LowRankParams:
    """Centres the family on ``position`` (D,), with a diagonal part of scale ``scale`` and
    a factor ``½ scale`` times the first r unit vectors (``W = 0`` is a saddle point of the
    ELBO: its expected gradient there is zero)."""
    loc = jnp.asarray(position)
    dim = loc.shape[-1]
    factor = 0.5 * scale * jnp.eye(dim, rank, dtype=loc.dtype)
    return LowRankParams(loc, jnp.full_like(loc, jnp.log(scale)), factor)


def noise_dim(params: LowRankParams) -> int:
    """The size of the standard-normal noise of one draw: D + r."""
    return params.loc.shape[-1] + params.cov_factor.shape[-1]


def transform(params: LowRankParams, eps: jax.Array) -> jax.Array:
    """Maps standard-normal noise ``eps`` (..., D + r) to draws ``loc + σ ε + W η`` (one q)."""
    dim = params.loc.shape[-1]
    return (
        params.loc + jnp.exp(params.log_scale) * eps[..., :dim] + eps[..., dim:] @ factor(params).T
    )


def _capacitance(params: LowRankParams):
    """``(A, chol C)`` with ``A = diag(σ⁻¹) W`` (D, r) and ``C = I + Aᵀ A``."""
    a = jnp.exp(-params.log_scale)[:, None] * factor(params)
    c = jnp.eye(a.shape[-1], dtype=a.dtype) + a.T @ a
    return a, jnp.linalg.cholesky(c)


def _half_log_det(params: LowRankParams, chol_c: jax.Array) -> jax.Array:
    return jnp.sum(params.log_scale) + jnp.sum(jnp.log(jnp.diagonal(chol_c)))


def log_prob(params: LowRankParams, x: jax.Array) -> jax.Array:
    """Log density at ``x`` (..., D); returns (...)."""
    a, chol_c = _capacitance(params)
    y = (x - params.loc) * jnp.exp(-params.log_scale)
    # Σ⁻¹ = σ⁻¹ (I - A C⁻¹ Aᵀ) σ⁻¹ (Woodbury), so the quadratic form is |y|² - |L_C⁻¹ Aᵀ y|².
    v = jax.scipy.linalg.solve_triangular(chol_c, (y @ a).T, lower=True).T
    maha = jnp.sum(y**2, axis=-1) - jnp.sum(v**2, axis=-1)
    dim = params.loc.shape[-1]
    return -0.5 * maha - _half_log_det(params, chol_c) - 0.5 * dim * _LOG_2PI


def noise_log_prob(params: LowRankParams, eps: jax.Array) -> jax.Array:
    """``log q(transform(params, eps))`` for noise ``eps`` (..., D + r): (...)."""
    return log_prob(params, transform(params, eps))


def entropy(params: LowRankParams) -> jax.Array:
    """Differential entropy in nats; returns ()."""
    _, chol_c = _capacitance(params)
    return _half_log_det(params, chol_c) + 0.5 * params.loc.shape[-1] * (1.0 + _LOG_2PI)


def variance(params: LowRankParams) -> jax.Array:
    """(D,) the marginal variances."""
    return jnp.exp(2 * params.log_scale) + jnp.sum(factor(params) ** 2, axis=-1)


def covariance(params: LowRankParams) -> jax.Array:
    """(D, D) the covariance."""
    w = factor(params)
    return w @ w.T + jnp.diag(jnp.exp(2 * params.log_scale))


def widen(params: LowRankParams, by: jax.Array) -> LowRankParams:
    """q with its covariance multiplied by ``factor²``."""
    return LowRankParams(params.loc, params.log_scale + jnp.log(by), params.cov_factor * by)


def _conditional_variance(params: LowRankParams) -> jax.Array:
    """(D,) ``1 / (Σ⁻¹)_ii``, by Woodbury: ``(Σ⁻¹)_ii = σ_i⁻² (1 - |L_C⁻¹ a_i|²)``."""
    a, chol_c = _capacitance(params)
    v = jax.scipy.linalg.solve_triangular(chol_c, a.T, lower=True)
    return jnp.exp(2 * params.log_scale) / (1.0 - jnp.sum(v**2, axis=0))


def precondition(params: LowRankParams, grad: LowRankParams) -> LowRankParams:
    """A diagonal approximate inverse Hessian of the negative ELBO near a Gaussian optimum:
    the conditional variance ``1 / Λ_ii`` for the mean and row i of the factor (their
    curvature is ``Λ_ii``), ``½`` for a log scale, as for the mean-field family."""
    conditional = _conditional_variance(params)
    return LowRankParams(
        conditional * grad.loc,
        0.5 * grad.log_scale,
        conditional[:, None] * jnp.tril(grad.cov_factor),
    )


def grad_norm(params: LowRankParams, grad: LowRankParams) -> jax.Array:
    """The largest gradient entry in q's own units: per conditional standard deviation of each
    mean and factor entry, and per unit of each log scale."""
    sd = jnp.sqrt(_conditional_variance(params))
    return jnp.maximum(
        jnp.maximum(jnp.max(jnp.abs(grad.loc * sd)), jnp.max(jnp.abs(grad.log_scale))),
        jnp.max(jnp.abs(jnp.tril(grad.cov_factor) * sd[:, None])),
    )
