"""Closed-form kernels for Gaussian distributions: log densities, entropies and KLs.

Diagonal Gaussians are given by ``loc`` and ``log_scale`` (or ``scale``) of shape
``(..., D)``; full-covariance ones by ``loc`` ``(..., D)`` and a lower-triangular
``scale_tril`` ``(..., D, D)`` with ``covariance = scale_tril @ scale_tril.T`` (its strictly
upper triangle is ignored). Every kernel reduces over the event axis and broadcasts the
leading (batch) axes like numpy. Shapes and dtypes are checked when the function is traced,
so a bad call fails under ``jit`` before anything runs.
"""

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

# e^(2d) - 1 - 2d is summed as a Taylor series on |2d| <= _SERIES_RADIUS; beyond it the excess
# over the radius goes through expm1, where no cancellation can occur (see _half_kl_scale_term).
_SERIES_RADIUS = 0.25


def _floating(name: str, x: ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype} (shape {x.shape})")
    return x


def _batch_event_shape(**arrays: jax.Array) -> tuple[int, ...]:
    """Broadcast shape of ``arrays``, which must have a trailing event axis."""
    try:
        shape = jnp.broadcast_shapes(*(a.shape for a in arrays.values()))
    except ValueError:
        shapes = ", ".join(f"{name}: {a.shape}" for name, a in arrays.items())
        raise ValueError(f"shapes do not broadcast: {shapes}") from None
    if not shape:
        shapes = ", ".join(f"{name}: {a.shape}" for name, a in arrays.items())
        raise ValueError(f"expected arrays with an event axis (..., D), got {shapes}")
    return shape


def _series_terms(dtype) -> int:
    """Number of Taylor terms of (e^x - 1 - x) / x^2 on |x| <= R that reach ``dtype``'s eps."""
    eps = float(jnp.finfo(dtype).eps)
    k = 0
    while 2.0 * _SERIES_RADIUS**k / math.factorial(k + 2) > eps / 4:
        k += 1
    return k


def _half_kl_scale_term(d: jax.Array) -> jax.Array:
    """``(e^(2d) - 1 - 2d) / 2``, accurate to a few ulps for every d, including |d| << 1.

    Splits ``d = c + r`` with ``c = clip(d, -R/2, R/2)`` and uses the exact identity
    ``(e^(2d) - 1 - 2d) / 2 = h(c) + (e^(2c) / 2) * expm1(2r) - r``, where ``h(c)`` comes from
    its Taylor series and ``e^(2c) / 2 = 1/2 + c + h(c)``. Inside the radius ``r == 0`` and
    the result is the series alone; outside, no term cancels another. The split uses
    max/min, not ``where``/``clip``, so XLA:CPU keeps the whole KL in one vectorised fusion.
    """
    a = 0.5 * _SERIES_RADIUS
    # clip(d, -a, a) spelled so that XLA does not turn it into a clamp, which it cannot fuse.
    c = -jnp.minimum(-jnp.minimum(d, a), a)
    r = d - c
    # h(c) = c^2 * sum_k 2^(k+1) c^k / (k+2)!
    coeffs = [2.0 ** (k + 1) / math.factorial(k + 2) for k in range(_series_terms(d.dtype))]
    poly = coeffs[-1]
    for coeff in reversed(coeffs[:-1]):
        poly = poly * c + coeff
    h_c = c * c * poly
    # min(r, max) keeps r = +inf from making inf - inf.
    return h_c + (0.5 + c + h_c) * jnp.expm1(2.0 * r) - jnp.minimum(r, jnp.finfo(d.dtype).max)


def _log_ratio(scale_q: jax.Array, scale_p: jax.Array, inv_scale_p: jax.Array) -> jax.Array:
    """``log(scale_q / scale_p)``, exact relative to the ratio's distance from 1.

    ``log1p((scale_q - scale_p) / scale_p)`` keeps close ratios exact but cannot see ratios
    below eps (the argument rounds to -1), so it is capped at log(1/2) and the rest of a small
    ratio comes from a plain log.
    """
    rel = (scale_q - scale_p) * inv_scale_p
    return jnp.log1p(jnp.maximum(rel, -0.5)) + jnp.log(
        jnp.minimum(2.0 * scale_q * inv_scale_p, 1.0)
    )


