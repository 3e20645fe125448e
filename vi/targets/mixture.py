"""Gaussian mixture targets with exact samples, moments and modes.

Every constructor takes its parameters as arrays and stores them in
``jax.tree_util.Partial`` objects, so the returned :class:`Target` is a pytree.
A batch of mixtures is one ``Target`` whose leaves carry a leading axis; it can
be built with ``jax.vmap`` over a constructor (validation is then skipped, since
traced values cannot be inspected) or by stacking concrete targets with
``jax.tree.map(lambda *leaves: jnp.stack(leaves), *targets)``.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from jax.tree_util import Partial

from vi.targets.target import Target, Truth

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_WEIGHT_SUM_ATOL = 1e-5
_SYMMETRY_RTOL = 1e-5


def gaussian_mixture(
    weights: jax.typing.ArrayLike,
    means: jax.typing.ArrayLike,
    covariances: jax.typing.ArrayLike,
) -> Target:
    """A normalised mixture of K full-covariance Gaussians on R^D.

    Concrete arguments are validated eagerly; inside ``jit`` or ``vmap`` they are
    traced and used as given. ``Truth.modes`` holds the component means and
    ``Truth.mode_weights`` the weights: these are the modes of the mixture only
    when the components are well separated.

    Args:
      weights: (K,) non-negative mixture weights summing to 1 (within 1e-5; they
        are renormalised exactly).
      means: (K, D) component means.
      covariances: (K, D, D) symmetric positive-definite component covariances.

    Returns:
      A ``Target`` with exact ``sample_fn`` and ``Truth`` (mean, variance, modes,
      mode weights, ``log_normalizer = 0``).

    Raises:
      ValueError: if a shape is inconsistent, a weight is negative or non-finite,
        the weights do not sum to 1, or a covariance is not symmetric positive
        definite; the message names the argument and the component index.

    Examples:
      >>> import jax.numpy as jnp
      >>> target = gaussian_mixture(
      ...     jnp.array([0.5, 0.5]), jnp.array([[-2.0], [2.0]]), jnp.ones((2, 1, 1)))
      >>> float(target.truth.variance[0])
      5.0
    """
    weights, means, covariances = _as_float(
        jnp.asarray(weights), jnp.asarray(means), jnp.asarray(covariances)
    )
    dtype = weights.dtype
    _check_shapes(weights, means, covariances)
    _check_weights(weights)
    _check_finite(means, "means")
    _check_covariances(covariances)

    weights = weights / jnp.sum(weights)
    covariances = 0.5 * (covariances + jnp.swapaxes(covariances, -1, -2))
    chol = jnp.linalg.cholesky(covariances)
    _check_cholesky(chol)
    log_weights = jnp.log(weights)
    log_det_half = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)

    mean = weights @ means
    component_variance = jnp.diagonal(covariances, axis1=-2, axis2=-1)
    variance = weights @ (component_variance + (means - mean) ** 2)
    truth = Truth(
        mean=mean,
        variance=variance,
        modes=means,
        mode_weights=weights,
        log_normalizer=jnp.zeros((), dtype),
    )
    # The log density multiplies by the inverse factors: no LAPACK call inside a fit (see
    # vi.fitting.batch._lapack_on_cpu for why that matters on a multi-device CPU).
    eye = jnp.broadcast_to(jnp.eye(means.shape[-1], dtype=dtype), chol.shape)
    inv_chol = solve_triangular(chol, eye, lower=True)
    return Target(
        logdensity_fn=Partial(_logdensity, log_weights, means, inv_chol, log_det_half),
        init_position=jnp.zeros(means.shape[-1], dtype),
        sample_fn=Partial(_sample, log_weights, means, chol),
        truth=truth,
    )


def diagonal_covariances(variances: jax.typing.ArrayLike) -> jax.Array:
    """Builds diagonal covariance matrices from per-coordinate variances.

    Args:
      variances: (K, D) variances of each component.

    Returns:
      (K, D, D) covariances with ``variances`` on the diagonals.
    """
    variances = jnp.asarray(variances)
    return variances[..., :, None] * jnp.eye(variances.shape[-1], dtype=variances.dtype)


def bimodal_2d(separation: jax.typing.ArrayLike = 4.0, scale: jax.typing.ArrayLike = 1.0) -> Target:
    """Two equal-weight isotropic Gaussians at ``(-separation / 2, 0)`` and ``(separation / 2, 0)``.

    Args:
      separation: () distance between the component means.
      scale: () standard deviation of each component along every axis.

    Returns:
      A 2-D ``Target``; its variance along the first axis is
      ``scale**2 + separation**2 / 4``.
    """
    separation, scale = _as_float(separation, scale)
    half = 0.5 * separation
    zero = jnp.zeros_like(half)
    means = jnp.stack([jnp.stack([-half, zero]), jnp.stack([half, zero])])
    weights = jnp.full((2,), 0.5, half.dtype)
    covariances = diagonal_covariances(jnp.broadcast_to(scale**2, (2, 2)))
    return gaussian_mixture(weights, means, covariances)


def unequal_bimodal_2d(
    major_weight: jax.typing.ArrayLike = 0.75,
    separation: jax.typing.ArrayLike = 4.0,
    scale: jax.typing.ArrayLike = 1.0,
    minor_scale: jax.typing.ArrayLike = 0.5,
) -> Target:
    """A heavy wide mode at ``(-separation / 2, 0)``, a light narrow one at ``(separation / 2, 0)``.

    Args:
      major_weight: () weight of the first component, in [0, 1].
      separation: () distance between the component means.
      scale: () standard deviation of the first component along every axis.
      minor_scale: () standard deviation of the second component along every axis.

    Returns:
      A 2-D ``Target`` with weights ``(major_weight, 1 - major_weight)``.
    """
    major_weight, separation, scale, minor_scale = _as_float(
        major_weight, separation, scale, minor_scale
    )
    half = 0.5 * separation
    zero = jnp.zeros_like(half)
    means = jnp.stack([jnp.stack([-half, zero]), jnp.stack([half, zero])])
    weights = jnp.stack([major_weight, 1.0 - major_weight])
    variances = jnp.stack(
        [jnp.broadcast_to(scale**2, (2,)), jnp.broadcast_to(minor_scale**2, (2,))]
    )
    return gaussian_mixture(weights, means, diagonal_covariances(variances))


def mixture_10d(
    num_modes: int = 4,
    *,
    separation: jax.typing.ArrayLike = 8.0,
    scale: jax.typing.ArrayLike = 1.0,
    weights: jax.typing.ArrayLike | None = None,
) -> Target:
    """Isotropic Gaussian modes on R^10 placed at the vertices of a regular simplex.

    Mode ``k`` sits at ``separation / sqrt(2) * e_k``, so every pair of modes is
    ``separation`` apart; the construction is deterministic.

    Args:
      num_modes: number of components K, between 1 and 10 (static).
      separation: () distance between any two component means.
      scale: () standard deviation of every component along every axis.
      weights: (K,) mixture weights; equal weights when None.

    Returns:
      A 10-D ``Target``.
    """
    dim = 10
    if not 1 <= num_modes <= dim:
        raise ValueError(f"num_modes must be between 1 and {dim}, got {num_modes}")
    separation, scale = _as_float(separation, scale)
    means = separation / math.sqrt(2.0) * jnp.eye(num_modes, dim, dtype=separation.dtype)
    if weights is None:
        weights = jnp.full((num_modes,), 1.0 / num_modes, separation.dtype)
    variances = jnp.broadcast_to(scale**2, (num_modes, dim))
    return gaussian_mixture(weights, means, diagonal_covariances(variances))


def _logdensity(log_weights, means, inv_chol, log_det_half, x):
    z = jnp.einsum("kij,kj->ki", inv_chol, x - means)
    log_components = -0.5 * jnp.sum(z**2, axis=-1) - log_det_half - x.shape[-1] * _HALF_LOG_2PI
    return jax.nn.logsumexp(log_weights + log_components)


def _sample(log_weights, means, chol, rng_key, num_samples):
    key_component, key_noise = jax.random.split(rng_key)
    index = jax.random.categorical(key_component, log_weights, shape=(num_samples,))
    eps = jax.random.normal(key_noise, (num_samples, means.shape[-1]), means.dtype)
    return means[index] + jnp.einsum("nij,nj->ni", chol[index], eps)


def _as_float(*values):
    dtype = jnp.result_type(*values, float)
    return tuple(jnp.asarray(value, dtype) for value in values)


def _concrete(x):
    """The value of ``x`` as a NumPy array, or None while it is traced."""
    try:
        return np.asarray(x)
    except jax.errors.TracerArrayConversionError:
        return None


def _check_shapes(weights, means, covariances):
    if weights.ndim != 1 or weights.shape[0] == 0:
        raise ValueError(f"weights must have shape (K,) with K >= 1, got {weights.shape}")
    num = weights.shape[0]
    if means.ndim != 2 or means.shape[0] != num or means.shape[1] == 0:
        raise ValueError(f"means must have shape (K, D) with K = {num}, got {means.shape}")
    dim = means.shape[1]
    if covariances.shape != (num, dim, dim):
        raise ValueError(
            f"covariances must have shape (K, D, D) = {(num, dim, dim)}, got {covariances.shape}"
        )


def _check_finite(values, name):
    values = _concrete(values)
    if values is None:
        return
    bad = ~np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
    if bad.any():
        raise ValueError(f"{name}[{int(np.argmax(bad))}] is not finite")


def _check_weights(weights):
    _check_finite(weights, "weights")
    values = _concrete(weights)
    if values is None:
        return
    if (values < 0).any():
        index = int(np.argmax(values < 0))
        raise ValueError(f"weights[{index}] is negative ({values[index]})")
    total = float(np.sum(values, dtype=np.float64))
    if abs(total - 1.0) > _WEIGHT_SUM_ATOL:
        raise ValueError(f"weights must sum to 1, got {total}")


def _check_covariances(covariances):
    _check_finite(covariances, "covariances")
    values = _concrete(covariances)
    if values is None:
        return
    values = values.astype(np.float64)
    for index, cov in enumerate(values):
        asymmetry = np.max(np.abs(cov - cov.T))
        if asymmetry > _SYMMETRY_RTOL * max(1.0, np.max(np.abs(cov))):
            raise ValueError(f"covariances[{index}] is not symmetric (max |C - C^T| = {asymmetry})")
        smallest = np.linalg.eigvalsh(0.5 * (cov + cov.T))[0]
        if not smallest > 0:
            raise ValueError(
                f"covariances[{index}] is not positive definite (smallest eigenvalue {smallest})"
            )


def _check_cholesky(chol):
    values = _concrete(chol)
    if values is None:
        return
    bad = ~np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
    if bad.any():
        raise ValueError(
            f"covariances[{int(np.argmax(bad))}] is not numerically positive definite "
            f"in {values.dtype}"
        )
