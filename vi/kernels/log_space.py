"""Discrete KL divergence and entropy from log-probabilities or logits.

For users who hold log-probabilities or logits (distillation, token-level KL in
RLHF): nothing is exponentiated but weights in [0, 1], so nothing underflows
before it is used. The semantics at the edges follow `vi.kernels.discrete`:
log p = -inf (p = 0) contributes 0, log q = -inf under log p > -inf gives +inf,
and NaN gives NaN.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from vi.kernels.validate import (
    as_float_array,
    broadcast_pair,
    canonical_axis,
    empty_result,
    finish_result,
    log_base,
)


def _sum_log_terms(log_p: jax.Array, log_q: jax.Array, axis: int) -> jax.Array:
    # Σ p (log p - log q) from logs, forming only p = exp(log p) <= 1. log p = -inf (p = 0)
    # contributes 0 unless log q is NaN; log q = -inf under log p > -inf contributes +inf. The
    # double `where` keeps the infinities out of the gradient.
    zero = (log_p == -jnp.inf) & ~jnp.isnan(log_q)
    infinite = (log_q == -jnp.inf) & (log_p > -jnp.inf)
    skip = zero | infinite
    lp, lq = jnp.where(skip, 0, log_p), jnp.where(skip, 0, log_q)
    return jnp.sum(jnp.where(infinite, jnp.inf, jnp.exp(lp) * (lp - lq)), axis=axis)


def kl_divergence_log(
    log_p: ArrayLike, log_q: ArrayLike, *, axis: int = -1, base: float | None = None
) -> jax.Array:
    """KL divergence from log-probabilities: Σ exp(log_p) (log_p - log_q) along `axis`.

    The log-probabilities are used as given, not renormalised (that is
    `kl_divergence_from_logits`), so this equals `kl_divergence(exp(log_p), exp(log_q),
    normalize=False)` without underflow: only exp(log_p) is formed, and a p too small to
    represent contributes its (negligible) term as 0. log_p = -inf contributes 0;
    log_q = -inf where log_p > -inf gives +inf; NaN gives NaN.

    Args:
      log_p: (..., K, ...) log-probabilities, distributions along `axis`.
      log_q: (..., K, ...) reference log-probabilities, broadcastable against `log_p`.
      axis: the axis holding the K outcomes.
      base: logarithm base of the result; None for nats.

    Returns:
      (...) the divergences: the broadcast shape without `axis`.
    """
    log_p, log_q = broadcast_pair(log_p, log_q, ("log_p", "log_q"))
    axis = canonical_axis(axis, log_p.shape, "log_p and log_q")
    scale = log_base(base)
    if log_p.shape[axis] == 0:
        return empty_result(log_p.shape, axis, log_p.dtype)
    return finish_result(_sum_log_terms(log_p, log_q, axis), True, scale)


def kl_divergence_from_logits(
    logits_p: ArrayLike, logits_q: ArrayLike, *, axis: int = -1, base: float | None = None
) -> jax.Array:
    """KL(softmax(logits_p) ‖ softmax(logits_q)) along `axis`, e.g. for distillation.

    Computed from `jax.nn.log_softmax` of both, never exponentiating a logit. A logit of
    -inf is an outcome of probability 0 (masking).

    Args:
      logits_p: (..., K, ...) unnormalised log-probabilities, distributions along `axis`.
      logits_q: (..., K, ...) the same for the reference, broadcastable against `logits_p`.
      axis: the axis holding the K outcomes.
      base: logarithm base of the result; None for nats.

    Returns:
      (...) the divergences: the broadcast shape without `axis`.

    Examples:
      >>> logits = jnp.log(jnp.array([6.0, 3.0, 1.0])), jnp.log(jnp.array([5.0, 4.0, 1.0]))
      >>> print(f"{float(kl_divergence_from_logits(*logits)):.6f}")
      0.023088
    """
    logits_p, logits_q = broadcast_pair(logits_p, logits_q, ("logits_p", "logits_q"))
    axis = canonical_axis(axis, logits_p.shape, "logits_p and logits_q")
    scale = log_base(base)
    if logits_p.shape[axis] == 0:
        return empty_result(logits_p.shape, axis, logits_p.dtype)
    log_p = jax.nn.log_softmax(logits_p, axis=axis)
    log_q = jax.nn.log_softmax(logits_q, axis=axis)
    return finish_result(_sum_log_terms(log_p, log_q, axis), True, scale)


def entropy_from_logits(
    logits: ArrayLike, *, axis: int = -1, base: float | None = None
) -> jax.Array:
    """Entropy of softmax(logits) along `axis`, from `jax.nn.log_softmax`.

    Args:
      logits: (..., K, ...) unnormalised log-probabilities; -inf marks probability 0.
      axis: the axis holding the K outcomes.
      base: logarithm base of the result; None for nats.

    Returns:
      (...) the entropies: the shape of `logits` without `axis`.
    """
    logits = as_float_array(logits, "logits")
    axis = canonical_axis(axis, logits.shape, "logits")
    scale = log_base(base)
    if logits.shape[axis] == 0:
        return empty_result(logits.shape, axis, logits.dtype)
    log_p = jax.nn.log_softmax(logits, axis=axis)
    log_p = jnp.where(log_p == -jnp.inf, 0, log_p)
    return finish_result(-jnp.sum(jnp.exp(log_p) * log_p, axis=axis), True, scale)
