"""The stochastic method: fresh draws every step, any optax optimizer, automatic stopping.

For objectives or targets where fixed draws don't serve: very high dimension, log
densities too expensive to evaluate at many draws, and forward-KL objectives whose draws
come from the target. With ``Stopping()`` the fit stops itself: at the end of every window
of ``check_every`` steps it tests whether the window's mean gradient is distinguishable
from zero given its Monte-Carlo noise. A slow drift shows up as a consistent gradient even
when the loss barely moves, so it is not mistaken for convergence. At each such plateau the
step size is multiplied by ``decay`` (which also rescues a too-large learning rate); a
window whose mean gradient is so small that the ELBO it points to is under a tenth of
``gap_tol`` counts as a plateau too (near the optimum of a Gaussian posterior, the
sticking-the-landing gradient has almost no noise for the test to measure). After
``num_decays`` decays the next plateau stops the fit.

A plateau is not proof of the optimum: on an ill-conditioned posterior the noise of a fast
direction hides the drift of a slow one. So a fit that stops this way is checked where it
stands (``summary``, which ``vi.fit`` calls): what its objective still has to gain is
estimated (reverse KL: from mirrored fresh draws and a Hessian solve, ``vi.objectives.gap``;
forward KL with ``Exact()`` or ``Draws``: from the draws' moments; the Rényi and
importance-weighted bounds: from groups of fresh draws, ``estimator_gap``; ``SNIS()`` is not
checked), and the fit says ``converged`` only when that estimate plus three standard errors
is under ``gap_tol`` nats; otherwise ``stalled``, with the estimate in ``FitInfo.gap``.

The stopping rule lives in the step itself, so a user's loop over ``step`` computes what
``vi.fit`` computes, and a stopped state stays where it is.
"""

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vi.families import family
from vi.families.family import Params
from vi.fitting.start import initial_params
from vi.fitting.state import (
    CONVERGED,
    MAX_STEPS,
    NONFINITE,
    RUNNING,
    STALLED,
    WEIGHTS_COLLAPSED,
    FitInfo,
    Problem,
    natural_grad_norm,
)
from vi.objectives.elbo import ReverseKL

DEFAULT_OPTIMIZER = optax.adam(1e-2)
"""``Stochastic``'s optimizer when none is given: one object, so that every fit with the
default compiles once (optax optimizers compare by identity)."""


@dataclasses.dataclass(frozen=True)
class Stopping:
    """When a stochastic fit stops itself (see the module docstring).

    Attributes:
      check_every: steps per window of the stopping rule (shortened to as little as half
        when that makes the windows divide ``max_steps``).
      decay: the factor applied to the step size at each plateau.
      num_decays: step-size decays after which the next plateau stops the fit.
      gap_tol: nats; a fit stopped by a plateau says ``converged`` only when its estimated
        gap to the optimum, plus three standard errors, is under this.
      gap_draws: the draws of that estimate (mirrored pairs; a multiple of 4, at least 8);
        its standard error shrinks as their square root, and grows with D.
    """

    check_every: int = 250
    decay: float = 0.5
    num_decays: int = 3
    gap_tol: float = 0.02
    gap_draws: int = 1024

    def __post_init__(self):
        if not (isinstance(self.check_every, int) and self.check_every >= 2):
            raise ValueError(
                f"Stopping: check_every must be an integer >= 2, got {self.check_every!r}"
            )
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"Stopping: decay must be in (0, 1), got {self.decay!r}")
        if not (isinstance(self.num_decays, int) and self.num_decays >= 0):
            raise ValueError(
                f"Stopping: num_decays must be an integer >= 0, got {self.num_decays!r}"
            )
        if not 0.0 < self.gap_tol < math.inf:
            raise ValueError(f"Stopping: gap_tol must be positive nats, got {self.gap_tol!r}")
        if not (
            isinstance(self.gap_draws, int) and self.gap_draws >= 8 and self.gap_draws % 4 == 0
        ):
            raise ValueError(
                f"Stopping: gap_draws must be a multiple of 4, at least 8, got {self.gap_draws!r}"
            )


