"""All diagnostics of a fit in one compiled, batchable call.

``diagnose`` estimates both directions of KL with their standard errors, the
PSIS k-hat of the importance ratios ``log p - log q``, and, when the target's
truth is known, moment errors and mode coverage. It is a pure function of
arrays, so ``jax.vmap(lambda k, p: diagnose(k, target, p))`` diagnoses a
thousand fits at once.

How each KL is estimated (recorded in ``Diagnostics.*_method``):
- ``log Z``: the target's ``truth.log_normalizer`` when known (``EXACT``),
  else the importance-sampling estimate ``log mean exp(log p - log q)`` over
  draws of q (``IMPORTANCE``), which is biased low when k-hat is large.
- ``KL(q || p) = log Z - E_q[log p - log q]``, from draws of q.
- ``KL(p || q) = E_p[log p - log Z - log q]``: from exact draws of p when the
  target has a sampler (``EXACT``), else from given draws of p such as NUTS
  draws (``DRAWS``), else by self-normalised importance sampling from the draws
  of q (``IMPORTANCE``), reliable only when k-hat is small. Given draws also
  stand in for the truth's moments when the target has no truth.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vi.diagnostics.moments import mode_coverage, moment_errors, target_mass_in_hdr
from vi.diagnostics.psis import interpret_pareto_k, pareto_smooth
from vi.families import family
from vi.families.family import PARAMS_TYPES, Params
from vi.fitting.start import check_num_eval_samples
from vi.kernels.estimate import mean_estimate
from vi.targets.target import Target, Truth, check_draws

EXACT, IMPORTANCE, DRAWS = 0, 1, 2
METHOD_NAMES = {EXACT: "exact", IMPORTANCE: "importance sampling", DRAWS: "given draws"}


class Diagnostics(NamedTuple):
    """Diagnostics of one fit (add a leading axis for a batch).

    Attributes:
      reverse_kl, reverse_kl_stderr: KL(q || p) and its Monte-Carlo standard error.
      forward_kl, forward_kl_stderr: KL(p || q) and its standard error.
      log_normalizer_method, forward_kl_method: ``EXACT`` or ``IMPORTANCE`` (see module doc).
      pareto_k: PSIS k-hat of ``log p - log q`` under q (< 0.5 good, > 0.7 unreliable).
      mean_error: (D,) (q's mean - true mean) / true sd; NaN when the truth is unknown.
      corrected_mean_error: (D,) the same for the PSIS-corrected mean (``vi.psis``) from
        the draws of q: how much importance sampling repairs q, trustworthy only when
        k-hat is small.
      log_variance_ratio: (D,) log(q's variance / true variance); NaN when unknown.
      mode_covered: (K,) whether each true mode lies in q's 95 % region ((0,) when unknown).
      covered_mode_weight: () the target weight of the covered modes; NaN when unknown.
      mass_in_hdr: () the share of target mass inside q's 95 % region, from exact
        target draws; NaN without a sampler.
    """

    reverse_kl: jax.Array
    reverse_kl_stderr: jax.Array
    forward_kl: jax.Array
    forward_kl_stderr: jax.Array
    log_normalizer_method: jax.Array
    forward_kl_method: jax.Array
    pareto_k: jax.Array
    mean_error: jax.Array
    corrected_mean_error: jax.Array
    log_variance_ratio: jax.Array
    mode_covered: jax.Array
    covered_mode_weight: jax.Array
    mass_in_hdr: jax.Array


def diagnose(
    rng_key: jax.Array,
    target: Target,
    params: Params,
    *,
    num_samples: int = 4000,
    draws: jax.Array | None = None,
) -> Diagnostics:
    """Diagnoses a fitted Gaussian (of any family) against its target.

    Args:
      rng_key: key for the draws of q (and of p, when the target has a sampler).
      target: the target that was fitted.
      params: the fitted parameters, (D,) each, or the ``vi.fit`` result.
      num_samples: draws of q (and of p) for every estimate.
      draws: (N, D) draws of p (e.g. NUTS) for a target without an exact sampler.

    Returns:
      The ``Diagnostics``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from vi.targets.mixture import bimodal_2d
      >>> target = bimodal_2d(separation=8.0)
      >>> one_mode = mean_field.MeanFieldParams(jnp.array([4.0, 0.0]), jnp.zeros(2))
      >>> d = diagnose(jax.random.key(0), target, one_mode)
      >>> bool(jnp.abs(d.reverse_kl - jnp.log(2.0)) < 0.01)  # one of two equal modes
      True
    """
    params = getattr(params, "params", params)  # a FitResult
    if not isinstance(params, PARAMS_TYPES):
        raise TypeError(
            "params must be a fit's parameters (MeanFieldParams, FullRankParams or "
            f"LowRankParams) or a vi.fit result, got {type(params).__name__}"
        )
    check_num_eval_samples(num_samples, "num_samples")
    if draws is not None:
        check_draws(draws, target, "diagnose")
    dim = jnp.shape(params.loc)[-1] if jnp.ndim(params.loc) else None
    if dim != target.dim:
        raise ValueError(
            f"params.loc has shape {jnp.shape(params.loc)}, but the target has dimension "
            f"{target.dim}: diagnose takes the parameters of a fit of this target"
        )
    q_key, p_key = jax.random.split(rng_key)
    dtype = params.loc.dtype
    x_q = family.sample(q_key, params, num_samples)
    log_ratios = jax.vmap(target.logdensity_fn)(x_q) - family.log_prob(params, x_q)
    log_mean_ratio = jax.nn.logsumexp(log_ratios) - jnp.log(num_samples)

    truth = target.truth
    if truth is not None and truth.log_normalizer is not None:
        log_z, z_method = jnp.asarray(truth.log_normalizer, dtype), EXACT
    else:
        log_z, z_method = log_mean_ratio, IMPORTANCE
    mean_ratio, ratio_stderr = mean_estimate(log_ratios)
    reverse_kl = log_z - mean_ratio

    if target.sample_fn is not None or draws is not None:
        x_p = target.sample_fn(p_key, num_samples) if draws is None else draws
        terms = jax.vmap(target.logdensity_fn)(x_p) - log_z - family.log_prob(params, x_p)
        forward_kl, forward_stderr = mean_estimate(terms)
        forward_method = EXACT if draws is None else DRAWS
        mass_in_hdr = target_mass_in_hdr(params, x_p)
        if truth is None and draws is not None:
            truth = Truth(mean=jnp.mean(draws, axis=0), variance=jnp.var(draws, axis=0))
    else:
        weights = jax.nn.softmax(log_ratios)
        weighted_mean = jnp.sum(weights * log_ratios)
        forward_kl = weighted_mean - log_z
        # Delta-method standard error of a self-normalised estimate.
        forward_stderr = jnp.sqrt(jnp.sum(weights**2 * (log_ratios - weighted_mean) ** 2))
        forward_method = IMPORTANCE
        mass_in_hdr = jnp.full((), jnp.nan, dtype)

    smoothed = pareto_smooth(log_ratios)
    if truth is not None:
        errors = moment_errors(params, truth)
        mean_error, log_variance_ratio = errors.mean_error, errors.log_variance_ratio
        corrected_mean = jnp.exp(smoothed.log_weights) @ x_q
        corrected_mean_error = (corrected_mean - truth.mean) / jnp.sqrt(truth.variance)
    else:
        mean_error = log_variance_ratio = jnp.full(params.loc.shape, jnp.nan, dtype)
        corrected_mean_error = mean_error
    if truth is not None and truth.modes is not None:
        coverage = mode_coverage(params, truth)
        mode_covered, covered_weight = coverage.covered, coverage.covered_weight
    else:
        mode_covered, covered_weight = jnp.zeros((0,), bool), jnp.full((), jnp.nan, dtype)

    return Diagnostics(
        reverse_kl=reverse_kl,
        reverse_kl_stderr=ratio_stderr,
        forward_kl=forward_kl,
        forward_kl_stderr=forward_stderr,
        log_normalizer_method=jnp.asarray(z_method, jnp.int32),
        forward_kl_method=jnp.asarray(forward_method, jnp.int32),
        pareto_k=smoothed.pareto_k,
        mean_error=mean_error,
        corrected_mean_error=corrected_mean_error,
        log_variance_ratio=log_variance_ratio,
        mode_covered=mode_covered,
        covered_mode_weight=covered_weight,
        mass_in_hdr=mass_in_hdr,
    )


def describe(diagnostics: Diagnostics, num_samples: int = 4000) -> dict:
    """A plain-Python summary of one fit's diagnostics, with k-hat and methods in words."""
    # NumPy, not jax.numpy: host values (a row of a batch's diagnostics) stay on the host.
    d = jax.tree.map(lambda x: np.asarray(x).tolist(), diagnostics._asdict())
    d["pareto_k_reading"] = interpret_pareto_k(diagnostics.pareto_k, num_samples)
    d["log_normalizer_method"] = METHOD_NAMES[int(diagnostics.log_normalizer_method)]
    d["forward_kl_method"] = METHOD_NAMES[int(diagnostics.forward_kl_method)]
    return d