def _diag_kl_sum(z: jax.Array, log_ratio: jax.Array) -> jax.Array:
    """sum(z^2 / 2 + (e^(2d) - 1 - 2d) / 2) over the event axis.

    Here ``z = (loc_q - loc_p) / scale_p`` and ``d = log(scale_q / scale_p)``.
    """
    return jnp.sum(0.5 * z * z + _half_kl_scale_term(log_ratio), axis=-1)


def diag_normal_log_prob(x: ArrayLike, loc: ArrayLike, log_scale: ArrayLike) -> jax.Array:
    """Log density of a diagonal Gaussian, summed over the last (event) axis.

    Args:
      x: (..., D) points.
      loc: (..., D) means.
      log_scale: (..., D) log standard deviations.

    Returns:
      (...) log densities, broadcast over the leading axes.
    """
    x, loc = _floating("x", x), _floating("loc", loc)
    log_scale = _floating("log_scale", log_scale)
    _batch_event_shape(x=x, loc=loc, log_scale=log_scale)
    z = (x - loc) * jnp.exp(-log_scale)
    return jnp.sum(-0.5 * z**2 - log_scale - _HALF_LOG_2PI, axis=-1)


def diag_normal_entropy(log_scale: ArrayLike) -> jax.Array:
    """Differential entropy of a diagonal Gaussian, summed over the last axis.

    Args:
      log_scale: (..., D) log standard deviations.

    Returns:
      (...) entropies in nats.
    """
    log_scale = _floating("log_scale", log_scale)
    _batch_event_shape(log_scale=log_scale)
    return jnp.sum(log_scale + 0.5 + _HALF_LOG_2PI, axis=-1)


def diag_normal_kl(
    loc_q: ArrayLike, log_scale_q: ArrayLike, loc_p: ArrayLike, log_scale_p: ArrayLike
) -> jax.Array:
    """KL(q ‖ p) between diagonal Gaussians given by their log-scales.

    Computed per coordinate as ``0.5 * (z^2 + e^(2d) - 1 - 2d)`` with
    ``z = (loc_q - loc_p) / scale_p`` and ``d = log_scale_q - log_scale_p``, where
    ``e^(2d) - 1 - 2d`` is evaluated without cancellation, so nearby distributions get
    small KLs with full relative precision and identical ones get exactly 0. A q that
    collapses (``log_scale_q = -inf``) or lies infinitely far away gives ``+inf``; p's scales
    must be positive and finite.

    Args:
      loc_q: (..., D) means of q.
      log_scale_q: (..., D) log standard deviations of q.
      loc_p: (..., D) means of p.
      log_scale_p: (..., D) log standard deviations of p.

    Returns:
      (...) KLs in nats, summed over the event axis and broadcast over the batch axes.

    Examples:
      >>> diag_normal_kl(jnp.zeros(3), jnp.zeros(3), jnp.ones(3), jnp.zeros(3))
      Array(1.5, dtype=float32)
    """
    loc_q, log_scale_q = _floating("loc_q", loc_q), _floating("log_scale_q", log_scale_q)
    loc_p, log_scale_p = _floating("loc_p", loc_p), _floating("log_scale_p", log_scale_p)
    _batch_event_shape(loc_q=loc_q, log_scale_q=log_scale_q, loc_p=loc_p, log_scale_p=log_scale_p)
    z = (loc_q - loc_p) * jnp.exp(-log_scale_p)
    return _diag_kl_sum(z, log_scale_q - log_scale_p)


