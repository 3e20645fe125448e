"""Closed-form kernels for Gaussian distributions."""

import math

import jax
import jax.numpy as jnp

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def diag_normal_log_prob(x: jax.Array, loc: jax.Array, log_scale: jax.Array) -> jax.Array:
    """Log density of a diagonal Gaussian, summed over the last (event) axis.

    Args:
      x: (..., D) points.
      loc: (..., D) means.
      log_scale: (..., D) log standard deviations.

    Returns:
      (...) log densities, broadcast over the leading axes.
    """
    z = (x - loc) * jnp.exp(-log_scale)
    return jnp.sum(-0.5 * z**2 - log_scale - _HALF_LOG_2PI, axis=-1)


def diag_normal_entropy(log_scale: jax.Array) -> jax.Array:
    """Differential entropy of a diagonal Gaussian, summed over the last axis.

    Args:
      log_scale: (..., D) log standard deviations.

    Returns:
      (...) entropies in nats.
    """
    return jnp.sum(log_scale + 0.5 + _HALF_LOG_2PI, axis=-1)
