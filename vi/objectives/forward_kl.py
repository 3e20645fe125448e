"""Forward KL, ``KL(p || q)``: mass-covering fits of q to a target p.

Minimising ``KL(p || q) = E_p[log p] - E_p[log q]`` over q is minimising the
cross-entropy ``-E_p[log q(x)]``; each loss below estimates it from draws of p:
exact samples, a given pool (e.g. NUTS draws), or q itself reweighted by
self-normalised importance sampling (SNIS). For a mean-field Gaussian the
optimum matches p's per-coordinate means and variances (``moment_match``).

Every loss has the form ``(params, rng_key) -> (loss, aux)`` used by
``vi.fitting.stochastic.stochastic_loop``; ``aux`` is the effective sample size
as a fraction of the draws for SNIS, and NaN otherwise.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from vi.families import mean_field
from vi.families.mean_field import MeanFieldParams


def moment_match(draws: jax.Array) -> MeanFieldParams:
    """The mean-field Gaussian minimising the forward KL to the empirical ``draws``.

    Args:
      draws: (N, D) draws of p.

    Returns:
      Parameters with the draws' per-coordinate mean and (biased) standard deviation.
    """
    return MeanFieldParams(jnp.mean(draws, axis=0), jnp.log(jnp.std(draws, axis=0)))


def _nan_like(x):
    return jnp.full((), jnp.nan, x.dtype)


def exact_samples_loss(
    sample_fn: Callable[[jax.Array, int], jax.Array], num_samples: int
) -> Callable[[MeanFieldParams, jax.Array], tuple[jax.Array, jax.Array]]:
    """Cross-entropy from fresh exact draws of p at every step.

    Args:
      sample_fn: ``(rng_key, n) -> (n, D)`` exact draws of the target.
      num_samples: draws per step.
    """

    def loss_fn(params, rng_key):
        x = sample_fn(rng_key, num_samples)
        loss = -jnp.mean(mean_field.log_prob(params, x))
        return loss, _nan_like(loss)

    return loss_fn


def draws_loss(
    draws: jax.Array, batch_size: int | None
) -> Callable[[MeanFieldParams, jax.Array], tuple[jax.Array, jax.Array]]:
    """Cross-entropy over a fixed pool of draws of p (e.g. MCMC draws).

    Args:
      draws: (N, D) the pool.
      batch_size: draws per step, sampled with replacement; ``None`` uses the
        whole pool every step (a deterministic loss).
    """

    def loss_fn(params, rng_key):
        if batch_size is None:
            x = draws
        else:
            x = draws[jax.random.randint(rng_key, (batch_size,), 0, draws.shape[0])]
        loss = -jnp.mean(mean_field.log_prob(params, x))
        return loss, _nan_like(loss)

    return loss_fn


def snis_weights(log_weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Self-normalised weights, truncated at ``sqrt(n)`` times their mean.

    Truncation (Ionides, 2008) bounds the influence of any single draw, which
    keeps a step from being taken by one lucky draw when the weights collapse.

    Args:
      log_weights: (n,) unnormalised log importance weights.

    Returns:
      The (n,) normalised truncated weights, and the effective sample size of the
      untruncated weights as a fraction of n, ``1 / (n * sum w^2)``.
    """
    n = log_weights.shape[0]
    weights = jax.nn.softmax(log_weights)
    ess_fraction = 1.0 / (n * jnp.sum(weights**2))
    truncated = jnp.minimum(weights, jnp.sqrt(n) / n)
    return truncated / jnp.sum(truncated), ess_fraction


def snis_loss(
    logdensity_fn: Callable[[jax.Array], jax.Array],
    num_samples: int,
    *,
    defensive_weight: float = 0.5,
    widen: float = 2.0,
) -> Callable[[MeanFieldParams, jax.Array], tuple[jax.Array, jax.Array]]:
    """Cross-entropy by self-normalised importance sampling from q.

    The proposal is a defensive mixture (Hesterberg, 1995): with probability
    ``defensive_weight`` a draw comes from q widened by ``widen``, so the tails
    of p beyond q still get draws. The proposal's parameters are held fixed
    (no gradient flows through the weights). SNIS is biased for finite
    ``num_samples`` and its weights can collapse when q misses mass of p; the
    per-step ESS fraction is returned so the fit can report it.

    Args:
      logdensity_fn: unnormalised log density of the target, (D,) -> ().
      num_samples: draws per step.
      defensive_weight: the mixture weight of the widened component, in [0, 1).
      widen: the widened component's scale factor (>= 1).
    """
    log_widen = jnp.log(widen)

    def loss_fn(params, rng_key):
        proposal = jax.lax.stop_gradient(params)
        wide = MeanFieldParams(proposal.loc, proposal.log_scale + log_widen)
        pick_key, draw_key = jax.random.split(rng_key)
        eps = jax.random.normal(draw_key, (num_samples, *params.loc.shape), params.loc.dtype)
        from_wide = jax.random.bernoulli(pick_key, defensive_weight, (num_samples, 1))
        x = jnp.where(
            from_wide, mean_field.transform(wide, eps), mean_field.transform(proposal, eps)
        )
        log_r = jnp.logaddexp(
            jnp.log1p(-defensive_weight) + mean_field.log_prob(proposal, x),
            jnp.log(defensive_weight) + mean_field.log_prob(wide, x),
        )
        log_p = jax.vmap(logdensity_fn)(x)
        weights, ess_fraction = snis_weights(jnp.where(jnp.isnan(log_p), -jnp.inf, log_p) - log_r)
        loss = -jnp.sum(weights * mean_field.log_prob(params, x))
        return loss, ess_fraction

    return loss_fn
