"""Gaussian distributions, their closed-form KLs in the registry, and NumPyro conversion.

Each distribution is a NamedTuple of arrays with ``sample``, ``log_prob`` and (but for
:class:`StandardNormal`) ``entropy``; the math is in ``vi.kernels.gaussian``. Importing this
module registers ``KL(q ‖ p)`` for every pair of them, and of the full-rank and low-rank
families' parameters (``vi.FullRankParams``, ``vi.LowRankParams``), with
``vi.kernels.registry.register_kl``,
and a converter of NumPyro's Gaussians, so ``vi.kl`` takes any of them.

:class:`DiagNormal` is also the mean-field family's parameters
(``vi.families.mean_field.MeanFieldParams`` is the same class), so a fit's ``params`` is a
distribution: ``vi.kl(result.params, vi.StandardNormal())``.

Examples:
  >>> import vi
  >>> q = DiagNormal(jnp.zeros(2), jnp.zeros(2))
  >>> vi.kl(q, StandardNormal())
  Array(0., dtype=float32)
"""

import itertools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from vi.families.full_rank import FullRankParams
from vi.families.low_rank import LowRankParams
from vi.kernels.gaussian import (
    diag_normal_entropy,
    diag_normal_kl,
    diag_normal_kl_from_scale,
    diag_normal_kl_standard,
    diag_normal_log_prob,
    mvn_entropy,
    mvn_kl,
    mvn_log_prob,
)
from vi.kernels.registry import register_converter, register_kl


def _draw_shape(num_samples: int, name: str, *arrays: jax.Array) -> tuple[tuple[int, ...], Any]:
    dtype = jnp.result_type(*arrays)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} parameters must be floating, got dtype {dtype}")
    return (num_samples, *jnp.broadcast_shapes(*(a.shape for a in arrays))), dtype


class Normal(NamedTuple):
    """Diagonal Gaussian on R^D given by its scales.

    Attributes:
      loc: (..., D) means.
      scale: (..., D) standard deviations, positive.
    """

    loc: jax.Array
    scale: jax.Array

    def sample(self, rng_key: jax.Array, num_samples: int) -> jax.Array:
        """Reparameterised draws, (num_samples, ..., D)."""
        loc, scale = jnp.asarray(self.loc), jnp.asarray(self.scale)
        shape, dtype = _draw_shape(num_samples, "Normal", loc, scale)
        return loc + scale * jax.random.normal(rng_key, shape, dtype)

    def log_prob(self, x: ArrayLike) -> jax.Array:
        """Log density of points (..., D); returns (...)."""
        return diag_normal_log_prob(x, self.loc, jnp.log(self.scale))

    def entropy(self) -> jax.Array:
        """Differential entropy in nats, (...)."""
        _, log_scale = jnp.broadcast_arrays(self.loc, jnp.log(self.scale))
        return diag_normal_entropy(log_scale)


class DiagNormal(NamedTuple):
    """Diagonal Gaussian on R^D given by its log-scales (the unconstrained parameters).

    The parameters of the mean-field family: ``MeanFieldParams`` is this class.

    Attributes:
      loc: (..., D) means.
      log_scale: (..., D) log standard deviations.
    """

    loc: jax.Array
    log_scale: jax.Array

    def sample(self, rng_key: jax.Array, num_samples: int) -> jax.Array:
        """Reparameterised draws, (num_samples, ..., D)."""
        loc, log_scale = jnp.asarray(self.loc), jnp.asarray(self.log_scale)
        shape, dtype = _draw_shape(num_samples, "DiagNormal", loc, log_scale)
        return loc + jnp.exp(log_scale) * jax.random.normal(rng_key, shape, dtype)

    def log_prob(self, x: ArrayLike) -> jax.Array:
        """Log density of points (..., D); returns (...)."""
        return diag_normal_log_prob(x, self.loc, self.log_scale)

    def entropy(self) -> jax.Array:
        """Differential entropy in nats, (...)."""
        _, log_scale = jnp.broadcast_arrays(self.loc, self.log_scale)
        return diag_normal_entropy(log_scale)


class MultivariateNormal(NamedTuple):
    """Full-covariance Gaussian on R^D given by a Cholesky factor of its covariance.

    Attributes:
      loc: (..., D) means.
      scale_tril: (..., D, D) lower-triangular factors, ``covariance = L @ L.T``; the strictly
        upper triangle is ignored.
    """

    loc: jax.Array
    scale_tril: jax.Array

    def sample(self, rng_key: jax.Array, num_samples: int) -> jax.Array:
        """Reparameterised draws ``loc + L @ eps``, (num_samples, ..., D)."""
        loc, scale_tril = jnp.asarray(self.loc), jnp.tril(jnp.asarray(self.scale_tril))
        shape, dtype = _draw_shape(num_samples, "MultivariateNormal", loc, scale_tril[..., 0])
        eps = jax.random.normal(rng_key, shape, dtype)
        return loc + jnp.matmul(scale_tril, eps[..., None])[..., 0]

    def log_prob(self, x: ArrayLike) -> jax.Array:
        """Log density of points (..., D); returns (...)."""
        return mvn_log_prob(x, self.loc, self.scale_tril)

    def entropy(self) -> jax.Array:
        """Differential entropy in nats, (...)."""
        batch = jnp.broadcast_shapes(jnp.shape(self.loc)[:-1], jnp.shape(self.scale_tril)[:-2])
        return jnp.broadcast_to(mvn_entropy(self.scale_tril), batch)


