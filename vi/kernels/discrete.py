"""KL divergence, entropy, cross-entropy and Jensen–Shannon divergence of discrete distributions.

Each distribution is a vector of probabilities along `axis` (default: the last); the other
axes are batch axes and broadcast like numpy. The semantics match scipy and are tested
against it (`scipy.special.rel_entr`, `scipy.special.kl_div`, `scipy.stats.entropy`,
`scipy.spatial.distance.jensenshannon`):

- `normalize=True` (the default) divides p and q by their sums along `axis` first, exactly
  as `scipy.stats.entropy` does, so counts or unnormalised weights can be passed directly; a
  distribution that sums to 0 gives NaN. `normalize=False` uses the values as given (the
  plain sum of `rel_entr` terms).
- 0 · log(0 / q) = 0 for every q >= 0, including q = 0; p > 0 with q = 0 gives +inf.
- NaN in gives NaN out, and so does +inf in a distribution that is normalised (as in scipy).
- Negative entries are invalid and give NaN. (scipy differs: `rel_entr` and `kl_div` return
  +inf, `scipy.stats.entropy` returns +-inf; a NaN cannot be mistaken for a large but valid
  divergence.) Use `check_probabilities` or `validate=True`, outside `jit`, to raise instead.
- An empty distribution axis (K = 0) gives 0, like scipy.
- `base` divides by log(base), like `scipy.stats.entropy`; the default is nats.
- Integer, bool and complex inputs raise TypeError (cast counts with `.astype(float)`);
  shapes that do not broadcast and out-of-range axes raise ValueError, at trace time.
- Range of `kl_divergence` and `entropy`: entries below the smallest normal number
  (`finfo.tiny`) may count as 0, and where p == 0 a q that is +inf or at least 1 / finfo.tiny
  (8.5e37 in float32) gives NaN; scipy's `rel_entr` gives 0 there. (Not so for
  `kl_divergence` on rows that take the one-pass path of `vi.backend._one_pass`, which
  matches scipy there: float32 with K <= 16, or K >= 512 a multiple of 32; float64 with
  K > 16384 a multiple of 8.)
- Gradients are exact where the function is differentiable. A term with p = 0 has zero
  gradient with respect to p and to q wherever its exact derivative would be infinite (the
  one-sided derivative of p log p at 0 is -inf), so gradients are finite wherever the value is.

For inputs held as log-probabilities or logits (distillation, token-level KL) use
`vi.kernels.log_space`.
"""

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from vi.backend import fuses, one_pass_sums
from vi.kernels.validate import (
    as_float_array,
    broadcast_pair,
    canonical_axis,
    check_positive_sums,
    check_probabilities,
    empty_result,
    finish_result,
    log_base,
)


def _zero_indicator(p: jax.Array) -> jax.Array:
    # 1 where p == 0 and 0 where p >= finfo.tiny. XLA:CPU keeps max and arithmetic in the fused
    # log-and-sum loop but moves a compare/select (jnp.where) into extra passes over memory,
    # which costs about 3x on large inputs.
    return jnp.maximum(1 - p * (1 / float(jnp.finfo(p.dtype).tiny)), 0)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _sum_rel_entr(p: jax.Array, q: jax.Array, axis: int) -> jax.Array:
    # Sum of p log(p / q) over `axis` for p, q >= 0, with one log of a ratio per entry. Where
    # p == 0 the ratio is (0 + 1) / (q + 1), finite, so the term is exactly 0; elsewhere it is
    # exactly p / q, and p / 0 = inf gives the +inf term.
    z = _zero_indicator(p)
    return jnp.sum(p * jnp.log((p + z) / (q + z)), axis=axis)


@_sum_rel_entr.defjvp
def _sum_rel_entr_jvp(axis, primals, tangents):
    p, q = primals
    dp, dq = tangents
    positive = p > 0
    ratio = jnp.where(positive, p, 1) / jnp.where(positive, q, 1)
    d_p = jnp.where(positive, jnp.log(ratio) + 1, 0)
    d_q = jnp.where(positive, -ratio, 0)
    return _sum_rel_entr(p, q, axis), jnp.sum(d_p * dp + d_q * dq, axis=axis)