def diag_normal_kl_from_scale(
    loc_q: ArrayLike, scale_q: ArrayLike, loc_p: ArrayLike, scale_p: ArrayLike
) -> jax.Array:
    """KL(q ‖ p) between diagonal Gaussians given by their (positive) scales.

    Same as :func:`diag_normal_kl`; the log of the scale ratio is taken as
    ``log1p((scale_q - scale_p) / scale_p)`` where the scales are close, so nearby
    distributions keep full relative precision here too.

    Args:
      loc_q: (..., D) means of q.
      scale_q: (..., D) standard deviations of q.
      loc_p: (..., D) means of p.
      scale_p: (..., D) standard deviations of p.

    Returns:
      (...) KLs in nats.
    """
    loc_q, scale_q = _floating("loc_q", loc_q), _floating("scale_q", scale_q)
    loc_p, scale_p = _floating("loc_p", loc_p), _floating("scale_p", scale_p)
    _batch_event_shape(loc_q=loc_q, scale_q=scale_q, loc_p=loc_p, scale_p=scale_p)
    inv_scale_p = 1.0 / scale_p
    log_ratio = _log_ratio(scale_q, scale_p, inv_scale_p)
    return _diag_kl_sum((loc_q - loc_p) * inv_scale_p, log_ratio)


def diag_normal_kl_standard(loc: ArrayLike, log_scale: ArrayLike) -> jax.Array:
    """KL(q ‖ N(0, I)) for a diagonal Gaussian q: the VAE prior term.

    Args:
      loc: (..., D) means of q.
      log_scale: (..., D) log standard deviations of q.

    Returns:
      (...) KLs in nats.
    """
    loc, log_scale = _floating("loc", loc), _floating("log_scale", log_scale)
    _batch_event_shape(loc=loc, log_scale=log_scale)
    return _diag_kl_sum(loc, log_scale)


def _check_tril(name: str, scale_tril: jax.Array, dim: int | None = None) -> None:
    shape = scale_tril.shape
    if len(shape) < 2 or shape[-1] != shape[-2] or (dim is not None and shape[-1] != dim):
        want = "(..., D, D)" if dim is None else f"(..., {dim}, {dim})"
        raise ValueError(f"{name} must have shape {want}, got {shape}")


