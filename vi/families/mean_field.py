"""The mean-field (diagonal) Gaussian variational family."""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vi.kernels.gaussian import diag_normal_entropy, diag_normal_log_prob


class MeanFieldParams(NamedTuple):
    """Parameters of a mean-field Gaussian on R^D.

    Attributes:
      loc: (D,) means.
      log_scale: (D,) log standard deviations (unconstrained).
    """

    loc: jax.Array
    log_scale: jax.Array


class Family(NamedTuple):
    """A variational family as a set of pure functions of its parameters."""

    init: Callable[..., MeanFieldParams]
    sample: Callable[[jax.Array, MeanFieldParams, int], jax.Array]
    log_prob: Callable[[MeanFieldParams, jax.Array], jax.Array]
    entropy: Callable[[MeanFieldParams], jax.Array]


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


mean_field_gaussian = Family(init=init, sample=sample, log_prob=log_prob, entropy=entropy)