def _sums_in_one_pass(p: jax.Array, axis: int) -> bool:
    # Where vi.backend._one_pass is faster on XLA:CPU: most float32 row lengths, and
    # float64 rows longer than 16384 entries.
    return fuses(p.shape[axis], p.dtype)


def _rel_entr(p: jax.Array, q: jax.Array) -> jax.Array:
    zero = p == 0
    # The double `where` keeps log(0) out of both the value and the gradient at p == 0.
    terms = p * jnp.log(jnp.where(zero, 1, p) / jnp.where(zero, 1, q))
    return jnp.where(jnp.minimum(p, q) >= 0, terms, jnp.nan)


def _nonnegative(x: jax.Array, axis: int) -> jax.Array:
    # False for a distribution with a negative or NaN entry (min propagates NaN).
    return jnp.min(x, axis=axis) >= 0


def _validate(x: jax.Array, name: str, axis: int, normalize: bool) -> None:
    check_probabilities(x, name=name, axis=axis)
    if normalize:
        check_positive_sums(x, name=name, axis=axis)


def _pair_inputs(p, q, axis, base, normalize, validate):
    # Entries are validated before broadcasting, so an error names an index of the caller's
    # array; zero sums after, since normalisation happens in the broadcast shape (as in scipy).
    p, q = as_float_array(p, "p"), as_float_array(q, "q")
    if validate:
        check_probabilities(p, name="p")
        check_probabilities(q, name="q")
    p, q = broadcast_pair(p, q)
    axis = canonical_axis(axis, p.shape, "p and q")
    if validate and normalize:
        check_positive_sums(p, name="p", axis=axis)
        check_positive_sums(q, name="q", axis=axis)
    return p, q, axis, log_base(base)


def rel_entr(p: ArrayLike, q: ArrayLike) -> jax.Array:
    """Elementwise relative entropy p log(p / q), as `scipy.special.rel_entr`.

    0 where p == 0 and q >= 0, +inf where p > 0 == q, NaN where either is negative or NaN
    (scipy gives +inf for negative entries).

    Args:
      p: (...) probabilities.
      q: (...) probabilities, broadcastable against `p`.

    Returns:
      (...) the terms, in the broadcast shape.
    """
    p, q = broadcast_pair(p, q)
    return _rel_entr(p, q)


def kl_div(p: ArrayLike, q: ArrayLike) -> jax.Array:
    """Elementwise generalised KL term p log(p / q) - p + q, as `scipy.special.kl_div`.

    Its sum is the KL divergence between unnormalised measures: non-negative, and zero only
    when p == q. Edge cases as in `rel_entr` (q where p == 0).

    Args:
      p: (...) non-negative weights.
      q: (...) non-negative weights, broadcastable against `p`.

    Returns:
      (...) the terms, in the broadcast shape.
    """
    p, q = broadcast_pair(p, q)
    return _rel_entr(p, q) - p + q


