"""Pareto-smoothed importance sampling (PSIS) and its k-hat diagnostic.

Follows Vehtari, Simpson, Gelman, Yao and Gabry, "Pareto Smoothed Importance
Sampling" (JMLR 2024, arXiv:1507.02646): fit a generalized Pareto distribution
(GPD) to the largest ``M = ceil(min(N / 5, 3 sqrt(N)))`` importance ratios with
the empirical-Bayes estimator of Zhang and Stephens (2009, Technometrics 51),
shrink the shape towards 0.5 with the paper's weak prior, replace the tail
ratios by the fitted GPD's expected order statistics, and truncate them at the
largest raw ratio. The fitted shape ``k`` says how many moments the ratios have
(``1 / k``): below 0.5 their variance is finite and importance sampling is
reliable; above 0.7 it is not, whatever N.

Functions take one example; batch with ``jax.vmap`` (the tail length is static,
so a thousand fits of equal N run as one compiled call).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vi import backend

_PRIOR_PSEUDO_COUNT = 10.0
_PRIOR_SHAPE = 0.5
_MIN_GRID_POINTS = 30
_MIN_TAIL_LENGTH = 5


class GeneralizedPareto(NamedTuple):
    """A generalized Pareto distribution with location 0.

    ``P(X > x) = (1 + shape * x / scale) ** (-1 / shape)`` for ``x >= 0``.

    Attributes:
      shape: () the shape ``k`` (the tail index; ``1 / k`` moments exist for k > 0).
      scale: () the scale ``sigma > 0``.
    """

    shape: jax.Array
    scale: jax.Array


class PSISResult(NamedTuple):
    """Output of :func:`pareto_smooth`.

    Attributes:
      log_weights: (N,) Pareto-smoothed, self-normalised log weights
        (``logsumexp(log_weights) == 0``).
      pareto_k: () the fitted, prior-adjusted GPD shape k-hat.
    """

    log_weights: jax.Array
    pareto_k: jax.Array


def tail_length(num_samples: int) -> int:
    """The number of largest ratios the GPD is fitted to, ``ceil(min(N / 5, 3 sqrt(N)))``."""
    return min(-(-num_samples // 5), math.ceil(3.0 * math.sqrt(num_samples)))


def fit_generalized_pareto(
    exceedances: jax.typing.ArrayLike, *, prior_adjusted: bool = True
) -> GeneralizedPareto:
    """Fits a location-0 GPD by Zhang and Stephens' empirical-Bayes estimator.

    With ``theta = -k / sigma``, the profile log likelihood given ``theta`` is
    ``n (log(-theta / k(theta)) - k(theta) - 1)`` where
    ``k(theta) = mean(log1p(-theta x))``. ``theta`` is averaged over a grid of
    ``30 + floor(sqrt(n))`` points built from the sample maximum and first
    quartile, weighted by the likelihood; k and sigma follow from that average.

    Args:
      exceedances: (n,) non-negative values above the threshold, n >= 2, in any order.
      prior_adjusted: shrink k towards 0.5 as PSIS does, ``(n k + 10 * 0.5) / (n + 10)``;
        sigma stays at its unadjusted value.

    Returns:
      The fitted distribution (shape and scale are ``()``).
    """
    x = jnp.sort(jnp.asarray(exceedances))
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    n = x.shape[-1]
    if x.ndim != 1 or n < 2:
        raise ValueError(f"exceedances must have shape (n,) with n >= 2, got {x.shape}")
    num_grid = _MIN_GRID_POINTS + math.isqrt(n)
    quartile = x[int(n / 4 + 0.5) - 1]
    j = jnp.arange(1, num_grid + 1, dtype=x.dtype)
    theta = 1.0 / x[-1] + (1.0 - jnp.sqrt(num_grid / (j - 0.5))) / (3.0 * quartile)
    shape = jnp.mean(jnp.log1p(-theta[:, None] * x), axis=-1)
    log_likelihood = n * (jnp.log(-theta / shape) - shape - 1.0)
    theta_mean = jnp.sum(jax.nn.softmax(log_likelihood) * theta)
    shape = jnp.mean(jnp.log1p(-theta_mean * x))
    scale = -shape / theta_mean
    if prior_adjusted:
        shape = (n * shape + _PRIOR_PSEUDO_COUNT * _PRIOR_SHAPE) / (n + _PRIOR_PSEUDO_COUNT)
    return GeneralizedPareto(shape, scale)


@jax.jit
def pareto_smooth(log_ratios: jax.typing.ArrayLike) -> PSISResult:
    """Pareto-smooths importance ratios and reports k-hat.

    A user-facing entry point, so it is jitted here (it composes with ``vmap``
    and an outer ``jit`` as usual).

    Args:
      log_ratios: (N,) ``log p(x_i) - log q(x_i)`` for independent draws ``x_i ~ q``
        (p may be unnormalised). N must give a tail of at least 5 ratios (N >= 21).

    Returns:
      A :class:`PSISResult`. If the tail has no spread (all its ratios equal the
      threshold) k-hat is ``-inf`` and no smoothing happens; if a ratio is +inf
      k-hat is ``+inf``; if one is NaN, or all are ``-inf``, k-hat is NaN. In the
      last two cases the log weights are NaN.

    Examples:
      >>> import jax
      >>> x = jax.random.normal(jax.random.key(0), (1000,)) * 2.0
      >>> result = pareto_smooth(-0.5 * x**2 + 0.5 * (x / 2.0) ** 2)  # q = N(0, 4), p = N(0, 1)
      >>> bool(result.pareto_k < 0.5)
      True

      A batch of fits: ``jax.vmap(pareto_smooth)(log_ratios)`` with ``log_ratios`` (B, N).
    """
    log_ratios = jnp.asarray(log_ratios)
    if not jnp.issubdtype(log_ratios.dtype, jnp.floating):
        log_ratios = log_ratios.astype(jnp.result_type(float))
    if log_ratios.ndim != 1:
        raise ValueError(f"log_ratios must have shape (N,), got {log_ratios.shape}")
    num_samples = log_ratios.shape[0]
    num_tail = tail_length(num_samples)
    if num_tail < _MIN_TAIL_LENGTH:
        raise ValueError(
            f"pareto_smooth needs a tail of at least {_MIN_TAIL_LENGTH} ratios, "
            f"got N = {num_samples} (tail {num_tail})"
        )

    top, top_index = backend.top_k(log_ratios, num_tail + 1)
    largest, cutoff = top[0], top[num_tail]
    tail, tail_index = top[:num_tail][::-1], top_index[:num_tail][::-1]
    # Ratios scaled by exp(-largest); exp(t) - exp(c) written to keep digits near c.
    exceedances = jnp.where(tail > cutoff, jnp.exp(tail - largest) * -jnp.expm1(cutoff - tail), 0.0)
    has_spread = exceedances[-1] > 0
    gpd = fit_generalized_pareto(exceedances)

    probabilities = (jnp.arange(1, num_tail + 1, dtype=tail.dtype) - 0.5) / num_tail
    log_quantiles = _gpd_log_quantile(gpd, probabilities)
    smoothed = largest + jnp.logaddexp(cutoff - largest, log_quantiles)
    smoothed = jnp.minimum(smoothed, largest)
    smooth = has_spread & jnp.isfinite(gpd.shape)
    log_weights = log_ratios.at[tail_index].set(jnp.where(smooth, smoothed, tail))
    log_weights = log_weights - jax.nn.logsumexp(log_weights)

    undefined = jnp.any(jnp.isnan(log_ratios)) | (largest == -jnp.inf)
    has_inf = largest == jnp.inf
    pareto_k = jnp.where(has_spread, gpd.shape, -jnp.inf)
    pareto_k = jnp.where(has_inf, jnp.inf, pareto_k)
    pareto_k = jnp.where(undefined, jnp.nan, pareto_k)
    log_weights = jnp.where(undefined | has_inf, jnp.nan, log_weights)
    return PSISResult(log_weights, pareto_k)


def pareto_k_threshold(num_samples: int) -> float:
    """The sample-size-dependent k-hat threshold ``min(1 - 1 / log10(N), 0.7)``.

    Above it, N draws are too few for a PSIS estimate to be trusted even when
    k-hat < 0.7 (Vehtari et al. 2024); it reaches 0.7 at N = 10^(10/3), about 2154.
    """
    if num_samples <= 1:
        return -math.inf
    return min(1.0 - 1.0 / math.log10(num_samples), 0.7)


def interpret_pareto_k(pareto_k: float | jax.Array, num_samples: int) -> str:
    """Reads a k-hat as one of ``"good"``, ``"ok"``, ``"needs more samples"``, ``"unreliable"``.

    ``"good"``: k < 0.5, the ratios have finite variance. ``"ok"``: 0.5 <= k <= 0.7
    and below the sample-size threshold; the estimate is usable with slower
    convergence. ``"needs more samples"``: k <= 0.7 but above
    :func:`pareto_k_threshold` for this N. ``"unreliable"``: k > 0.7, or NaN. This is a
    Python-level summary of one value; use the number itself inside ``jit``.

    Args:
      pareto_k: a k-hat from :func:`pareto_smooth`.
      num_samples: the N it was computed from.

    Returns:
      The label.
    """
    k = float(pareto_k)
    if math.isnan(k) or k > 0.7:
        return "unreliable"
    if k > pareto_k_threshold(num_samples):
        return "needs more samples"
    if k >= 0.5:
        return "ok"
    return "good"


def _gpd_log_quantile(gpd: GeneralizedPareto, probabilities: jax.Array) -> jax.Array:
    """``log F^{-1}(p) = log sigma + log(((1 - p)^{-k} - 1) / k)``, with its k -> 0 limit."""
    log_survival = jnp.log1p(-probabilities)
    shape = gpd.shape
    near_zero = jnp.abs(shape) < 1e-8
    safe_shape = jnp.where(near_zero, 1.0, shape)
    exponent = -safe_shape * log_survival
    log_ratio = _log_abs_expm1(exponent) - jnp.log(jnp.abs(safe_shape))
    log_ratio = jnp.where(near_zero, jnp.log(-log_survival), log_ratio)
    return jnp.log(gpd.scale) + log_ratio


def _log_abs_expm1(a: jax.Array) -> jax.Array:
    """``log |exp(a) - 1| = max(a, 0) + log(1 - exp(-|a|))``, free of overflow."""
    return jnp.maximum(a, 0.0) + jnp.log(-jnp.expm1(-jnp.abs(a)))
