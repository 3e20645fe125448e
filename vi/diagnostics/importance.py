"""Checking and correcting a fit by Pareto-smoothed importance sampling.

Yao, Vehtari, Simpson & Gelman (2018, "Yes, but did it work?: Evaluating variational
inference") read the PSIS k-hat of ``log p - log q`` over draws of q as a verdict on the
fit (k-hat < 0.7: q is close enough for importance sampling to correct it), and use the
smoothed weights to correct expectations under q into estimates under p.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vi.diagnostics.psis import pareto_k_threshold, pareto_smooth
from vi.families import family
from vi.families.family import PARAMS_TYPES
from vi.fitting import programs


class PSISEstimate(NamedTuple):
    """Importance-sampling estimates from draws of a fitted q.

    Attributes:
      draws: (N, D) draws of q on the target's unconstrained space.
      log_weights: (N,) Pareto-smoothed, self-normalised log weights.
      pareto_k: () k-hat (< 0.5 good, <= 0.7 usable given enough draws, above unreliable).
      ess: () the effective sample size of the weights, ``1 / Σ w²``.
      reliable: () whether k-hat is at most ``min(1 - 1 / log10 N, 0.7)`` (Vehtari et al.
        2024): only then are the corrected moments to be trusted.
      mean, variance: (D,) the corrected posterior means and variances on the
        unconstrained space.
      site_mean, site_variance: the same in the model's space, site by site (the target's
        ``constrain_fn`` applied to the draws).
    """

    draws: jax.Array
    log_weights: jax.Array
    pareto_k: jax.Array
    ess: jax.Array
    reliable: jax.Array
    mean: jax.Array
    variance: jax.Array
    site_mean: Any
    site_variance: Any


def _weighted_moments(weights, values):
    """Mean and variance of ``values`` (N, ...) under normalised ``weights`` (N,)."""
    w = weights.reshape(weights.shape + (1,) * (values.ndim - 1))
    mean = jnp.sum(w * values, axis=0)
    return mean, jnp.sum(w * (values - mean) ** 2, axis=0)


def psis(rng_key: jax.Array, target, fit, num_draws: int = 4000) -> PSISEstimate:
    """Pareto-smoothed importance sampling from a fitted q to its target.

    Args:
      rng_key: key for the draws of q.
      target: the target that was fitted.
      fit: a ``FitResult`` (or its ``params``) of one fit; for a
        batch, ``jax.vmap`` over the parameters.
      num_draws: N, draws of q (at least 21, for a tail of 5 ratios).

    Returns:
      The ``PSISEstimate``: weights, k-hat, ESS and corrected moments. With k-hat above
      0.7 the weights cannot fix q (``reliable`` is False): the moments are then q's own
      errors in disguise. A small k-hat vouches for the region q's draws reach, not for
      modes they never reach: a q on one of two separated modes can read k-hat < 0.7
      (``experiments/alpha_family``: 0.64) with the other mode's mass missing from
      every estimate.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import vi
      >>> target = vi.from_logdensity(lambda x: -0.5 * jnp.sum((x - 1.0) ** 2), jnp.zeros(2))
      >>> q = vi.MeanFieldParams(jnp.full(2, 0.8), jnp.full(2, 0.2))  # off, and too wide
      >>> estimate = vi.psis(jax.random.key(0), target, q)
      >>> bool(estimate.reliable), bool(jnp.allclose(estimate.mean, 1.0, atol=0.05))
      (True, True)
    """
    params = getattr(fit, "params", fit)
    if not isinstance(params, PARAMS_TYPES):
        raise TypeError(
            "fit must be a vi.fit result or its params (MeanFieldParams, FullRankParams or "
            f"LowRankParams), got {type(fit).__name__}"
        )
    if num_draws < 21:
        raise ValueError(f"num_draws must be at least 21 (a tail of 5 ratios), got {num_draws}")
    return _psis(rng_key, target, params, num_draws=num_draws)


@programs.jit(static_argnames="num_draws")
def _psis(rng_key, target, params, num_draws):
    draws = family.sample(rng_key, params, num_draws)
    log_ratios = jax.vmap(target.logdensity_fn)(draws) - family.log_prob(params, draws)
    smoothed = pareto_smooth(log_ratios)
    weights = jnp.exp(smoothed.log_weights)
    mean, variance = _weighted_moments(weights, draws)
    constrain = target.constrain_fn or (lambda x: x)
    sites = jax.vmap(constrain)(draws)
    site_moments = jax.tree.map(lambda v: _weighted_moments(weights, v), sites)
    is_pair = lambda x: isinstance(x, tuple)
    return PSISEstimate(
        draws=draws,
        log_weights=smoothed.log_weights,
        pareto_k=smoothed.pareto_k,
        ess=1.0 / jnp.sum(weights**2),
        reliable=smoothed.pareto_k <= pareto_k_threshold(num_draws),
        mean=mean,
        variance=variance,
        site_mean=jax.tree.map(lambda m: m[0], site_moments, is_leaf=is_pair),
        site_variance=jax.tree.map(lambda m: m[1], site_moments, is_leaf=is_pair),
    )