class StochasticState(NamedTuple):
    """The state of a stochastic fit between steps.

    Attributes:
      params: q's parameters.
      opt_state: the optimizer's state.
      step: steps taken (or skipped) so far.
      status: a key of ``vi.fitting.state.STATUS_NAMES``; ``running`` until the fit stops.
      step_scale: the factor on the optimizer's updates (halved at each plateau).
      num_decays: plateaus so far.
      bad_in_a_row: non-finite steps in a row (each one skipped).
      num_nonfinite: non-finite steps in all.
      failed_step: the step at which the fit gave up on non-finite values, or -1.
      sums: the current window's sums: objective, auxiliary value, count, gradient and
        squared gradient.
      window_objective: the mean objective over the last complete window.
      window_aux: the mean auxiliary value (SNIS: ESS fraction) over it.
      rel_change: the relative change of ``window_objective`` from the window before.
      mean_grad: the mean gradient over the last complete window.
      problem: the target and objective.
    """

    params: Params
    opt_state: optax.OptState
    step: jax.Array
    status: jax.Array
    step_scale: jax.Array
    num_decays: jax.Array
    bad_in_a_row: jax.Array
    num_nonfinite: jax.Array
    failed_step: jax.Array
    sums: tuple
    window_objective: jax.Array
    window_aux: jax.Array
    rel_change: jax.Array
    mean_grad: Params
    problem: Any


class StochasticInfo(NamedTuple):
    """What one step did.

    Attributes:
      objective: the step's estimate of the objective (the ELBO, or minus the cross-entropy
        for forward KL); NaN when the step was skipped or the fit had stopped.
      aux: the loss's auxiliary value (SNIS: the ESS fraction of the step's draws), or NaN.
      taken: whether the step changed the parameters.
    """

    objective: jax.Array
    aux: jax.Array
    taken: jax.Array


_WINDOW_FIELDS = (
    "status",
    "step_scale",
    "num_decays",
    "sums",
    "window_objective",
    "window_aux",
    "rel_change",
    "mean_grad",
)
"""The fields of a ``StochasticState`` that change at the end of a window."""


def _moved_fields(state: StochasticState) -> dict:
    """The fields a step that is taken changes, as they are."""
    return dict(params=state.params, opt_state=state.opt_state, sums=state.sums)


def plateau_threshold(num_params: int) -> float:
    """The z-score under which every mean-gradient entry counts as zero.

    ``sqrt(2 log(2 n)) + 1``: above what the largest of n independent standard normals
    typically reaches, so a converged fit is not held back by chance.
    """
    return math.sqrt(2.0 * math.log(2.0 * num_params)) + 1.0


