"""Forward KL, ``KL(p || q)``: mass-covering fits of q to a target p.

Minimising ``KL(p || q) = E_p[log p] - E_p[log q]`` over q is minimising the
cross-entropy ``-E_p[log q(x)]``; each loss below estimates it from draws of p:
exact samples, a given pool (e.g. NUTS draws), or q itself reweighted by
self-normalised importance sampling (SNIS). For a mean-field Gaussian the
optimum matches p's per-coordinate means and variances (``moment_match``).

Every loss has the form ``(params, rng_key) -> (loss, aux)`` used by
``vi.Stochastic``; ``aux`` is the effective sample size
as a fraction of the draws for SNIS, and NaN otherwise.
"""

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp

from vi.families import family, mean_field
from vi.families.family import Params
from vi.families.mean_field import MeanFieldParams
from vi.kernels.estimate import mean_estimate
from vi.objectives.gap import Gap, newton_gap
from vi.targets.target import check_draws


def moment_match(draws: jax.Array) -> MeanFieldParams:
    """The mean-field Gaussian minimising the forward KL to the empirical ``draws``.

    Args:
      draws: (N, D) draws of p.

    Returns:
      Parameters with the draws' per-coordinate mean and (biased) standard deviation.
    """
    return mean_field.moment_match(draws)


def _nan_like(x):
    return jnp.full((), jnp.nan, x.dtype)


def exact_samples_loss(
    sample_fn: Callable[[jax.Array, int], jax.Array], num_samples: int
) -> Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]:
    """Cross-entropy from fresh exact draws of p at every step.

    Args:
      sample_fn: ``(rng_key, n) -> (n, D)`` exact draws of the target.
      num_samples: draws per step.
    """

    def loss_fn(params, rng_key):
        x = sample_fn(rng_key, num_samples)
        loss = -jnp.mean(family.log_prob(params, x))
        return loss, _nan_like(loss)

    return loss_fn


def draws_loss(
    draws: jax.Array, batch_size: int | None
) -> Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]:
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
        loss = -jnp.mean(family.log_prob(params, x))
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
) -> Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]:
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

    def loss_fn(params, rng_key):
        proposal = jax.lax.stop_gradient(params)
        wide = family.widen(proposal, widen)
        pick_key, draw_key = jax.random.split(rng_key)
        shape = (num_samples, *family.noise_shape(params))
        eps = jax.random.normal(draw_key, shape, params.loc.dtype)
        from_wide = jax.random.bernoulli(pick_key, defensive_weight, (num_samples, 1))
        x = jnp.where(from_wide, family.transform(wide, eps), family.transform(proposal, eps))
        log_r = jnp.logaddexp(
            jnp.log1p(-defensive_weight) + family.log_prob(proposal, x),
            jnp.log(defensive_weight) + family.log_prob(wide, x),
        )
        log_p = jax.vmap(logdensity_fn)(x)
        weights, ess_fraction = snis_weights(jnp.where(jnp.isnan(log_p), -jnp.inf, log_p) - log_r)
        loss = -jnp.sum(weights * family.log_prob(params, x))
        return loss, ess_fraction

    return loss_fn


def _family_gap(params: Params, x: jax.Array, fresh: bool) -> Gap:
    """The cross-entropy gap of a full-rank or low-rank q on draws ``x`` (N, D).

    Full rank: the optimum is the draws' mean and covariance, and the gap the mean of
    ``log q*(x) - log q(x)``; fresh draws' sample moments miss the target's by chance, which
    adds about (number of parameters) / (2 N) for a Gaussian target (Wilks), subtracted
    here (heavier tails add more, so the check errs towards ``stalled``). Low rank has no
    closed-form optimum (it is factor analysis): ``newton_gap`` on the cross-entropy, with
    the gradients of the two halves of the draws and the Hessian of all of them.
    """
    best = family.moment_match(params, x)
    if best is not None:
        terms = family.log_prob(best, x) - family.log_prob(params, x)
        value, stderr = mean_estimate(terms)
        if fresh:
            value = value - family.num_params(params) / (2 * x.shape[0])
        return Gap(value, stderr, jnp.isfinite(value) & jnp.isfinite(stderr))
    num_pairs = x.shape[0] // 2
    per_draw = jax.vmap(jax.grad(lambda p, z: -family.log_prob(p, z)), (None, 0))
    grads = per_draw(params, x[: 2 * num_pairs])
    return newton_gap(params, grads, lambda theta: -jnp.mean(family.log_prob(theta, x)))


