"""Curved and scale-varying targets: banana, Neal's funnel and a ring.

All three are normalised densities with exact samplers and exact moments. Their
array parameters live in ``jax.tree_util.Partial`` objects, so a batch of them
(one ``Target`` with leading-axis leaves) goes through ``jit`` and ``vmap``.
"""

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, ndtr
from jax.tree_util import Partial

from vi.targets.target import Target, Truth

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def banana(
    dim: int = 2,
    *,
    scale: jax.typing.ArrayLike = 10.0,
    curvature: jax.typing.ArrayLike = 0.03,
) -> Target:
    """Haario's twisted Gaussian: ``x1 ~ N(0, a^2)``, ``x2 | x1 ~ N(b (x1^2 - a^2), 1)``.

    The remaining coordinates are independent standard normals. The twist
    ``x2 -> x2 - b (x1^2 - a^2)`` has unit Jacobian, so the density stays
    normalised. The defaults (a = 10, b = 0.03) are Haario et al.'s moderately
    twisted case.

    Args:
      dim: dimension D >= 2 (static).
      scale: () the standard deviation ``a`` of ``x1``.
      curvature: () the twist ``b``.

    Returns:
      A ``Target`` with mean 0, variance ``(a^2, 1 + 2 a^4 b^2, 1, ..., 1)`` and
      its single mode at ``(0, -b a^2, 0, ..., 0)``.
    """
    _check_dim(dim, 2)
    scale, curvature = _as_float(scale, curvature)
    _check_positive(scale, "scale")
    _check_finite(curvature, "curvature")
    dtype = scale.dtype
    variance = (
        jnp.ones(dim, dtype).at[0].set(scale**2).at[1].set(1.0 + 2.0 * scale**4 * curvature**2)
    )
    mode = jnp.zeros((1, dim), dtype).at[0, 1].set(-curvature * scale**2)
    truth = Truth(
        mean=jnp.zeros(dim, dtype),
        variance=variance,
        modes=mode,
        mode_weights=jnp.ones(1, dtype),
        log_normalizer=jnp.zeros((), dtype),
    )
    return Target(
        logdensity_fn=Partial(_banana_logdensity, scale, curvature),
        init_position=jnp.zeros(dim, dtype),
        sample_fn=Partial(_Sampler(_banana_sample, dim), scale, curvature),
        truth=truth,
    )


def funnel(dim: int = 10, *, scale: jax.typing.ArrayLike = 3.0) -> Target:
    """Neal's funnel: ``v ~ N(0, scale^2)`` and ``x_i | v ~ N(0, exp(v))``, i = 1..D-1.

    The position is ``(v, x_1, ..., x_{D-1})``.

    Args:
      dim: dimension D >= 2 (static); Neal's original has D = 10.
      scale: () the standard deviation of ``v``.

    Returns:
      A ``Target`` with mean 0 and variance ``(scale^2, e^{scale^2/2}, ...)``,
      since ``Var(x_i) = E[exp(v)] = exp(scale^2 / 2)``. It has no modes entry.
    """
    _check_dim(dim, 2)
    (scale,) = _as_float(scale)
    _check_positive(scale, "scale")
    dtype = scale.dtype
    variance = jnp.full(dim, jnp.exp(0.5 * scale**2), dtype).at[0].set(scale**2)
    truth = Truth(
        mean=jnp.zeros(dim, dtype), variance=variance, log_normalizer=jnp.zeros((), dtype)
    )
    return Target(
        logdensity_fn=Partial(_funnel_logdensity, scale),
        init_position=jnp.zeros(dim, dtype),
        sample_fn=Partial(_Sampler(_funnel_sample, dim), scale),
        truth=truth,
    )


