"""Between the two ends: the variational Rényi bound and the importance-weighted bound.

With log weights ``log w = log p(x) - log q(x)`` of K draws ``x ~ q``, the Rényi bound of
order α (Li & Turner 2016, "Rényi divergence variational inference") is

    L_α(q) = 1 / (1 - α) · log E_q[w^(1 - α)] = log Z - D_α(q || p / Z),

estimated by ``1 / (1 - α) · log (1 / K) Σ_k w_k^(1 - α)``. α → 1 is the ELBO
(mode-seeking, ``vi.ReverseKL``); α = 0 is the importance-weighted bound of Burda,
Grosse & Salakhutdinov (2016), a tighter lower bound on log Z that tightens with K;
between them q widens towards the target's mass. Both estimators are biased for finite K
(a concave function of a mean), so what a fit maximises is the expected K-draw bound:
``num_particles`` is part of the objective.

**Below 0** the bound is an upper bound on log Z, and fitting q means minimising it. Written
with the target's own draws it is a Rényi divergence the other way round (Li & Turner's
``D_α(q || p) = α / (1 - α) · D_{1-α}(p || q)``, a standard identity):

    L_α(q) = log Z - D_α(q || p / Z) = log Z + |α| / (1 + |α|) · D_{1+|α|}(p / Z || q),

so minimising L_α is minimising ``D_{1+|α|}(p || q) = 1 / |α| · log E_p[(p / q)^|α|] - log Z``,
a mass-covering divergence of order ``1 + |α|`` (α = -1: ``log(1 + χ²(p || q))``, the
quantity CHIVI bounds, Dieng et al. 2017; α → 0⁻: the forward KL). ``Renyi`` estimates it
from draws of the target (``vi.Exact()`` or ``vi.Draws(draws)``, as ``vi.ForwardKL`` does),
``1 / |α| · log (1 / K) Σ_k (p(x_k) / q(x_k))^|α|`` over groups of K draws: its gradient
is a weighted forward-KL gradient, the weights ``softmax(|α| log w)`` leaning on the draws q
covers worst. Written with draws of q instead, the same quantity weighs ``w^(1 + |α|)``:
its gradient cannot see the mass q misses, and such fits collapsed or diverged in every
way we tried on a correlated 2-D Gaussian (the bound maximised or minimised, and CHIVI's
exponentiated surrogate). K = 1 is the forward KL itself; the K-draw estimate is biased
low, so again what a fit minimises is the expected K-draw estimate.

The importance-weighted bound's gradient can use the doubly-reparameterised estimator
(DReG, Tucker, Lawson, Gu & Maddison 2019, "Doubly reparameterized gradient estimators
for Monte Carlo objectives"), ``Σ_k w̃_k² ∂ log w_k / ∂x_k · ∂x_k / ∂φ`` with the
normalised weights ``w̃`` and q's parameters held fixed inside ``log q``: the same
expectation, and a variance that does not grow with K.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from vi.families import family
from vi.families.family import Params
from vi.kernels.estimate import Estimate, standard_error
from vi.objectives.forward_kl import Draws, Exact
from vi.objectives.gap import Gap, estimator_gap, newton_gap


def renyi_bound_from_draws(
    params: Params,
    logdensity_fn,
    eps: jax.Array,
    alpha: float,
    *,
    doubly_reparameterised: bool = False,
    first_order: bool = False,
) -> Estimate:
    """The Rényi bound of order ``alpha`` from groups of standard-normal draws.

    Differentiable in ``params``.

    Args:
      params: the variational parameters.
      logdensity_fn: unnormalised log density of the target, (D,) -> ().
      eps: (G, K, noise_dim) standard-normal draws: G independent estimates of K particles each.
      alpha: the order; 1 gives the ELBO, 0 the importance-weighted bound.
      doubly_reparameterised: the DReG gradient (``alpha = 0`` only; same value).
      first_order: differentiate with the normalised weights held as constants: the same
        value and gradient (``Σ_k w̃_k ∇ log w_k``) for a cheaper backward pass, but
        not the bound's second derivatives. A fit's step takes it.

    Returns:
      The mean of the G estimates and its standard error (NaN for G = 1).
    """
    if doubly_reparameterised and alpha != 0:
        raise ValueError(f"the doubly-reparameterised gradient needs alpha = 0, got {alpha}")
    # Every draw in one flat batch, as the ELBO has them: XLA:CPU compiles the (G, K, D)
    # shapes into slower batched products (bench_alpha.py).
    flat = eps.reshape(-1, eps.shape[-1])
    x = family.transform(params, flat)
    log_p = jax.vmap(logdensity_fn)(x)
    if doubly_reparameterised:  # log q with q's parameters held: only the path through x
        log_q = family.held_log_prob(params, flat, x)
    else:  # log q(x) written in ε: the same value and total gradient, cheaper
        log_q = family.noise_log_prob(params, flat)
    log_w = (log_p - log_q).reshape(eps.shape[:-1])
    num_particles = eps.shape[-2]
    if alpha == 1:
        bounds = jnp.mean(log_w, axis=-1)
    else:
        scaled = (1.0 - alpha) * log_w
        bounds = (jax.nn.logsumexp(scaled, axis=-1) - jnp.log(num_particles)) / (1.0 - alpha)
    value = jnp.mean(bounds)
    if doubly_reparameterised or (first_order and alpha != 1):
        weights = jax.lax.stop_gradient(jax.nn.softmax((1.0 - alpha) * log_w, axis=-1))
        if doubly_reparameterised:
            weights = weights**2
        surrogate = jnp.mean(jnp.sum(weights * log_w, axis=-1))
        value = jax.lax.stop_gradient(value) + surrogate - jax.lax.stop_gradient(surrogate)
    return Estimate(value, standard_error(bounds))


def renyi_from_target_draws(
    params: Params, log_p: jax.Array, x: jax.Array, alpha: float
) -> Estimate:
    """For ``alpha < 0``: ``log Z + D_{1+|α|}(p || q)`` from groups of draws of the target.

    ``1 / |α| · log (1 / K) Σ_k (p(x_k) / q(x_k))^|α|`` per group (the module), averaged
    over the groups. Differentiable in ``params``; minimised by a fit.

    Args:
      params: the variational parameters.
      log_p: (G, K) the target's unnormalised log density at ``x``.
      x: (G, K, D) draws of the target: G independent estimates of K draws each.
      alpha: the order, < 0.

    Returns:
      The mean of the G estimates and its standard error (NaN for G = 1).
    """
    if not alpha < 0:
        raise ValueError(f"draws of the target estimate the Rényi bound for alpha < 0, got {alpha}")
    power = -float(alpha)
    log_q = family.log_prob(params, x.reshape(-1, x.shape[-1])).reshape(log_p.shape)
    num_particles = x.shape[-2]
    values = (jax.nn.logsumexp(power * (log_p - log_q), axis=-1) - jnp.log(num_particles)) / power
    return Estimate(jnp.mean(values), standard_error(values))


class _ParticleBound:
    """What the Rényi and importance-weighted objectives share: the stochastic loss over
    groups of ``num_particles`` draws, and the gap check of the expected bound."""

    order: float  # the Rényi order of the bound
    doubly_reparameterised = False
    min_ess_fraction = 0.0
    flatter_than_elbo = True
    """Near the optimum the bound curves about α times as much as the ELBO (less still
    for α = 0 and many particles), so the stopping rule's ELBO-curvature shortcut, which
    would stop such fits early, is off."""

    @property
    def default_num_samples(self) -> int:
        """One group of particles per step."""
        return self.num_particles

    def resolve(self, target):
        """This objective for ``target`` (nothing to resolve)."""
        del target
        return self

    def _check(self, target, num_samples=None, stick_the_landing=False):
        name = type(self).__name__
        if target.minibatch_fn is not None:
            raise ValueError(
                f"vi.{name} needs the full data: the exponential of a subsampled log "
                "density is biased, so the bound would be lost; drop subsample_size, or fit "
                "vi.ReverseKL()"
            )
        if stick_the_landing:
            raise ValueError(
                f"Stochastic(stick_the_landing=True) is for vi.ReverseKL(); with vi.{name} "
                "use vi.ImportanceWeighted(..., doubly_reparameterised=True) for a "
                "low-variance gradient"
            )
        if num_samples is not None and num_samples % self.num_particles:
            raise ValueError(
                f"Stochastic(num_samples={num_samples}) must be a multiple of "
                f"vi.{name}(num_particles={self.num_particles}): each step takes whole "
                "groups of particles"
            )

    def _bound(self, params, logdensity_fn, eps, *, plain=False) -> Estimate:
        """The bound; for a step (``plain=False``) with the step's gradient estimator,
        for the gap check the bound itself, whose Hessian that check needs."""
        dreg = self.doubly_reparameterised and not plain
        return renyi_bound_from_draws(
            params,
            logdensity_fn,
            eps,
            self.order,
            doubly_reparameterised=dreg,
            first_order=not plain,
        )

    def loss(self, target, num_samples: int, *, stick_the_landing: bool = False):
        """``(loss_fn, draw_fn)`` of the negative bound over ``num_samples / num_particles``
        groups of draws (no auxiliary value)."""
        self._check(target, num_samples, stick_the_landing)
        shape = (num_samples // self.num_particles, self.num_particles)

        def draw_fn(rng_key, params):
            return jax.random.normal(
                rng_key, (*shape, *family.noise_shape(params)), params.loc.dtype
            )

        def loss_fn(params, eps):
            return -self._bound(params, target.logdensity_fn, eps).value, None

        return loss_fn, draw_fn

    def gap(self, rng_key, params, target, num_draws: int) -> Gap:
        """The bound q still has to gain at the optimum of the expected
        ``num_particles``-draw bound (``estimator_gap``)."""
        self._check(target)
        # The plain bound: its gradient is as unbiased as DReG's, and its Hessian is the
        # bound's own.
        loss_fn = lambda p, eps: -self._bound(p, target.logdensity_fn, eps, plain=True).value
        return estimator_gap(rng_key, params, loss_fn, num_draws, self.num_particles)

    def __post_init__(self):
        if not (isinstance(self.num_particles, int) and self.num_particles >= 1):
            raise ValueError(
                f"vi.{type(self).__name__}: num_particles must be an integer >= 1, got "
                f"{self.num_particles!r}"
            )


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["estimator"],
    meta_fields=["alpha", "num_particles"],
)
@dataclasses.dataclass(frozen=True)
class Renyi(_ParticleBound):
    """The variational Rényi bound of order ``alpha`` (Li & Turner 2016), reparameterised.

    ``alpha = 1`` is the ELBO, ``0`` the importance-weighted bound; between them the fit
    covers more mass, above 1 it seeks a mode harder. Below 0 the bound is an upper bound
    on log Z, minimised through ``D_{1-α}(p || q)`` from draws of the target (the module):
    the fit covers mass at least as much as the forward KL does. Fitted by
    ``vi.Stochastic``.

    Attributes:
      alpha: the order, a finite number.
      num_particles: K, the draws inside one estimate of the bound (part of the objective:
        the fit maximises the expected K-draw bound). ``Stochastic(num_samples=...)`` must
        be a multiple of it; by default a step takes one group.
      estimator: for ``alpha < 0`` only, where the target's draws come from: ``vi.Exact()``
        or ``vi.Draws(draws)``; None: ``Exact()`` when the target can be sampled.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import vi
      >>> target = vi.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.ones(2))
      >>> result = vi.fit(jax.random.key(0), target, objective=vi.Renyi(0.5))
      >>> bool(jnp.allclose(result.params.loc, 0.0, atol=0.1))
      True
      >>> covering = vi.Renyi(-1.0, num_particles=64)  # needs draws of the target
    """

    alpha: float
    num_particles: int = 8
    estimator: Exact | Draws | None = None

    def __post_init__(self):
        super().__post_init__()
        finite = isinstance(self.alpha, (int, float)) and abs(self.alpha) < float("inf")
        if not finite or isinstance(self.alpha, bool):
            raise ValueError(f"vi.Renyi: alpha must be a finite number, got {self.alpha!r}")
        if self.estimator is not None and self.alpha >= 0:
            raise ValueError(
                f"vi.Renyi(alpha={self.alpha}) is estimated from draws of q; estimator= "
                "(draws of the target) is for alpha < 0 only"
            )
        if self.estimator is not None and not isinstance(self.estimator, Exact | Draws):
            raise TypeError(
                "vi.Renyi(estimator=...) takes vi.Exact() or vi.Draws(draws), got "
                f"{type(self.estimator).__name__}: below 0 the bound from self-normalised "
                "draws of q weighs w^(1 + |alpha|) and its fits collapse"
            )

    @property
    def order(self) -> float:
        return float(self.alpha)

    def resolve(self, target) -> "Renyi":
        """This objective with its estimator chosen and checked for ``target`` (α < 0)."""
        if self.alpha >= 0:
            return self
        estimator = self.estimator
        if estimator is None:
            if target.sample_fn is None:
                raise ValueError(
                    f"vi.Renyi(alpha={self.alpha}) needs draws of the target, and this target "
                    "cannot be sampled exactly (target.sample_fn is None): pass "
                    "vi.Renyi(alpha, estimator=vi.Draws(draws)) with draws of it (e.g. "
                    "vi.nuts_draws)"
                )
            estimator = Exact()
        estimator.check(target)
        return Renyi(self.alpha, self.num_particles, estimator)

    def _target_draws(self, rng_key, target, shape, dtype):
        """(*shape, D) draws of the target from the estimator: fresh, or from the pool."""
        count = math.prod(shape)
        estimator = self.resolve(target).estimator
        if isinstance(estimator, Exact):
            x = target.sample_fn(rng_key, count)
        else:
            pool = estimator.draws
            x = jnp.asarray(pool)[jax.random.randint(rng_key, (count,), 0, pool.shape[0])]
        return jnp.asarray(x, dtype).reshape(*shape, target.dim)

    def _covering(self, params, target, x):
        log_p = jax.vmap(jax.vmap(target.logdensity_fn))(x)
        return renyi_from_target_draws(params, log_p, x, self.alpha)

    def loss(self, target, num_samples: int, *, stick_the_landing: bool = False):
        """``(loss_fn, draw_fn)``: above 0 the negative bound over groups of draws of q; below
        0 the bound itself (``D_{1+|α|}(p || q)`` plus log Z) over groups of the target's."""
        if self.alpha >= 0:
            return super().loss(target, num_samples, stick_the_landing=stick_the_landing)
        self._check(target, num_samples, stick_the_landing)
        shape = (num_samples // self.num_particles, self.num_particles)

        def draw_fn(rng_key, params):
            return self._target_draws(rng_key, target, shape, params.loc.dtype)

        def loss_fn(params, x):
            return self._covering(params, target, x).value, None

        return loss_fn, draw_fn

    def gap(self, rng_key, params, target, num_draws: int) -> Gap:
        """What q still has to lose of the expected K-draw objective: above 0 as for the
        importance-weighted bound; below 0 ``newton_gap`` with one gradient per group of
        the target's draws (about four times ``num_draws`` draws, at least 32 groups) and
        the Hessian on 64 groups of its own."""
        if self.alpha >= 0:
            return super().gap(rng_key, params, target, num_draws)
        self._check(target)
        num_groups = 8 * max(4, -(-num_draws // self.num_particles) // 2)
        shape = (num_groups + 64, 1, self.num_particles)
        x = self._target_draws(rng_key, target, shape, params.loc.dtype)
        loss = lambda theta, groups: self._covering(theta, target, groups).value
        grads = jax.lax.map(lambda group: jax.grad(loss)(params, group), x[:num_groups])
        return newton_gap(params, grads, lambda theta: loss(theta, x[num_groups:, 0]))


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[],
    meta_fields=["num_particles", "doubly_reparameterised"],
)
@dataclasses.dataclass(frozen=True)
class ImportanceWeighted(_ParticleBound):
    """The importance-weighted bound of ``num_particles`` draws (Burda et al. 2016).

    The Rényi bound of order 0, ``E[log (1 / K) Σ_k w_k]``; K = 1 is the ELBO. Fitted by
    ``vi.Stochastic``.

    Attributes:
      num_particles: K.
      doubly_reparameterised: the DReG gradient estimator (Tucker et al. 2019).
    """

    num_particles: int = 8
    doubly_reparameterised: bool = False
    order = 0.0