def _batch_shape(**shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return jnp.broadcast_shapes(*shapes.values())
    except ValueError:
        names = ", ".join(f"{name}: {shape}" for name, shape in shapes.items())
        raise ValueError(f"batch shapes do not broadcast: {names}") from None


def _log_abs_diag(scale_tril: jax.Array) -> jax.Array:
    return jnp.log(jnp.abs(jnp.diagonal(scale_tril, axis1=-2, axis2=-1)))


def _solve_tril(scale_tril: jax.Array, b: jax.Array, batch: tuple[int, ...]) -> jax.Array:
    """``scale_tril^{-1} b`` for matrices b (..., D, K), broadcasting the batch axes."""
    d, k = b.shape[-2:]
    return jax.lax.linalg.triangular_solve(
        jnp.broadcast_to(scale_tril, (*batch, d, d)),
        jnp.broadcast_to(b, (*batch, d, k)),
        left_side=True,
        lower=True,
    )


def mvn_log_prob(x: ArrayLike, loc: ArrayLike, scale_tril: ArrayLike) -> jax.Array:
    """Log density of a full-covariance Gaussian, by a triangular solve.

    Args:
      x: (..., D) points.
      loc: (..., D) means.
      scale_tril: (..., D, D) lower Cholesky factors of the covariances.

    Returns:
      (...) log densities, broadcast over the batch axes.
    """
    x, loc = _floating("x", x), _floating("loc", loc)
    scale_tril = _floating("scale_tril", scale_tril)
    shape = _batch_event_shape(x=x, loc=loc)
    _check_tril("scale_tril", scale_tril, shape[-1])
    dtype = jnp.result_type(x, loc, scale_tril)
    diff, scale_tril = (x - loc).astype(dtype), scale_tril.astype(dtype)
    if scale_tril.ndim == 2:
        # One factor for every point: invert it once (a D x D solve) and multiply, instead
        # of copying the factor across the batch. A triangular solve with the points as its
        # thousands of right-hand sides hung XLA:CPU inside a batched fit's loop (jax
        # 0.10.2: 4 full-rank forward-KL fits, 8,192 points in the gap check).
        eye = jnp.eye(shape[-1], dtype=dtype)
        inverse = jax.lax.linalg.triangular_solve(scale_tril, eye, left_side=True, lower=True)
        z = jnp.broadcast_to(diff, shape) @ inverse.T
        maha = jnp.sum(z**2, axis=-1)
    else:
        batch = _batch_shape(points=shape[:-1], scale_tril=scale_tril.shape[:-2])
        z = _solve_tril(scale_tril, diff[..., None], batch)
        maha = jnp.sum(z[..., 0] ** 2, axis=-1)
    half_log_det = jnp.sum(_log_abs_diag(scale_tril), axis=-1)
    return -0.5 * maha - half_log_det - shape[-1] * _HALF_LOG_2PI


def mvn_entropy(scale_tril: ArrayLike) -> jax.Array:
    """Differential entropy of a full-covariance Gaussian.

    Args:
      scale_tril: (..., D, D) lower Cholesky factors of the covariances.

    Returns:
      (...) entropies in nats.
    """
    scale_tril = _floating("scale_tril", scale_tril)
    _check_tril("scale_tril", scale_tril)
    dim = scale_tril.shape[-1]
    return jnp.sum(_log_abs_diag(scale_tril), axis=-1) + dim * (0.5 + _HALF_LOG_2PI)


def mvn_kl(
    loc_q: ArrayLike, scale_tril_q: ArrayLike, loc_p: ArrayLike, scale_tril_p: ArrayLike
) -> jax.Array:
    """KL(q ‖ p) between full-covariance Gaussians given by Cholesky factors.

    With ``M = L_p^{-1} L_q`` (lower triangular) and ``z = L_p^{-1} (loc_q - loc_p)``,
    ``KL = 0.5 * (|z|^2 + sum_{i>j} M_ij^2 + sum_i (M_ii^2 - 1 - log M_ii^2))``. The diagonal
    of M is the ratio of the factors' diagonals, so its term is formed from the log-ratio
    without cancellation, as in :func:`diag_normal_kl`, to which this reduces for diagonal
    factors.

    Args:
      loc_q: (..., D) means of q.
      scale_tril_q: (..., D, D) lower Cholesky factor of q's covariance.
      loc_p: (..., D) means of p.
      scale_tril_p: (..., D, D) lower Cholesky factor of p's covariance.

    Returns:
      (...) KLs in nats, broadcast over the batch axes.
    """
    loc_q, loc_p = _floating("loc_q", loc_q), _floating("loc_p", loc_p)
    scale_tril_q = _floating("scale_tril_q", scale_tril_q)
    scale_tril_p = _floating("scale_tril_p", scale_tril_p)
    shape = _batch_event_shape(loc_q=loc_q, loc_p=loc_p)
    _check_tril("scale_tril_q", scale_tril_q, shape[-1])
    _check_tril("scale_tril_p", scale_tril_p, shape[-1])
    batch = _batch_shape(
        locs=shape[:-1], scale_tril_q=scale_tril_q.shape[:-2], scale_tril_p=scale_tril_p.shape[:-2]
    )
    dtype = jnp.result_type(loc_q, loc_p, scale_tril_q, scale_tril_p)
    lq, lp = jnp.tril(scale_tril_q).astype(dtype), scale_tril_p.astype(dtype)
    m = _solve_tril(lp, lq, batch)
    z = _solve_tril(lp, (loc_q - loc_p).astype(dtype)[..., None], batch)[..., 0]
    off_diagonal = jnp.sum(jnp.tril(m, -1) ** 2, axis=(-2, -1))
    diag_q = jnp.abs(jnp.diagonal(lq, axis1=-2, axis2=-1))
    diag_p = jnp.abs(jnp.diagonal(lp, axis1=-2, axis2=-1))
    log_ratio = _log_ratio(diag_q, diag_p, 1.0 / diag_p)
    return _diag_kl_sum(z, log_ratio) + 0.5 * off_diagonal