def _static(cls=None, *, data_fields=(), eq=None):
    """A frozen dataclass registered as a pytree: ``data_fields`` are its arrays (or pytrees
    that hold them), every other field is static (part of the compiled program). Equality
    compares fields unless a field is an array (then identity)."""

    def register(cls):
        cls = dataclasses.dataclass(frozen=True, eq=not data_fields if eq is None else eq)(cls)
        meta = [f.name for f in dataclasses.fields(cls) if f.name not in data_fields]
        return jax.tree_util.register_dataclass(
            cls, data_fields=list(data_fields), meta_fields=meta
        )

    return register if cls is None else register(cls)


@_static
class Exact:
    """Fresh exact draws of the target every step (``target.sample_fn``)."""

    def check(self, target) -> None:
        if target.sample_fn is None:
            raise ValueError(
                "vi.Exact() needs a target that can be sampled exactly (target.sample_fn is "
                "None): use vi.ForwardKL(vi.Draws(draws)) with draws of the target (e.g. "
                "vi.nuts_draws) or vi.ForwardKL(vi.SNIS())"
            )

    def loss(self, target, num_samples: int):
        return exact_samples_loss(target.sample_fn, num_samples)


@_static(data_fields=("draws",))
class Draws:
    """Minibatches of a given pool of draws of the target, e.g. NUTS draws.

    Attributes:
      draws: (N, D) draws on the space the target is fitted on (for a NumPyro model, the
        unconstrained space: ``vi.nuts_draws`` gives them so).
    """

    draws: jax.Array

    def check(self, target) -> None:
        check_draws(self.draws, target, "vi.Draws(draws)")

    def loss(self, target, num_samples: int):
        del target
        return draws_loss(self.draws, num_samples)


@_static
class SNIS:
    """Self-normalised importance sampling from q, with the unnormalised density alone.

    Attributes:
      min_ess_fraction: a fit whose mean effective sample size over its last window falls
        below this fraction of the draws stops as ``weights_collapsed``.
      defensive_weight: the weight of the widened component of the proposal, in [0, 1).
      widen: that component's scale factor (>= 1).
    """

    min_ess_fraction: float = 0.02
    defensive_weight: float = 0.5
    widen: float = 2.0

    def __post_init__(self):
        if not 0.0 <= self.min_ess_fraction < 1.0:
            raise ValueError(
                f"SNIS: min_ess_fraction must be in [0, 1), got {self.min_ess_fraction}"
            )
        if not 0.0 <= self.defensive_weight < 1.0:
            raise ValueError(
                f"SNIS: defensive_weight must be in [0, 1), got {self.defensive_weight}"
            )
        if not self.widen >= 1.0:
            raise ValueError(f"SNIS: widen must be >= 1, got {self.widen}")

    def check(self, target) -> None:
        del target

    def loss(self, target, num_samples: int):
        return snis_loss(
            target.logdensity_fn,
            num_samples,
            defensive_weight=self.defensive_weight,
            widen=self.widen,
        )