def ring(
    dim: int = 2,
    *,
    radius: jax.typing.ArrayLike = 3.0,
    width: jax.typing.ArrayLike = 0.5,
) -> Target:
    """A ring (shell) around the origin: density proportional to ``exp(-(|x| - r)^2 / (2 s^2))``.

    The normaliser and the moments are closed forms in the radial integrals
    ``I_k = int_0^inf rho^k exp(-(rho - r)^2 / (2 s^2)) d rho``, which reduce to
    moments of a standard normal truncated below at ``-r / s``. Samples are a
    uniform direction times a radius drawn exactly by rejection from a
    truncated normal centred on the radial mode.

    Args:
      dim: dimension D >= 2 (static).
      radius: () the ring's radius ``r >= 0``.
      width: () the ring's radial width ``s > 0``.

    Returns:
      A normalised ``Target`` with mean 0 and per-coordinate variance
      ``I_{D+1} / (D I_{D-1})``; its modes form a sphere, so ``modes`` is None.
    """
    _check_dim(dim, 2)
    radius, width = _as_float(radius, width)
    _check_positive(width, "width")
    _check_nonnegative(radius, "radius")
    dtype = radius.dtype
    log_moment = _log_radial_moment(dim - 1, radius, width)
    log_sphere_area = math.log(2.0) + 0.5 * dim * math.log(math.pi) - gammaln(0.5 * dim)
    log_normalizer = log_sphere_area + log_moment
    second_moment = jnp.exp(_log_radial_moment(dim + 1, radius, width) - log_moment)
    truth = Truth(
        mean=jnp.zeros(dim, dtype),
        variance=jnp.full(dim, second_moment / dim, dtype),
        log_normalizer=jnp.zeros((), dtype),
    )
    return Target(
        logdensity_fn=Partial(_ring_logdensity, radius, width, log_normalizer),
        init_position=jnp.zeros(dim, dtype),
        sample_fn=Partial(_Sampler(_ring_sample, dim), radius, width),
        truth=truth,
    )


@dataclasses.dataclass(frozen=True)
class _Sampler:
    """``sample(*args, dim=dim)``. Equal for equal ``(sample, dim)``, so targets of one
    dimension have equal pytree structures: they stack, and jit does not retrace."""

    sample: Callable
    dim: int

    def __call__(self, *args):
        return self.sample(*args, dim=self.dim)


def _banana_logdensity(scale, curvature, x):
    x1 = x[0] / scale
    x2 = x[1] - curvature * (x[0] ** 2 - scale**2)
    rest = jnp.sum(x[2:] ** 2)
    return -0.5 * (x1**2 + x2**2 + rest) - jnp.log(scale) - x.shape[-1] * _HALF_LOG_2PI


def _banana_sample(scale, curvature, rng_key, num_samples, *, dim):
    eps = jax.random.normal(rng_key, (num_samples, dim), scale.dtype)
    x1 = scale * eps[:, 0]
    x2 = eps[:, 1] + curvature * (x1**2 - scale**2)
    return eps.at[:, 0].set(x1).at[:, 1].set(x2)


def _funnel_logdensity(scale, x):
    v, rest = x[0], x[1:]
    log_p_v = -0.5 * (v / scale) ** 2 - jnp.log(scale) - _HALF_LOG_2PI
    # rest * exp(-v / 2), not rest**2 * exp(-v): exp(-v) overflows float32 already at v < -88.
    log_p_rest = jnp.sum(-0.5 * (rest * jnp.exp(-0.5 * v)) ** 2 - 0.5 * v - _HALF_LOG_2PI)
    return log_p_v + log_p_rest


def _funnel_sample(scale, rng_key, num_samples, *, dim):
    eps = jax.random.normal(rng_key, (num_samples, dim), scale.dtype)
    v = scale * eps[:, :1]
    return jnp.concatenate([v, jnp.exp(0.5 * v) * eps[:, 1:]], axis=-1)


def _ring_logdensity(radius, width, log_normalizer, x):
    squared = jnp.sum(x**2)
    positive = squared > 0
    # Double where: |x| has no gradient at 0, and a NaN there would poison grads.
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)
    return -0.5 * ((norm - radius) / width) ** 2 - log_normalizer


