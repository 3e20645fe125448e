"""The stochastic fit: fresh draws every step, any optax optimizer, automatic stopping.

For objectives or targets where fixed draws don't serve: very high dimension,
log densities too expensive to evaluate at many draws, and forward-KL objectives
whose draws come from the target. The loop stops itself: every ``check_every``
steps it tests whether the mean gradient over the window is distinguishable
from zero given its Monte-Carlo noise. A slow drift shows up as a consistent
gradient even when the loss barely moves, so it is not mistaken for
convergence. At each such plateau the step size is multiplied by ``decay``
(which also rescues a too-large learning rate); after ``num_decays`` decays the
next plateau stops the fit as ``converged``.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vi import _random as random
from vi.families.mean_field import MeanFieldParams
from vi.fitting.loop import FitLoop, run
from vi.fitting.state import (
    CONVERGED,
    MAX_STEPS,
    NONFINITE,
    RUNNING,
    WEIGHTS_COLLAPSED,
    FitInfo,
    FitOutput,
    all_finite,
    flag_nonfinite_elbo,
    natural_grad_norm,
)
from vi.fitting.windows import block_length, window_length
from vi.objectives.elbo import elbo, negative_elbo_loss_from_draws


class _Carry(NamedTuple):
    """The state between windows."""

    params: MeanFieldParams
    opt_state: optax.OptState
    rng_key: jax.Array
    noise: Any
    step: jax.Array
    status: jax.Array
    step_scale: jax.Array
    num_decays: jax.Array
    prev_aux: jax.Array
    prev_mean: jax.Array
    rel_change: jax.Array
    mean_grad: MeanFieldParams
    num_nonfinite: jax.Array
    bad_in_a_row: jax.Array
    failed_step: jax.Array
    trace: jax.Array
    eval_key: jax.Array


class _Inner(NamedTuple):
    """The state between the steps of one window: only what every step needs.

    Counts, the stopping rule and the failure step are worked out once per
    window, from the window's objective values.
    """

    params: MeanFieldParams
    opt_state: optax.OptState
    rng_key: jax.Array
    noise: Any  # the next step's draws (drawn a step ahead, so materialised)
    step_scale: jax.Array
    bad_in_a_row: jax.Array
    grad_sum: MeanFieldParams
    grad_sumsq: MeanFieldParams
    offset: jax.Array | None  # the step's place in the window, when some steps are not live


def plateau_threshold(num_params: int) -> float:
    """The z-score under which every mean-gradient entry counts as zero.

    ``sqrt(2 log(2 n)) + 1``: above what the largest of n independent standard
    normals typically reaches, so a converged fit is not held back by chance.
    """
    return math.sqrt(2.0 * math.log(2.0 * num_params)) + 1.0


def stochastic_loop(
    loss_fn: Callable[[MeanFieldParams, jax.Array], tuple[jax.Array, jax.Array]],
    logdensity_fn: Callable[[jax.Array], jax.Array],
    *,
    optimizer: optax.GradientTransformation,
    max_steps: int = 20_000,
    check_every: int = 250,
    decay: float = 0.5,
    num_decays: int = 3,
    max_nonfinite_in_a_row: int = 50,
    num_eval_samples: int = 1024,
    min_ess_fraction: float = 0.0,
    draw_fn: Callable[[jax.Array, MeanFieldParams], Any] | None = None,
) -> FitLoop:
    """The loop that minimises a stochastic loss with an optax optimizer.

    Its ``init`` takes the key for the loss's draws (split once per step) and
    for the final fresh-draw ELBO.

    Args:
      loss_fn: ``(params, noise) -> (loss, aux)``: an estimate of the loss from the
        step's noise (its key when there is no ``draw_fn``) and an auxiliary scalar to
        average per window (None or NaN when there is none).
      init_params: where to start.
      optimizer: any optax gradient transformation.
      max_steps: the most steps.
      check_every: steps per window of the stopping rule (shortened to as little as
        half when that makes the windows divide ``max_steps``: ``window_length``).
      decay: factor applied to the optimizer's updates at each plateau.
      num_decays: step-size decays after which the next plateau stops the fit.
      max_nonfinite_in_a_row: give up (``nonfinite``) after this many skipped
        steps in a row; from the fifth in a row on, each also decays the step size.
      logdensity_fn: the target's log density, for the final ELBO estimate.
      num_eval_samples: fresh draws for the final ELBO estimate.
      min_ess_fraction: flag the fit ``weights_collapsed`` when the loss's mean
        ESS fraction over the last window falls below this.
      draw_fn: ``(rng_key, params) -> noise``, the step's draws from its key (only
        ``params``' shapes and dtypes may be used). The loop draws each step's noise a
        step ahead and carries it, so the draws are computed once and not recomputed
        by every use in the gradient.

    Returns:
      A ``FitLoop``.
    """
    if draw_fn is None:
        draw_fn = lambda rng_key, params: rng_key  # the loss draws from its key
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
    window = window_length(check_every, max_steps)
    num_windows = -(-max_steps // window)

    def running(carry):
        return carry.status == RUNNING

    # Windows are full except perhaps the last (a static choice: full windows pay nothing
    # for knowing which steps are live).
    partial = max_steps % window != 0

    def one_step(inner: _Inner, num_live: jax.Array | None) -> tuple[_Inner, tuple]:
        """One optimisation step; ``num_live`` counts the window's live steps (None: all)."""
        (value, aux), grad = value_and_grad(inner.params, inner.noise)
        # One cheap check per step: a sum is finite only if every term is (or overflows,
        # which is no step to take either). The parameters are checked once per window.
        finite = jnp.isfinite(value + sum(jnp.sum(g) for g in jax.tree.leaves(grad)))
        # A fit that gave up (max_nonfinite_in_a_row skipped steps) stays where it was.
        take = finite & (inner.bad_in_a_row < max_nonfinite_in_a_row)
        live = True if num_live is None else inner.offset < num_live

        def next_draws(inner):
            """The next step's key and draws, made in either branch after the gradient (on
            CPU, work that could run beside the gradient is handed to other threads)."""
            rng_key, step_key = random.split(inner.rng_key)
            return inner._replace(rng_key=rng_key, noise=draw_fn(step_key, inner.params))

        def take_step(inner):
            updates, opt_state = optimizer.update(grad, inner.opt_state, inner.params)
            updates = jax.tree.map(lambda u: inner.step_scale * u, updates)
            inner = next_draws(inner)._replace(
                params=optax.apply_updates(inner.params, updates),
                opt_state=opt_state,
                bad_in_a_row=jnp.zeros_like(inner.bad_in_a_row),
                grad_sum=jax.tree.map(jnp.add, inner.grad_sum, grad),
                grad_sumsq=jax.tree.map(lambda s, g: s + g**2, inner.grad_sumsq, grad),
            )
            return inner, (-value, aux)

        def skip_step(inner):
            # Sporadic non-finite draws are skipped; a run of them means the steps are too
            # long. A step that is not live leaves everything where it was, so that the k-th
            # step taken draws with the k-th key however steps fall into windows.
            bad_in_a_row = jnp.where(live, inner.bad_in_a_row + 1, inner.bad_in_a_row)
            step_scale = jnp.where(bad_in_a_row >= 5, inner.step_scale * decay, inner.step_scale)
            advanced = next_draws(inner)
            if num_live is not None:
                advanced = jax.tree.map(
                    lambda new, old: jax.lax.select(live, new, old), advanced, inner
                )
            inner = advanced._replace(bad_in_a_row=bad_in_a_row, step_scale=step_scale)
            nan = jnp.full_like(value, jnp.nan)
            return inner, (nan, None if aux is None else jnp.full_like(aux, jnp.nan))

        # The step is taken or skipped under a cond, not by selecting between old and new
        # state: selects would each recompute the gradient on CPU.
        inner, outputs = jax.lax.cond(take & live, take_step, skip_step, inner)
        if num_live is not None:
            inner = inner._replace(offset=inner.offset + 1)
        return inner, outputs

    def step(carry):
        """One window of ``check_every`` steps (fewer at the end), then the stopping rule.

        The window runs as a scan over blocks of steps, each block a scan whose per-step
        outputs fit in a small buffer (``block_length``), so that on CPU a small model's
        steps run back to back on one thread. Each step splits its key off the last.
        """
        block = block_length(window, carry.params.loc.dtype.itemsize)
        num_blocks = -(-window // block)
        # Steps past max_steps (a partial last window) or past the window (blocks that
        # overhang it) are computed but not taken; only then does a step need to know.
        some_dead = partial or num_blocks * block != window
        num_live = jnp.minimum(window, max_steps - carry.step) if some_dead else None
        offsets = jnp.arange(window, dtype=carry.step.dtype)
        live = carry.step + offsets < max_steps
        zeros = jax.tree.map(jnp.zeros_like, carry.params)
        inner = _Inner(
            params=carry.params,
            opt_state=carry.opt_state,
            rng_key=carry.rng_key,
            noise=carry.noise,
            step_scale=carry.step_scale,
            bad_in_a_row=carry.bad_in_a_row,
            grad_sum=zeros,
            grad_sumsq=zeros,
            offset=jnp.zeros((), carry.step.dtype) if some_dead else None,
        )

        def one_block(inner, _):
            return jax.lax.scan(lambda i, _: one_step(i, num_live), inner, length=block)

        inner, (values, aux) = jax.lax.scan(one_block, inner, length=num_blocks)
        values, aux = jax.tree.map(lambda ys: ys.reshape(-1)[:window], (values, aux))

        # Parameters that overflowed despite finite gradients: back to the window's start.
        overflowed = ~all_finite(inner.params)
        params, opt_state = jax.tree.map(
            lambda o, n: jnp.where(overflowed, o, n),
            (carry.params, carry.opt_state),
            (inner.params, inner.opt_state),
        )
        values = jnp.where(overflowed, jnp.nan, values)
        bad_in_a_row = jnp.where(overflowed, carry.bad_in_a_row + window, inner.bad_in_a_row)

        # Counts and the failure step, from the values (NaN where a step was skipped).
        kept = jnp.isfinite(values)
        skipped = ~kept & live
        # Length of the run of skipped steps ending at each step, counting the runs
        # carried over from the last window.
        last_kept = jax.lax.cummax(jnp.where(kept | ~live, offsets, -1))
        run = jnp.where(last_kept >= 0, offsets - last_kept, offsets + 1 + carry.bad_in_a_row)
        run = jnp.where(skipped, run, 0)
        gave_up = run >= max_nonfinite_in_a_row
        failed_step = jnp.where(
            (carry.failed_step < 0) & jnp.any(gave_up),
            carry.step + jnp.argmax(gave_up).astype(carry.step.dtype) + 1,
            carry.failed_step,
        )
        num_steps = jnp.where(
            failed_step >= 0, failed_step, carry.step + jnp.sum(live).astype(carry.step.dtype)
        )

        # The stopping rule: is the window's mean gradient zero, given its noise?
        count = jnp.maximum(jnp.sum(kept), 1).astype(values.dtype)
        mean_grad = jax.tree.map(lambda s: s / count, inner.grad_sum)
        var_mean = jax.tree.map(
            lambda q, m: jnp.maximum(q / count - m**2, 0.0) / count, inner.grad_sumsq, mean_grad
        )
        z = jax.tree.map(lambda m, v: jnp.abs(m) / jnp.sqrt(v + 1e-30), mean_grad, var_mean)
        max_z = jnp.max(jnp.stack([jnp.max(leaf) for leaf in jax.tree.leaves(z)]))
        z_crit = plateau_threshold(2 * carry.params.loc.size)
        plateau = (jnp.sum(kept) >= 2) & (max_z < z_crit)
        step_scale = jnp.where(plateau | overflowed, inner.step_scale * decay, inner.step_scale)
        decays = carry.num_decays + plateau.astype(jnp.int32)
        # The window's mean objective, from deviations (large values do not cancel in float32).
        ref = values[jnp.argmax(kept)]
        window_mean = ref + jnp.sum(jnp.where(kept, values - ref, 0.0)) / count
        window_mean = jnp.where(jnp.any(kept), window_mean, jnp.nan)
        rel_change = (window_mean - carry.prev_mean) / jnp.maximum(jnp.abs(window_mean), 1.0)
        status = jnp.select(
            [failed_step >= 0, decays > num_decays, num_steps >= max_steps],
            jnp.asarray([NONFINITE, CONVERGED, MAX_STEPS], jnp.int32),
            carry.status,
        )
        return carry._replace(
            params=params,
            opt_state=opt_state,
            rng_key=inner.rng_key,
            noise=inner.noise,
            step=num_steps,
            status=status,
            step_scale=step_scale,
            num_decays=decays,
            prev_aux=(
                carry.prev_aux if aux is None else jnp.sum(jnp.where(kept, aux, 0.0)) / count
            ),
            prev_mean=window_mean,
            rel_change=rel_change,
            mean_grad=mean_grad,
            num_nonfinite=carry.num_nonfinite + jnp.sum(skipped).astype(jnp.int32),
            bad_in_a_row=bad_in_a_row,
            failed_step=failed_step,
            trace=jax.lax.dynamic_update_slice(carry.trace, values, (carry.step,)),
        )

    def init(rng_key, init_params):
        dtype = init_params.loc.dtype
        loop_key, eval_key = jax.random.split(rng_key)
        loop_key, step_key = random.split(loop_key)
        nan = jnp.asarray(jnp.nan, dtype)
        return _Carry(
            params=init_params,
            opt_state=optimizer.init(init_params),
            rng_key=loop_key,
            noise=draw_fn(step_key, init_params),
            step=jnp.zeros((), jnp.int32),
            status=jnp.asarray(RUNNING, jnp.int32),
            step_scale=jnp.ones((), dtype),
            num_decays=jnp.zeros((), jnp.int32),
            prev_aux=nan,
            prev_mean=nan,
            rel_change=nan,
            mean_grad=jax.tree.map(jnp.zeros_like, init_params),
            num_nonfinite=jnp.zeros((), jnp.int32),
            bad_in_a_row=jnp.zeros((), jnp.int32),
            failed_step=jnp.asarray(-1, jnp.int32),
            trace=jnp.full((num_windows * window,), jnp.nan, dtype),
            eval_key=eval_key,
        )

    def finish(carry):
        estimate = elbo(carry.eval_key, carry.params, logdensity_fn, num_eval_samples)
        collapsed = (carry.prev_aux < min_ess_fraction) & (carry.status != NONFINITE)
        info = FitInfo(
            num_steps=carry.step,
            status=jnp.where(collapsed, WEIGHTS_COLLAPSED, carry.status).astype(jnp.int32),
            elbo=estimate.value,
            elbo_stderr=estimate.stderr,
            objective=carry.prev_mean,
            grad_norm=natural_grad_norm(carry.params, carry.mean_grad),
            rel_change=carry.rel_change,
            num_nonfinite=carry.num_nonfinite,
            failed_step=carry.failed_step,
            ess_fraction=carry.prev_aux,
        )
        return FitOutput(carry.params, carry.trace[:max_steps], flag_nonfinite_elbo(info))

    return FitLoop(init, step, running, finish, steps_per_call=window)


def fit_stochastic(
    rng_key: jax.Array,
    logdensity_fn: Callable[[jax.Array], jax.Array],
    init_params: MeanFieldParams,
    *,
    optimizer: optax.GradientTransformation,
    num_samples: int = 8,
    stick_the_landing: bool = False,
    num_eval_samples: int = 1024,
    loss_fn: Callable | None = None,
    min_ess_fraction: float = 0.0,
    **loop_options,
) -> FitOutput:
    """Fits q with fresh draws each step: the ELBO by default, or any given loss.

    Not jitted here: the caller composes and jits (``vi.fit`` does).

    Args:
      rng_key: key for the draws.
      logdensity_fn: unnormalised log density of the target, (D,) -> (); used
        for the loss when ``loss_fn`` is None and always for the final ELBO.
      init_params: where to start.
      optimizer: any optax gradient transformation.
      num_samples: draws per step for the ELBO.
      stick_the_landing: use the sticking-the-landing ELBO gradient.
      num_eval_samples: fresh draws for the final ELBO estimate.
      loss_fn: another loss, ``(params, rng_key) -> (loss, aux)``, e.g. a forward
        KL from ``vi.objectives.forward_kl``.
      min_ess_fraction: flag the fit ``weights_collapsed`` when the loss's mean
        ESS fraction over the last window falls below this.
      **loop_options: ``max_steps``, ``check_every``, ``decay``, ``num_decays``,
        ``max_nonfinite_in_a_row`` of ``stochastic_loop``.

    Returns:
      The fitted parameters, the per-step objective trace and diagnostics.
    """
    draw_fn = None
    if loss_fn is None:
        loss_fn, draw_fn = negative_elbo_loss_from_draws(
            logdensity_fn, num_samples, stick_the_landing=stick_the_landing
        )
    loop = stochastic_loop(
        loss_fn,
        logdensity_fn,
        optimizer=optimizer,
        num_eval_samples=num_eval_samples,
        min_ess_fraction=min_ess_fraction,
        draw_fn=draw_fn,
        **loop_options,
    )
    return run(loop, rng_key, init_params)