def window_length(check_every: int, max_steps: int) -> int:
    """Steps per window: ``check_every``, or the longest divisor of ``max_steps`` down to
    half of it, so that the last window is full."""
    longest = min(check_every, max_steps)
    return next((d for d in range(longest, longest // 2, -1) if max_steps % d == 0), longest)


def _tree_sum(tree) -> jax.Array:
    return sum(jnp.sum(leaf) for leaf in jax.tree.leaves(tree))


def _select(pred, new, old):
    return jax.tree.map(lambda n, o: jnp.where(pred, n, o), new, old)


@dataclasses.dataclass(frozen=True)
class Stochastic:
    """Fits with fresh draws every step and an optax optimizer.

    Attributes:
      optimizer: any ``optax.GradientTransformation`` (schedules included); for a sweep of
        its settings in ``vi.fit_batch``, build it with ``optax.inject_hyperparams``.
      num_samples: draws per step (default 8 for ``ReverseKL``, 256 for ``ForwardKL``, one
        group of ``num_particles`` for ``Renyi`` and ``ImportanceWeighted``).
      stick_the_landing: the sticking-the-landing ELBO gradient (Roeder, Wu & Duvenaud
        2017), reverse KL only.
      max_steps: the most steps.
      stopping: when the fit stops itself; None runs exactly ``max_steps`` steps.
      max_nonfinite_in_a_row: give up (``nonfinite``) after this many skipped steps in a
        row; from the fifth in a row on, each also decays the step size.

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> import vi
      >>> target = vi.from_logdensity(lambda x: -0.5 * jnp.sum((x - 1.0) ** 2), jnp.zeros(2))
      >>> method = vi.Stochastic(optimizer=optax.adam(0.05), max_steps=300, stopping=None)
      >>> state = method.init(jax.random.key(0), target)
      >>> step = jax.jit(method.step)
      >>> for i in range(300):
      ...     state, info = step(jax.random.fold_in(jax.random.key(1), i), state)
      >>> bool(jnp.allclose(state.params.loc, 1.0, atol=0.2))
      True
    """

    optimizer: optax.GradientTransformation = DEFAULT_OPTIMIZER
    num_samples: int | None = None
    stick_the_landing: bool = False
    max_steps: int = 20_000
    stopping: Stopping | None = Stopping()
    max_nonfinite_in_a_row: int = 50

    def __post_init__(self):
        if not (hasattr(self.optimizer, "init") and hasattr(self.optimizer, "update")):
            hint = ": call it, e.g. optax.adam(1e-2)" if callable(self.optimizer) else ""
            raise TypeError(
                "Stochastic(optimizer=...) must be an optax optimizer (with init and update), "
                f"got {type(self.optimizer).__name__}{hint}"
            )
        if self.num_samples is not None and not (
            isinstance(self.num_samples, int) and self.num_samples >= 1
        ):
            raise ValueError(
                f"Stochastic: num_samples must be an integer >= 1, got {self.num_samples!r}"
            )
        if not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ValueError(
                f"Stochastic: max_steps must be an integer >= 1, got {self.max_steps!r}"
            )
        if self.stopping is not None and not isinstance(self.stopping, Stopping):
            raise TypeError(
                f"Stochastic: stopping must be vi.Stopping(...) or None, got {self.stopping!r}"
            )

    @property
    def window(self) -> int:
        """Steps per window of the stopping rule (and of the drivers' loops)."""
        check_every = 250 if self.stopping is None else self.stopping.check_every
        return window_length(check_every, self.max_steps)

    def init(
        self,
        rng_key: jax.Array,
        target,
        init_params: Params | None = None,
        *,
        objective=None,
        family=None,
    ) -> StochasticState:
        """The state before the first step.

        Args:
          rng_key: unused (the start is deterministic); kept for the common signature.
          target: a ``vi.Target``.
          init_params: where q starts; default: centred on ``target.init_position``
            with scale 0.1.
          objective: ``vi.ReverseKL()`` (default), ``vi.ForwardKL(...)``, ``vi.Renyi(alpha)``
            or ``vi.ImportanceWeighted(...)``.
          family: ``vi.MeanField()`` (default), ``vi.FullRank()`` or ``vi.LowRank(rank)``,
            when ``init_params`` is not given.

        Returns:
          A ``StochasticState``.
        """
        del rng_key
        objective = (objective or ReverseKL()).resolve(target)
        params = initial_params(target, init_params, family=family)
        dtype = params.loc.dtype
        self._loss(Problem(target, objective))  # fails early on a combination that cannot run
        zero = jnp.zeros((), jnp.int32)
        nan = jnp.full((), jnp.nan, dtype)
        zeros = jax.tree.map(jnp.zeros_like, params)
        # Draws of the target with a non-finite entry end the fit before its first step, as
        # non-finite (checked here, on the device, for draws traced under a user's jit; the
        # drivers name the entry when the draws are concrete).
        draws = getattr(getattr(objective, "estimator", None), "draws", None)
        finite = jnp.all(jnp.isfinite(draws)) if draws is not None else True
        return StochasticState(
            params=params,
            opt_state=self.optimizer.init(params),
            step=zero,
            status=jnp.where(finite, RUNNING, NONFINITE).astype(jnp.int32),
            step_scale=jnp.ones((), dtype),
            num_decays=zero,
            bad_in_a_row=zero,
            num_nonfinite=zero,
            failed_step=jnp.where(finite, -1, 0).astype(jnp.int32),
            sums=(jnp.zeros((), dtype), jnp.zeros((), dtype), zero, zeros, zeros),
            window_objective=nan,
            window_aux=nan,
            rel_change=nan,
            mean_grad=zeros,
            problem=Problem(target, objective),
        )

    def _loss(self, problem: Problem):
        objective = problem.objective
        num_samples = self.num_samples or objective.default_num_samples
        return objective.loss(problem.target, num_samples, stick_the_landing=self.stick_the_landing)

    def step(
        self, rng_key: jax.Array, state: StochasticState
    ) -> tuple[StochasticState, StochasticInfo]:
        """One optimisation step from the draws of ``rng_key``; a stopped state stays as it is.

        Args:
          rng_key: the key of this step's draws (``vi.fit`` uses
            ``jax.random.fold_in(step_key, state.step)``).
          state: the state after the last step.

        Returns:
          The new state and what the step did.
        """
        loss_fn, draw_fn = self._loss(state.problem)
        noise = rng_key if draw_fn is None else draw_fn(rng_key, state.params)
        (loss, aux), grad = jax.value_and_grad(loss_fn, has_aux=True)(state.params, noise)
        aux = jnp.full_like(loss, jnp.nan) if aux is None else aux
        running = state.status == RUNNING
        # Everything that uses the gradient runs inside a cond, to which it is an operand:
        # selecting between new and old values instead lets XLA:CPU fuse the gradient into
        # each select, and compute it again for each.
        taken, moved = jax.lax.cond(
            running & jnp.isfinite(loss + _tree_sum(grad)),
            self._take,
            lambda state, *_: (jnp.asarray(False), _moved_fields(state)),
            state,
            loss,
            aux,
            grad,
        )
        skipped = running & ~taken
        bad_in_a_row = jnp.where(taken, 0, state.bad_in_a_row + skipped)
        decay = 0.5 if self.stopping is None else self.stopping.decay
        step = state.step + running
        gave_up = running & (bad_in_a_row >= self.max_nonfinite_in_a_row)
        state = state._replace(
            **moved,
            step=step,
            status=jnp.where(gave_up, NONFINITE, state.status).astype(jnp.int32),
            step_scale=jnp.where(skipped & (bad_in_a_row >= 5), decay, 1.0) * state.step_scale,
            bad_in_a_row=bad_in_a_row,
            num_nonfinite=state.num_nonfinite + skipped,
            failed_step=jnp.where(gave_up, step, state.failed_step),
        )
        end = running & ~gave_up & ((step % self.window == 0) | (step >= self.max_steps))
        # Only the fields a window's end changes go through the cond (a select in a batch).
        window_fields = lambda s: {k: getattr(s, k) for k in _WINDOW_FIELDS}
        closed = jax.lax.cond(
            end, lambda s: window_fields(self._close_window(s)), window_fields, state
        )
        state = state._replace(**closed)
        nan = jnp.full_like(loss, jnp.nan)
        info = StochasticInfo(jnp.where(taken, -loss, nan), jnp.where(taken, aux, nan), taken)
        return state, info

    def _take(self, state, loss, aux, grad):
        """``(taken, fields)``: the optimizer's step and the window's sums, unless the new
        parameters overflow (then nothing moves)."""
        updates, opt_state = self.optimizer.update(grad, state.opt_state, state.params)
        updates = jax.tree.map(lambda u: state.step_scale * u, updates)
        params = optax.apply_updates(state.params, updates)
        value, aux_sum, count, grad_sum, grad_sumsq = state.sums
        moved = dict(
            params=params,
            opt_state=opt_state,
            sums=(
                value - loss,
                aux_sum + aux,
                count + 1,
                jax.tree.map(jnp.add, grad_sum, grad),
                grad_sumsq
                if self.stopping is None  # only the stopping rule's z-test needs it
                else jax.tree.map(lambda s, g: s + g**2, grad_sumsq, grad),
            ),
        )
        finite = jnp.isfinite(_tree_sum(params))
        return finite, _select(finite, moved, _moved_fields(state))

    def _close_window(self, state: StochasticState) -> StochasticState:
        """The window's statistics and the stopping rule, then fresh sums."""
        value, aux, count, grad_sum, grad_sumsq = state.sums
        n = jnp.maximum(count, 1).astype(value.dtype)
        mean_grad = jax.tree.map(lambda s: s / n, grad_sum)
        window_objective = jnp.where(count > 0, value / n, jnp.nan)
        rel_change = (window_objective - state.window_objective) / jnp.maximum(
            jnp.abs(window_objective), 1.0
        )
        status, step_scale, num_decays = state.status, state.step_scale, state.num_decays
        if self.stopping is not None:
            var_mean = jax.tree.map(
                lambda q, m: jnp.maximum(q / n - m**2, 0.0) / n, grad_sumsq, mean_grad
            )
            z = jax.tree.map(lambda m, v: jnp.abs(m) / jnp.sqrt(v + 1e-30), mean_grad, var_mean)
            max_z = jnp.max(jnp.stack([jnp.max(leaf) for leaf in jax.tree.leaves(z)]))
            # The ELBO the mean gradient points to, with the diagonal curvature of a
            # Gaussian optimum (for the mean-field family 1 / σ² for a mean, 2 for a log scale).
            pointed = family.pointed_gain(state.params, mean_grad)
            # Only where the objective has that curvature: the particle bounds are flatter.
            if getattr(state.problem.objective, "flatter_than_elbo", False):
                pointed = jnp.inf
            plateau = (count >= 2) & (
                (max_z < plateau_threshold(family.num_params(state.params)))
                | (pointed < 0.1 * self.stopping.gap_tol)
            )
            step_scale = jnp.where(plateau, self.stopping.decay, 1.0) * step_scale
            num_decays = num_decays + plateau
            status = jnp.where(num_decays > self.stopping.num_decays, CONVERGED, status)
        status = jnp.where(state.step >= self.max_steps, MAX_STEPS, status)
        return state._replace(
            status=jnp.where(state.status == RUNNING, status, state.status).astype(jnp.int32),
            step_scale=step_scale,
            num_decays=num_decays,
            sums=jax.tree.map(jnp.zeros_like, state.sums),
            window_objective=window_objective,
            window_aux=jnp.where(count > 0, aux / n, jnp.nan),
            rel_change=rel_change,
            mean_grad=mean_grad,
        )

    def summary(self, state: StochasticState, rng_key: jax.Array | None = None) -> FitInfo:
        """The diagnostics of a finished fit, its ELBO fields NaN (the drivers fill them).

        With ``rng_key`` and a stopping rule, the fit's gap to its objective's optimum is
        estimated (module docstring), and a fit the rule stopped says ``converged`` only
        when that gap is under ``stopping.gap_tol``; ``vi.fit`` passes
        ``fold_in(eval_key, 1)``, so a loop of your own gets its status from
        ``method.summary(state, that key)``.
        """
        collapsed = (state.window_aux < state.problem.objective.min_ess_fraction) & (
            state.status != NONFINITE
        )
        nan = jnp.full((), jnp.nan, state.params.loc.dtype)
        status, gap, gap_stderr = state.status, nan, nan
        estimate = None
        if rng_key is not None and self.stopping is not None:
            objective, target = state.problem.objective, state.problem.target
            estimate = objective.gap(rng_key, state.params, target, self.stopping.gap_draws)
        if estimate is not None:
            gap = estimate.value
            gap_stderr = jnp.where(estimate.solved, estimate.stderr, jnp.inf)
            short = (status == CONVERGED) & (estimate.upper() > self.stopping.gap_tol)
            status = jnp.where(short, STALLED, status)
        return FitInfo(
            num_steps=state.step,
            status=jnp.where(collapsed, WEIGHTS_COLLAPSED, status).astype(jnp.int32),
            elbo=nan,
            elbo_stderr=nan,
            objective=state.window_objective,
            grad_norm=natural_grad_norm(state.params, state.mean_grad),
            rel_change=state.rel_change,
            num_nonfinite=state.num_nonfinite,
            failed_step=state.failed_step,
            ess_fraction=state.window_aux,
            gap=gap,
            gap_stderr=gap_stderr,
        )