def _ring_sample(radius, width, rng_key, num_samples, *, dim):
    """Radius by rejection: target rho^{D-1} N(rho; r, s^2), proposal N(rho; m, s^2), rho > 0.

    With m the radial mode, ``m (m - r) = (D - 1) s^2``, the log acceptance ratio
    is ``(D - 1) (log(rho / m) - rho / m + 1) <= 0``, zero at ``rho = m``.
    """
    dtype = radius.dtype
    key_direction, key_radius = jax.random.split(rng_key)
    direction = jax.random.normal(key_direction, (num_samples, dim), dtype)
    direction = direction / jnp.linalg.norm(direction, axis=-1, keepdims=True)
    mode = 0.5 * (radius + jnp.sqrt(radius**2 + 4.0 * (dim - 1) * width**2))
    rho = jnp.zeros(num_samples, dtype)
    init = (key_radius, rho, jnp.zeros(num_samples, bool), mode, width, jnp.asarray(dim - 1, dtype))
    _, rho, *_ = jax.lax.while_loop(_ring_pending, _ring_propose, init)
    return rho[:, None] * direction


def _ring_pending(state):
    return ~jnp.all(state[2])


def _ring_propose(state):
    # Module level, not a closure, so that eager calls reuse one traced loop.
    key, rho, done, mode, width, degree = state
    key, key_normal, key_uniform = jax.random.split(key, 3)
    shape, dtype = rho.shape, rho.dtype
    t = jax.random.truncated_normal(key_normal, -mode / width, jnp.inf, shape, dtype)
    candidate = mode + width * t
    ratio = candidate / mode
    log_accept = degree * (jnp.log(ratio) - ratio + 1.0)
    accept = jnp.log(jax.random.uniform(key_uniform, shape, dtype)) <= log_accept
    rho = jnp.where(accept & ~done, candidate, rho)
    return key, rho, done | accept, mode, width, degree


def _log_radial_moment(k, radius, width):
    """``log int_0^inf rho^k exp(-(rho - r)^2 / (2 s^2)) d rho`` for a static integer k >= 0.

    With ``rho = r + s t`` the integral is ``s sqrt(2 pi) sum_j C(k, j) r^{k-j} s^j M_j``
    where ``M_j = int_c^inf t^j phi(t) dt``, ``c = -r / s``, obeys
    ``M_0 = Phi(-c)``, ``M_1 = phi(c)``, ``M_j = c^{j-1} phi(c) + (j - 1) M_{j-2}``.
    Every term is non-negative (``c <= 0``), so the sum is taken in log space.
    """
    c = -radius / width
    phi_c = jnp.exp(-0.5 * c**2 - _HALF_LOG_2PI)
    moments = [ndtr(-c), phi_c]
    for j in range(2, k + 1):
        moments.append(c ** (j - 1) * phi_c + (j - 1) * moments[j - 2])
    log_terms = jnp.stack(
        [
            math.log(math.comb(k, j))
            + jax.scipy.special.xlogy(k - j, radius)
            + j * jnp.log(width)
            + jnp.log(moments[j])
            for j in range(k + 1)
        ]
    )
    return jnp.log(width) + _HALF_LOG_2PI + jax.nn.logsumexp(log_terms)


def _as_float(*values):
    dtype = jnp.result_type(*values, float)
    return tuple(jnp.asarray(value, dtype) for value in values)


def _check_dim(dim, minimum):
    if not isinstance(dim, int) or dim < minimum:
        raise ValueError(f"dim must be an integer >= {minimum}, got {dim!r}")


def _concrete(x):
    """The value of ``x`` as a NumPy array, or None while it is traced."""
    try:
        return np.asarray(x)
    except jax.errors.TracerArrayConversionError:
        return None


def _check_finite(value, name):
    value = _concrete(value)
    if value is not None and not np.isfinite(value).all():
        raise ValueError(f"{name} must be finite, got {value}")


def _check_positive(value, name):
    _check_finite(value, name)
    value = _concrete(value)
    if value is not None and not (value > 0).all():
        raise ValueError(f"{name} must be positive, got {value}")


def _check_nonnegative(value, name):
    _check_finite(value, name)
    value = _concrete(value)
    if value is not None and not (value >= 0).all():
        raise ValueError(f"{name} must be non-negative, got {value}")