def kl_divergence(
    p: ArrayLike,
    q: ArrayLike,
    *,
    axis: int = -1,
    base: float | None = None,
    normalize: bool = True,
    validate: bool = False,
) -> jax.Array:
    """KL divergence KL(p ‖ q) = Σ p log(p / q) along `axis`, as `scipy.stats.entropy(p, q)`.

    With `normalize=True` (default) p and q are first divided by their sums along `axis`, as
    scipy does. That costs only the two sums: with Sp = Σ p and Sq = Σ q,
    KL(p/Sp ‖ q/Sq) = (Σ p log(p / q)) / Sp + log(Sq / Sp), so p / Sp is never formed and
    every reduction reads the raw inputs. The three sums share one pass over memory for
    most float32 row lengths and long float64 rows (see `vi.backend._one_pass`).

    Args:
      p: (..., K, ...) probabilities or non-negative weights, distributions along `axis`.
      q: (..., K, ...) the same for the reference distribution, broadcastable against `p`.
      axis: the axis holding the K outcomes.
      base: logarithm base of the result; None for nats.
      normalize: normalise p and q along `axis` first (scipy's behaviour).
      validate: eagerly raise ValueError on negative, NaN or infinite entries (and on
        distributions that sum to 0 when normalising). Needs concrete arrays, not tracers.

    Returns:
      (...) the divergences: the broadcast shape without `axis`. +inf where p > 0 == q; NaN
      for invalid inputs (see the module docstring).

    Examples:
      >>> p, q = jnp.array([0.6, 0.3, 0.1]), jnp.array([0.5, 0.4, 0.1])
      >>> print(f"{float(kl_divergence(p, q)):.6f}")
      0.023088
    """
    p, q, axis, scale = _pair_inputs(p, q, axis, base, normalize, validate)
    if p.shape[axis] == 0:
        return empty_result(p.shape, axis, p.dtype)
    if _sums_in_one_pass(p, axis):
        # One pass over memory; _rel_entr is NaN for negative entries (see vi.backend._one_pass).
        if normalize:
            kl, sum_p, sum_q = one_pass_sums((_rel_entr(p, q), p, q), axis)
        else:
            # A lone sum would leave the one-pass path, so the NaNs of invalid entries get one.
            nan_if_invalid = jnp.where(jnp.minimum(p, q) >= 0, 0, jnp.nan).astype(p.dtype)
            terms = p * jnp.log(jnp.where(p == 0, 1, p) / jnp.where(p == 0, 1, q))
            kl, nan_or_zero = one_pass_sums((terms, nan_if_invalid), axis)
            kl = kl + nan_or_zero
        valid = True
    else:
        kl = _sum_rel_entr(p, q, axis)
        if normalize:
            sum_p, sum_q = jnp.sum(p, axis=axis), jnp.sum(q, axis=axis)
        valid = _nonnegative(jnp.minimum(p, q), axis)
    if normalize:
        # An infinite entry of q makes q / Σq NaN in scipy; log(Σq / Σp) alone would give inf.
        kl = kl / sum_p + jnp.log(sum_q / sum_p)
        valid = valid & (sum_q < jnp.inf)
    return finish_result(kl, valid, scale)


def entropy(
    p: ArrayLike,
    *,
    axis: int = -1,
    base: float | None = None,
    normalize: bool = True,
    validate: bool = False,
) -> jax.Array:
    """Shannon entropy H(p) = -Σ p log p along `axis`, as `scipy.stats.entropy(p)`.

    With `normalize=True` (default) p is divided by its sum first, fused as
    H(p/S) = log S - (Σ p log p) / S.

    Args:
      p: (..., K, ...) probabilities or non-negative weights, distributions along `axis`.
      axis: the axis holding the K outcomes.
      base: logarithm base of the result; None for nats.
      normalize: normalise p along `axis` first (scipy's behaviour).
      validate: eagerly raise ValueError on invalid entries (see `kl_divergence`).

    Returns:
      (...) the entropies: the shape of `p` without `axis`.
    """
    p = as_float_array(p, "p")
    axis = canonical_axis(axis, p.shape, "p")
    scale = log_base(base)
    if validate:
        _validate(p, "p", axis, normalize)
    if p.shape[axis] == 0:
        return empty_result(p.shape, axis, p.dtype)
    if normalize and _sums_in_one_pass(p, axis):
        # One pass (see vi.backend._one_pass); log of a negative entry is NaN.
        sum_plogp, sum_p = one_pass_sums((p * jnp.log(jnp.where(p == 0, 1, p)), p), axis)
        return finish_result(jnp.log(sum_p) - sum_plogp / sum_p, True, scale)
    # p log(p + z) is p log p with 0 (and zero gradient) at p == 0; see _zero_indicator.
    z = jax.lax.stop_gradient(_zero_indicator(p))
    sum_plogp = jnp.sum(p * jnp.log(p + z), axis=axis)
    if normalize:
        sum_p = jnp.sum(p, axis=axis)
        h = jnp.log(sum_p) - sum_plogp / sum_p
    else:
        h = -sum_plogp
    return finish_result(h, _nonnegative(p, axis), scale)


