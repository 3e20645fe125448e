"""How well a mean-field Gaussian fit matches a target's known moments and modes.

Every function is pure and shape-static: ``jit`` it, or ``vmap`` it over a batch
of fits (and targets).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import gammainc, gammaincc

from vi.families import family
from vi.families.family import Params
from vi.targets.target import Truth

_BISECTION_STEPS = 100


class MomentErrors(NamedTuple):
    """Per-coordinate errors of a fit's moments.

    Attributes:
      mean_error: (D,) ``(loc - mean) / sqrt(variance)``: the mean error in units
        of the target's standard deviation.
      log_variance_ratio: (D,) ``log(scale^2 / variance)``: 0 when exact,
        negative when the fit is too narrow.
    """

    mean_error: jax.Array
    log_variance_ratio: jax.Array


class ModeCoverage(NamedTuple):
    """Which of a target's modes a fit covers.

    Attributes:
      mahalanobis_sq: (K,) squared Mahalanobis distance of each mode under q;
        ``-mahalanobis_sq / 2`` is the log of q's density at the mode over q's peak.
      covered: (K,) whether the mode lies in q's highest-density region.
      covered_weight: () the total mode weight of the covered modes (the share
        of modes when the truth has no mode weights).
    """

    mahalanobis_sq: jax.Array
    covered: jax.Array
    covered_weight: jax.Array


def moment_errors(params: Params, truth: Truth) -> MomentErrors:
    """Standardised mean errors and log marginal-variance ratios of a fitted Gaussian.

    Args:
      params: the fit's parameters, of any family.
      truth: the target's exact ``mean`` and ``variance`` (D,).

    Returns:
      The per-coordinate :class:`MomentErrors`.
    """
    mean_error = (params.loc - truth.mean) * jax.lax.rsqrt(truth.variance)
    log_variance_ratio = family.log_variance(params) - jnp.log(truth.variance)
    return MomentErrors(mean_error, log_variance_ratio)


def mode_coverage(params: Params, truth: Truth, *, level: float = 0.95) -> ModeCoverage:
    """Checks, mode by mode, whether it lies in q's ``level`` highest-density region.

    q's highest-density region at level ``level`` is the ellipsoid
    ``{x : sum(((x - loc) / scale)^2) <= chi2_D.ppf(level)}``, which holds mass
    ``level`` under q.

    Args:
      params: the fit's parameters, of any family.
      truth: the target's ``modes`` (K, D) and, optionally, ``mode_weights`` (K,).
      level: the mass of q's region, in (0, 1).

    Returns:
      The :class:`ModeCoverage`.

    Raises:
      ValueError: if ``truth.modes`` is None.
    """
    if truth.modes is None:
        raise ValueError("truth.modes is None: this target has no list of modes")
    mahalanobis_sq = jax.vmap(lambda mode: _mahalanobis_sq(params, mode))(truth.modes)
    radius_sq = chi2_quantile(level, params.loc.shape[-1], dtype=mahalanobis_sq.dtype)
    covered = mahalanobis_sq <= radius_sq
    if truth.mode_weights is None:
        covered_weight = jnp.mean(covered.astype(mahalanobis_sq.dtype))
    else:
        covered_weight = jnp.sum(jnp.where(covered, truth.mode_weights, 0.0))
    return ModeCoverage(mahalanobis_sq, covered, covered_weight)


def target_mass_in_hdr(
    params: Params, target_samples: jax.Array, *, level: float = 0.95
) -> jax.Array:
    """The share of target mass inside q's ``level`` highest-density region.

    Estimated from exact target draws as the fraction that falls in the region;
    its Monte Carlo standard error is ``sqrt(f (1 - f) / num_samples)``. When q
    equals the target the answer is ``level``; a fit that misses a mode of
    weight w loses about w.

    Args:
      params: the fit's parameters, of any family.
      target_samples: (num_samples, D) exact draws from the target.
      level: the mass of q's region, in (0, 1).

    Returns:
      () the fraction of ``target_samples`` inside the region.
    """
    mahalanobis_sq = jax.vmap(lambda x: _mahalanobis_sq(params, x))(target_samples)
    radius_sq = chi2_quantile(level, params.loc.shape[-1], dtype=mahalanobis_sq.dtype)
    return jnp.mean((mahalanobis_sq <= radius_sq).astype(mahalanobis_sq.dtype))


def chi2_quantile(
    level: jax.typing.ArrayLike, dof: int, *, dtype: jax.typing.DTypeLike | None = None
) -> jax.Array:
    """The ``level`` quantile of a chi-square distribution with ``dof`` degrees of freedom.

    Found by bisection on ``gammainc(dof / 2, x / 2) = level`` (on the survival
    function ``gammaincc`` for levels above 1/2, where it keeps its digits) inside
    ``[0, dof + 2 sqrt(dof t) + 2 t]``, ``t = -log(1 - level)``, an upper bound
    from Laurent and Massart (2000, Lemma 1).

    Args:
      level: () a probability in (0, 1).
      dof: degrees of freedom, a positive integer (static).
      dtype: floating dtype of the result; the default float type when None.

    Returns:
      () the quantile.
    """
    if isinstance(level, int | float) and not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if not isinstance(dof, int) or dof < 1:
        raise ValueError(f"dof must be a positive integer, got {dof!r}")
    dtype = jnp.result_type(float) if dtype is None else dtype
    level = jnp.asarray(level, dtype)
    half_dof = jnp.asarray(0.5 * dof, dtype)
    t = -jnp.log1p(-level)
    upper = dof + 2.0 * jnp.sqrt(dof * t) + 2.0 * t

    init = (jnp.zeros_like(upper), upper, half_dof, level)
    low, high, _, _ = jax.lax.fori_loop(0, _BISECTION_STEPS, _bisect_chi2, init)
    return 0.5 * (low + high)


def _bisect_chi2(_, state):
    # Module level, not a closure, so eager calls reuse one traced loop body.
    low, high, half_dof, level = state
    middle = 0.5 * (low + high)
    # Upper levels compare survival probabilities, which keep their digits there.
    below = jnp.where(
        level < 0.5,
        gammainc(half_dof, 0.5 * middle) < level,
        gammaincc(half_dof, 0.5 * middle) > 1.0 - level,
    )
    return jnp.where(below, middle, low), jnp.where(below, high, middle), half_dof, level


_mahalanobis_sq = family.mahalanobis_sq
