"""The mean-field (diagonal) Gaussian variational family, as pure functions of its parameters.

The parameters are a :class:`~vi.families.gaussian.DiagNormal` (``MeanFieldParams``), a
pytree of ``loc`` and ``log_scale`` that optimizers update and ``jax.vmap`` batches.
"""

import jax
import jax.numpy as jnp

from vi.families.gaussian import DiagNormal
from vi.kernels.gaussian import diag_normal_entropy, diag_normal_log_prob

MeanFieldParams = DiagNormal
"""Parameters of a mean-field Gaussian on R^D: a :class:`~vi.families.gaussian.DiagNormal`.

``MeanFieldParams(loc, log_scale)`` with ``loc`` (D,) the means and ``log_scale`` (D,) the log
standard deviations (unconstrained). It is the same class as ``DiagNormal``, so a fit's
parameters go straight into ``vi.kl``, ``sample`` and ``log_prob``.
"""


def init(position: jax.typing.ArrayLike, *, scale: float = 0.1) -> MeanFieldParams:
    """Centres the family on ``position`` with a small, equal scale.

    Args:
      position: (D,) the initial mean.
      scale: the initial standard deviation of every coordinate.

    Returns:
      The initial parameters.
    """
    loc = jnp.asarray(position)
    if not jnp.issubdtype(loc.dtype, jnp.floating):
        loc = loc.astype(jnp.result_type(float))
    if loc.ndim != 1:
        raise ValueError(f"position must have shape (D,), got {loc.shape}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return MeanFieldParams(loc, jnp.full_like(loc, jnp.log(scale)))


def sample(rng_key: jax.Array, params: MeanFieldParams, num_samples: int) -> jax.Array:
    """Reparameterised draws ``loc + scale * eps``.

    Returns:
      (num_samples, D) draws, differentiable in ``params``.
    """
    eps = jax.random.normal(rng_key, (num_samples, *params.loc.shape), params.loc.dtype)
    return transform(params, eps)


def transform(params: MeanFieldParams, eps: jax.Array) -> jax.Array:
    """Maps standard-normal noise ``eps`` (..., D) to draws of the family."""
    return params.loc + jnp.exp(params.log_scale) * eps


def log_prob(params: MeanFieldParams, x: jax.Array) -> jax.Array:
    """Log density at ``x`` (..., D); returns (...)."""
    return diag_normal_log_prob(x, params.loc, params.log_scale)


def entropy(params: MeanFieldParams) -> jax.Array:
    """Differential entropy in nats; returns ()."""
    return diag_normal_entropy(params.log_scale)


def noise_dim(params: MeanFieldParams) -> int:
    """The size of the standard-normal noise of one draw: D."""
    return params.loc.shape[-1]


def noise_log_prob(params: MeanFieldParams, eps: jax.Array) -> jax.Array:
    """``log q(transform(params, eps))``, written in ``eps``: (..., D) -> (...)."""
    return (
        -0.5 * jnp.sum(eps**2, axis=-1)
        - jnp.sum(params.log_scale)
        - (0.5 * eps.shape[-1] * jnp.log(2 * jnp.pi))
    )


def variance(params: MeanFieldParams) -> jax.Array:
    """(D,) the marginal variances."""
    return jnp.exp(2 * params.log_scale)


def covariance(params: MeanFieldParams) -> jax.Array:
    """(D, D) the (diagonal) covariance."""
    return jnp.diag(variance(params))


def widen(params: MeanFieldParams, factor: jax.Array) -> MeanFieldParams:
    """q with its scales multiplied by ``factor``."""
    return MeanFieldParams(params.loc, params.log_scale + jnp.log(factor))


def precondition(params: MeanFieldParams, grad: MeanFieldParams) -> MeanFieldParams:
    """The inverse of the negative ELBO's Hessian diagonal at a mean-field optimum:
    ``σ²`` for a mean, ``½`` for a log scale."""
    return MeanFieldParams(jnp.exp(2 * params.log_scale) * grad.loc, 0.5 * grad.log_scale)


def pointed_gain(params: MeanFieldParams, grad: MeanFieldParams) -> jax.Array:
    """``½ gᵀ P g`` for ``P`` of ``precondition``: the ELBO a gradient points to."""
    sigma = jnp.exp(params.log_scale)
    return 0.5 * jnp.sum((grad.loc * sigma) ** 2) + 0.25 * jnp.sum(grad.log_scale**2)


def grad_norm(params: MeanFieldParams, grad: MeanFieldParams) -> jax.Array:
    """The largest gradient entry in q's own units: per standard deviation of each mean, and
    per unit of each log scale."""
    return jnp.maximum(
        jnp.max(jnp.abs(grad.loc * jnp.exp(params.log_scale))), jnp.max(jnp.abs(grad.log_scale))
    )


def moment_match(draws: jax.Array) -> MeanFieldParams:
    """The mean-field Gaussian minimising the forward KL to the empirical ``draws`` (N, D):
    their per-coordinate mean and (biased) standard deviation."""
    return MeanFieldParams(jnp.mean(draws, axis=0), jnp.log(jnp.std(draws, axis=0)))
