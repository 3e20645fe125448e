"""The variational families as values, and the functions every layer calls on q's parameters.

A family is chosen by a small frozen value, like an objective: ``vi.MeanField()`` (the
default), ``vi.FullRank()`` or ``vi.LowRank(rank)``; its ``init`` makes the parameters. From
then on the parameters' type says which family they are, and the functions here (``transform``,
``log_prob``, ``entropy``, ...) dispatch on it to the family's module, so the objectives,
the fitting methods and the diagnostics are written once for all three.

Examples:
  >>> import jax.numpy as jnp
  >>> import vi
  >>> params = vi.FullRank().init(jnp.zeros(3), scale=1.0)
  >>> params.scale_tril.shape
  (3, 3)
"""

import dataclasses
from types import ModuleType

import jax
import jax.numpy as jnp

from vi.families import full_rank, low_rank, mean_field
from vi.families.full_rank import FullRankParams
from vi.families.low_rank import LowRankParams
from vi.families.mean_field import MeanFieldParams

_MODULES: dict[type, ModuleType] = {
    MeanFieldParams: mean_field,
    FullRankParams: full_rank,
    LowRankParams: low_rank,
}
PARAMS_TYPES = tuple(_MODULES)
"""The parameter types of the families."""
Params = MeanFieldParams | FullRankParams | LowRankParams
"""q's parameters, of any family."""


def _module(params) -> ModuleType:
    try:
        return _MODULES[type(params)]
    except KeyError:
        raise TypeError(
            "q's parameters must be vi.MeanFieldParams, vi.FullRankParams or vi.LowRankParams, "
            f"got {type(params).__name__}"
        ) from None


@dataclasses.dataclass(frozen=True)
class MeanField:
    """The mean-field (diagonal) Gaussian: ``MeanFieldParams(loc, log_scale)``, 2 D numbers."""

    def init(self, position: jax.typing.ArrayLike, *, scale: float = 0.1) -> MeanFieldParams:
        """Centred on ``position`` (D,) with standard deviation ``scale``."""
        return mean_field.init(position, scale=scale)

    def params_match(self, params) -> bool:
        return isinstance(params, MeanFieldParams)


@dataclasses.dataclass(frozen=True)
class FullRank:
    """The full-rank Gaussian: ``FullRankParams(loc, log_diag, off_diag)``, a mean and a
    Cholesky factor (D + D (D + 1) / 2 numbers)."""

    def init(self, position: jax.typing.ArrayLike, *, scale: float = 0.1) -> FullRankParams:
        """Centred on ``position`` (D,) with covariance ``scale² I``."""
        return full_rank.init(position, scale=scale)

    def params_match(self, params) -> bool:
        return isinstance(params, FullRankParams)


@dataclasses.dataclass(frozen=True)
class LowRank:
    """The low-rank-plus-diagonal Gaussian of rank ``rank``: ``LowRankParams(loc, log_scale,
    cov_factor)``, covariance ``W Wᵀ + diag(σ²)`` ((2 + r) D numbers).

    Attributes:
      rank: r, the columns of ``W``; at least 1.
    """

    rank: int = 1

    def __post_init__(self):
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LowRank: rank must be an integer >= 1, got {self.rank!r}")

    def init(self, position: jax.typing.ArrayLike, *, scale: float = 0.1) -> LowRankParams:
        """Centred on ``position`` (D,); see ``vi.families.low_rank.init``."""
        return low_rank.init(position, rank=self.rank, scale=scale)

    def params_match(self, params) -> bool:
        return isinstance(params, LowRankParams) and params.cov_factor.shape[-1] == self.rank


FAMILIES = (MeanField, FullRank, LowRank)


def family_of(params) -> MeanField | FullRank | LowRank:
    """The family value that ``params`` belong to."""
    module = _module(params)
    if module is low_rank:
        return LowRank(params.cov_factor.shape[-1])
    return FullRank() if module is full_rank else MeanField()


def check_family(family) -> MeanField | FullRank | LowRank:
    """``family``, or MeanField() for None; a TypeError naming the accepted values otherwise."""
    if family is None:
        return MeanField()
    if not isinstance(family, FAMILIES):
        hint = f": call it, vi.{family.__name__}()" if isinstance(family, type) else ""
        raise TypeError(
            "family must be vi.MeanField(), vi.FullRank() or vi.LowRank(rank), got "
            f"{family.__name__ if isinstance(family, type) else type(family).__name__}{hint}"
        )
    return family