def cross_entropy(
    p: ArrayLike,
    q: ArrayLike,
    *,
    axis: int = -1,
    base: float | None = None,
    normalize: bool = True,
    validate: bool = False,
) -> jax.Array:
    """Cross-entropy H(p, q) = -Σ p log q = H(p) + KL(p ‖ q) along `axis`.

    With `normalize=True` (default) p and q are divided by their sums first, as in
    `scipy.stats.entropy`, fused as H(p/Sp, q/Sq) = log Sq - (Σ p log q) / Sp.

    Args:
      p: (..., K, ...) probabilities or non-negative weights, distributions along `axis`.
      q: (..., K, ...) the same for the model distribution, broadcastable against `p`.
      axis: the axis holding the K outcomes.
      base: logarithm base of the result; None for nats.
      normalize: normalise p and q along `axis` first.
      validate: eagerly raise ValueError on invalid entries (see `kl_divergence`).

    Returns:
      (...) the cross-entropies: the broadcast shape without `axis`.
    """
    p, q, axis, scale = _pair_inputs(p, q, axis, base, normalize, validate)
    if p.shape[axis] == 0:
        return empty_result(p.shape, axis, p.dtype)
    # A term with p == 0 is 0 even where log q is infinite; its gradient in p stays log q.
    log_q = jnp.log(jnp.where((p == 0) & ((q == 0) | (q == jnp.inf)), 1, q))
    if normalize and _sums_in_one_pass(p, axis):
        # One pass (see vi.backend._one_pass), with invalid entries turned into NaN terms.
        terms = jnp.where(jnp.minimum(p, q) >= 0, p * log_q, jnp.nan)
        sum_plogq, sum_p, sum_q = one_pass_sums((terms, p, q), axis)
        valid = True
    else:
        sum_plogq = jnp.sum(p * log_q, axis=axis)
        valid = _nonnegative(jnp.minimum(p, q), axis)
        if normalize:
            sum_p, sum_q = jnp.sum(p, axis=axis), jnp.sum(q, axis=axis)
    if normalize:
        h = jnp.log(sum_q) - sum_plogq / sum_p
        valid = valid & (sum_q < jnp.inf)
    else:
        h = -sum_plogq
    return finish_result(h, valid, scale)


def js_divergence(
    p: ArrayLike,
    q: ArrayLike,
    *,
    axis: int = -1,
    base: float | None = None,
    normalize: bool = True,
    validate: bool = False,
) -> jax.Array:
    """Jensen–Shannon divergence ½ KL(p ‖ m) + ½ KL(q ‖ m), m = (p + q) / 2, along `axis`.

    The square of `scipy.spatial.distance.jensenshannon`. Finite (at most log 2) for any
    valid input, including disjoint supports.

    Args:
      p: (..., K, ...) probabilities or non-negative weights, distributions along `axis`.
      q: (..., K, ...) the same for the second distribution, broadcastable against `p`.
      axis: the axis holding the K outcomes.
      base: logarithm base of the result; None for nats.
      normalize: normalise p and q along `axis` first (scipy's behaviour).
      validate: eagerly raise ValueError on invalid entries (see `kl_divergence`).

    Returns:
      (...) the divergences: the broadcast shape without `axis`.
    """
    p, q, axis, scale = _pair_inputs(p, q, axis, base, normalize, validate)
    if p.shape[axis] == 0:
        return empty_result(p.shape, axis, p.dtype)
    valid = _nonnegative(jnp.minimum(p, q), axis)
    if normalize:
        p = p / jnp.sum(p, axis=axis, keepdims=True)
        q = q / jnp.sum(q, axis=axis, keepdims=True)
    m = (p + q) / 2
    js = jnp.sum(_rel_entr(p, m) + _rel_entr(q, m), axis=axis) / 2
    return finish_result(js, valid, scale)