@_static(data_fields=("estimator",), eq=True)  # eq: Draws compares by identity
class ForwardKL:
    """The forward KL, ``KL(p || q)``: minimise the cross-entropy (mass-covering).

    Fitted by ``vi.Stochastic(...)`` (the default for this objective).

    Attributes:
      estimator: where the draws of p come from: ``vi.Exact()``, ``vi.Draws(draws)`` or
        ``vi.SNIS(...)``; None: ``Exact()`` when the target can be sampled, else ``SNIS()``.

    Examples:
      >>> import jax
      >>> import vi
      >>> target = vi.targets.bimodal()
      >>> result = vi.fit(jax.random.key(0), target, objective=vi.ForwardKL())
      >>> result.stop_reason
      'converged'
    """

    estimator: Exact | Draws | SNIS | None = None

    default_num_samples: ClassVar[int] = 256

    def __post_init__(self):
        if self.estimator is not None and not isinstance(self.estimator, Exact | Draws | SNIS):
            raise TypeError(
                "ForwardKL(estimator=...) takes vi.Exact(), vi.Draws(draws) or vi.SNIS(), got "
                f"{type(self.estimator).__name__}"
            )

    @property
    def min_ess_fraction(self) -> float:
        return self.estimator.min_ess_fraction if isinstance(self.estimator, SNIS) else 0.0

    def resolve(self, target) -> "ForwardKL":
        """This objective with its estimator chosen and checked for ``target``."""
        estimator = self.estimator
        if estimator is None:
            estimator = Exact() if target.sample_fn is not None else SNIS()
        estimator.check(target)
        return ForwardKL(estimator)

    def gap(self, rng_key, params, target, num_draws: int) -> Gap | None:
        """The cross-entropy q still has to lose, from draws of the target.

        For a mean-field Gaussian the optimum matches the draws' per-coordinate means and
        variances, so the gap is ``Σ KL(N(m_i, s_i²) || N(μ_i, σ_i²))`` for their sample
        moments: the mean over the draws of ``log q*(x) - log q(x)``, whose spread gives
        the standard error. ``Draws(draws)`` uses its whole pool, the very objective it
        fits. ``Exact()`` takes ``8 num_draws`` fresh draws, whose sample moments miss the
        target's by chance; that inflates the estimate by about ``Σ (1 / 2 + (κ_i - 1) / 4)
        / n`` (κ_i: coordinate i's kurtosis), which is subtracted. ``SNIS()`` has no draws
        of the target: None.

        Args:
          rng_key: key for ``Exact()``'s draws.
          params: q's parameters.
          target: the target.
          num_draws: the draws' base count.

        Returns:
          A ``vi.objectives.gap.Gap``, or None.
        """
        estimator = self.resolve(target).estimator
        if isinstance(estimator, Exact):
            x = target.sample_fn(rng_key, 8 * num_draws)
        elif isinstance(estimator, Draws):
            x = estimator.draws
        else:
            return None
        x = jnp.asarray(x, params.loc.dtype)
        n = x.shape[0]
        if not isinstance(params, MeanFieldParams):
            return _family_gap(params, x, isinstance(estimator, Exact))
        mean, sd = jnp.mean(x, axis=0), jnp.std(x, axis=0)
        best = MeanFieldParams(mean, jnp.log(sd))
        terms = jax.vmap(lambda z: mean_field.log_prob(best, z) - mean_field.log_prob(params, z))(x)
        value, stderr = mean_estimate(terms)
        if isinstance(estimator, Exact):
            kurtosis = jnp.mean((x - mean) ** 4, axis=0) / sd**4
            value = value - jnp.sum(0.5 + 0.25 * (kurtosis - 1.0)) / n
        return Gap(value, stderr, jnp.isfinite(value) & jnp.isfinite(stderr))

    def loss(self, target, num_samples: int, *, stick_the_landing: bool = False):
        """``(loss_fn, draw_fn)`` of the stochastic cross-entropy; the loss draws from its key."""
        if stick_the_landing:
            raise ValueError(
                "stick_the_landing is a gradient estimator of the reverse KL (the ELBO); "
                "vi.Stochastic(stick_the_landing=True) cannot fit vi.ForwardKL()"
            )
        return self.resolve(target).estimator.loss(target, num_samples), None