def noise_dim(params) -> int:
    """The size of the standard-normal noise of one draw of q (D, or D + r for low rank)."""
    return _module(params).noise_dim(params)


def noise_shape(params) -> tuple[int, ...]:
    """The shape of the standard-normal noise of one draw of q: ``(..., noise_dim)``."""
    return (*params.loc.shape[:-1], noise_dim(params))


def transform(params, eps: jax.Array) -> jax.Array:
    """Draws of q from standard-normal noise ``eps`` (..., noise_dim): (..., D)."""
    return _module(params).transform(params, eps)


def sample(rng_key: jax.Array, params, num_samples: int) -> jax.Array:
    """(num_samples, D) reparameterised draws of one q."""
    if _module(params) is mean_field:
        return mean_field.sample(rng_key, params, num_samples)
    shape = (num_samples, noise_dim(params))
    return transform(params, jax.random.normal(rng_key, shape, params.loc.dtype))


def log_prob(params, x: jax.Array) -> jax.Array:
    """q's log density at ``x`` (..., D): (...)."""
    return _module(params).log_prob(params, x)


def held_log_prob(params, eps: jax.Array, x: jax.Array) -> jax.Array:
    """``log q(x)`` at the draws ``x = transform(params, eps)`` with q's parameters held fixed
    (the sticking-the-landing term): its gradient flows through ``x`` only."""
    module = _module(params)
    if hasattr(module, "held_log_prob"):
        return module.held_log_prob(params, eps, x)
    return log_prob(jax.lax.stop_gradient(params), x)


def noise_log_prob(params, eps: jax.Array) -> jax.Array:
    """``log q(transform(params, eps))``, cheaper where the family allows: (...)."""
    return _module(params).noise_log_prob(params, eps)


def entropy(params) -> jax.Array:
    """q's differential entropy in nats: ()."""
    return _module(params).entropy(params)


def variance(params) -> jax.Array:
    """(D,) q's marginal variances."""
    return _module(params).variance(params)


def log_variance(params) -> jax.Array:
    """(D,) the logs of q's marginal variances."""
    if _module(params) is mean_field:
        return 2.0 * params.log_scale
    return jnp.log(variance(params))


def mahalanobis_sq(params, x: jax.Array) -> jax.Array:
    """``(x - loc)ᵀ Σ⁻¹ (x - loc)`` for points ``x`` (..., D): (...)."""
    if _module(params) is mean_field:
        return jnp.sum(((x - params.loc) * jnp.exp(-params.log_scale)) ** 2, axis=-1)
    return 2.0 * (log_prob(params, params.loc) - log_prob(params, x))


def covariance(params) -> jax.Array:
    """(D, D) q's covariance."""
    return _module(params).covariance(params)


def widen(params, factor):
    """q with its covariance multiplied by ``factor²``."""
    return _module(params).widen(params, factor)


def precondition(params, grad):
    """A diagonal approximate inverse Hessian of the negative ELBO near its optimum, applied
    to ``grad`` (a pytree like ``params``)."""
    return _module(params).precondition(params, grad)


def tree_dot(a, b) -> jax.Array:
    """The inner product of two pytrees of the same structure."""
    return sum(jnp.sum(x * y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def pointed_gain(params, grad) -> jax.Array:
    """``½ gᵀ P g``: the ELBO a gradient points to, with ``P`` of ``precondition``."""
    module = _module(params)
    if hasattr(module, "pointed_gain"):
        return module.pointed_gain(params, grad)
    return 0.5 * tree_dot(grad, precondition(params, grad))


def grad_norm(params, grad) -> jax.Array:
    """The largest gradient entry in q's own units (see ``vi.FitInfo.grad_norm``)."""
    return _module(params).grad_norm(params, grad)


def num_params(params) -> int:
    """How many numbers the optimizer moves (the full-rank factor's ignored triangle aside)."""
    dim = params.loc.shape[-1]
    if _module(params) is full_rank:
        return dim + dim * (dim + 1) // 2
    if _module(params) is low_rank:
        rank = params.cov_factor.shape[-1]
        return 2 * dim + rank * dim - rank * (rank - 1) // 2
    return sum(leaf.size for leaf in jax.tree.leaves(params))


def moment_match(params, draws: jax.Array):
    """The member of ``params``' family minimising the forward KL to the empirical ``draws``
    (N, D); None for the low-rank family, which has no closed form (it is factor analysis)."""
    module = _module(params)
    return module.moment_match(draws) if hasattr(module, "moment_match") else None