class StandardNormal(NamedTuple):
    """N(0, I) with the event size of whatever it is compared with; it has no parameters.

    It cannot be sampled (it has no shape): use ``DiagNormal(jnp.zeros(D), jnp.zeros(D))``
    where draws are needed.
    """

    def sample(self, rng_key: jax.Array, num_samples: int) -> jax.Array:
        raise TypeError(
            "StandardNormal() has no event shape to sample; "
            "use DiagNormal(jnp.zeros(D), jnp.zeros(D)) instead"
        )

    def log_prob(self, x: ArrayLike) -> jax.Array:
        """Log density of points (..., D); returns (...)."""
        return diag_normal_log_prob(x, 0.0, 0.0)


def mvn_from_covariance(loc: ArrayLike, covariance: ArrayLike) -> MultivariateNormal:
    """A :class:`MultivariateNormal` from a covariance, by its Cholesky factor.

    Args:
      loc: (..., D) means.
      covariance: (..., D, D) symmetric positive-definite covariances.

    Returns:
      The distribution; its ``scale_tril`` is NaN where ``covariance`` is not positive definite.
    """
    covariance = jnp.asarray(covariance)
    if covariance.ndim < 2 or covariance.shape[-1] != covariance.shape[-2]:
        raise ValueError(f"covariance must have shape (..., D, D), got {covariance.shape}")
    return MultivariateNormal(jnp.asarray(loc), jnp.linalg.cholesky(covariance))


def _loc_log_scale(dist: Normal | DiagNormal | StandardNormal):
    if isinstance(dist, Normal):
        return dist.loc, jnp.log(dist.scale)
    if isinstance(dist, DiagNormal):
        return dist.loc, dist.log_scale
    return 0.0, 0.0


def _kl_diagonal(q, p) -> jax.Array:
    if isinstance(q, StandardNormal) and isinstance(p, StandardNormal):
        return jnp.zeros(())
    if isinstance(q, Normal) and isinstance(p, Normal):
        return diag_normal_kl_from_scale(q.loc, q.scale, p.loc, p.scale)
    if isinstance(p, StandardNormal):
        return diag_normal_kl_standard(*_loc_log_scale(q))
    return diag_normal_kl(*_loc_log_scale(q), *_loc_log_scale(p))


def _loc_scale_tril(dist, dim: int, dtype) -> tuple[jax.Array, jax.Array]:
    if isinstance(dist, MultivariateNormal | FullRankParams):
        return dist.loc, dist.scale_tril
    if isinstance(dist, LowRankParams):
        w = jnp.tril(jnp.asarray(dist.cov_factor))
        diag = jnp.exp(2 * jnp.asarray(dist.log_scale))[..., None] * jnp.eye(dim, dtype=w.dtype)
        return dist.loc, jnp.linalg.cholesky(w @ jnp.swapaxes(w, -1, -2) + diag)
    if isinstance(dist, StandardNormal):
        return jnp.zeros(dim, dtype), jnp.eye(dim, dtype=dtype)
    loc, log_scale = jnp.broadcast_arrays(*_loc_log_scale(dist))
    return loc, jnp.exp(log_scale)[..., None] * jnp.eye(dim, dtype=log_scale.dtype)


def _kl_full(q, p) -> jax.Array:
    loc = jnp.asarray((p if isinstance(q, StandardNormal) else q).loc)
    dim, dtype = loc.shape[-1], loc.dtype
    return mvn_kl(*_loc_scale_tril(q, dim, dtype), *_loc_scale_tril(p, dim, dtype))


_DIAGONAL = (Normal, DiagNormal, StandardNormal)
_FULL = (MultivariateNormal, FullRankParams, LowRankParams)
for _q, _p in itertools.product((*_DIAGONAL, *_FULL), repeat=2):
    register_kl(_q, _p)(_kl_full if _q in _FULL or _p in _FULL else _kl_diagonal)


@register_converter("numpyro")
def distribution_from_numpyro(dist: Any) -> Normal | MultivariateNormal:
    """Converts a NumPyro Gaussian to the matching type here (numpyro is imported lazily).

    ``Normal`` (scalar event) becomes a :class:`Normal` with D = 1;
    ``Independent(Normal, n)`` a :class:`Normal` whose n event axes are flattened into one;
    ``MultivariateNormal`` a :class:`MultivariateNormal`.

    Args:
      dist: a ``numpyro.distributions`` instance.

    Returns:
      The same distribution, with the same batch shape.

    Raises:
      TypeError: for any other NumPyro distribution.
    """
    import numpyro.distributions as npd

    if isinstance(dist, npd.Independent) and type(dist.base_dist) is npd.Normal:
        base = dist.base_dist
        loc, scale = jnp.broadcast_arrays(base.loc, base.scale)
        shape = (*dist.batch_shape, math.prod(dist.event_shape))
        return Normal(loc.reshape(shape), scale.reshape(shape))
    if type(dist) is npd.Normal:
        loc, scale = jnp.broadcast_arrays(dist.loc, dist.scale)
        return Normal(loc[..., None], scale[..., None])
    if isinstance(dist, npd.MultivariateNormal):
        loc = jnp.broadcast_to(dist.loc, (*dist.batch_shape, *dist.event_shape))
        return MultivariateNormal(loc, dist.scale_tril)
    raise TypeError(
        f"cannot convert numpyro {type(dist).__name__}; supported: Normal, "
        "Independent(Normal), MultivariateNormal"
    )
