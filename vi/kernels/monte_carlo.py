"""Monte-Carlo estimators of KL divergences, each an :class:`~vi.kernels.estimate.Estimate`.

The estimates are sample means of log-density ratios (:func:`mean_estimate`). Their
``stderr`` is the sample standard deviation over ``sqrt(num_samples)``: the estimate is within
about two standard errors of the exact KL about 95 % of the time, provided the log-ratio has a
finite variance.
"""

from collections.abc import Callable
from typing import Protocol

import jax
import jax.numpy as jnp

from vi.kernels.estimate import Estimate, mean_estimate


class Distribution(Protocol):
    """What :func:`monte_carlo_kl` needs of a distribution: draws and a log density."""

    def sample(self, rng_key: jax.Array, num_samples: int) -> jax.Array:
        """Draws ``(num_samples, *batch, *event)``."""

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log density of ``(..., *batch, *event)`` points; returns ``(..., *batch)``."""


def reverse_kl_estimate(
    rng_key: jax.Array,
    sample_fn: Callable[[jax.Array, int], jax.Array],
    log_prob_fn: Callable[[jax.Array], jax.Array],
    logdensity_fn: Callable[[jax.Array], jax.Array],
    num_samples: int,
) -> Estimate:
    """Estimates the reverse KL ``E_q[log q(x) - log p(x)]`` from draws of q.

    If ``logdensity_fn`` is unnormalised, ``log p~ = log p + log Z``, the estimate is of
    ``KL(q ‖ p) - log Z`` (the negative ELBO): exact up to p's log normaliser. Gradients
    with respect to q's parameters are unbiased when ``sample_fn`` is reparameterised.

    Args:
      rng_key: a JAX PRNG key.
      sample_fn: maps ``(rng_key, num_samples)`` to draws of q, ``(num_samples, ...)``.
      log_prob_fn: q's log density of one draw.
      logdensity_fn: p's (possibly unnormalised) log density of one draw.
      num_samples: how many draws, at least 2.

    Returns:
      The estimate and its standard error.
    """
    samples = sample_fn(rng_key, num_samples)
    log_ratio = jax.vmap(lambda x: log_prob_fn(x) - logdensity_fn(x))(samples)
    return mean_estimate(log_ratio)


def forward_kl_estimate(
    samples: jax.Array,
    log_prob_fn: Callable[[jax.Array], jax.Array],
    *,
    logdensity_fn: Callable[[jax.Array], jax.Array] | None = None,
    logdensity_values: jax.Array | None = None,
) -> Estimate:
    """Estimates the forward KL ``E_p[log p(x) - log q(x)]`` from given draws of p.

    Give p's log density either as a function or as its values at ``samples``. If it is
    unnormalised, ``log p~ = log p + log Z``, the estimate is of ``KL(p ‖ q) + log Z``.

    Args:
      samples: (num_samples, ...) exact draws of p.
      log_prob_fn: q's log density of one draw.
      logdensity_fn: p's log density of one draw.
      logdensity_values: (num_samples,) p's log density at ``samples``.

    Returns:
      The estimate and its standard error.
    """
    if (logdensity_fn is None) == (logdensity_values is None):
        raise ValueError("pass exactly one of logdensity_fn and logdensity_values")
    log_q = jax.vmap(log_prob_fn)(samples)
    if logdensity_fn is not None:
        log_p = jax.vmap(logdensity_fn)(samples)
    else:
        log_p = jnp.asarray(logdensity_values)
        if log_p.shape != log_q.shape:
            raise ValueError(
                f"logdensity_values has shape {log_p.shape}, but log_prob_fn gives "
                f"{log_q.shape} for samples of shape {jnp.shape(samples)}"
            )
    return mean_estimate(log_p - log_q)


def monte_carlo_kl(
    rng_key: jax.Array, q: Distribution, p: Distribution, num_samples: int
) -> Estimate:
    """Estimates KL(q ‖ p) by sampling q, for any pair of distributions.

    This is the fallback of :func:`vi.kernels.registry.kl` for pairs without a closed form. Batched
    distributions give one estimate (and standard error) per batch element.

    Args:
      rng_key: a JAX PRNG key.
      q: a distribution with ``sample(rng_key, num_samples)`` and ``log_prob(x)``.
      p: a distribution with ``log_prob(x)``.
      num_samples: how many draws of q, at least 2.

    Returns:
      The estimate and its standard error, each of q's and p's broadcast batch shape.
    """
    return reverse_kl_estimate(rng_key, q.sample, q.log_prob, p.log_prob, num_samples)
