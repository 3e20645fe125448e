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
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

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
from vi.objectives.elbo import elbo, negative_elbo_loss


class _Carry(NamedTuple):
    params: MeanFieldParams
    opt_state: optax.OptState
    rng_key: jax.Array
    step: jax.Array
    status: jax.Array
    step_scale: jax.Array
    num_decays: jax.Array
    grad_sum: MeanFieldParams
    grad_sumsq: MeanFieldParams
    loss_shift: jax.Array
    loss_sum: jax.Array
    aux_sum: jax.Array
    prev_aux: jax.Array
    prev_mean: jax.Array
    rel_change: jax.Array
    last_grad: MeanFieldParams
    num_nonfinite: jax.Array
    bad_in_a_row: jax.Array
    failed_step: jax.Array
    trace: jax.Array
    eval_key: jax.Array


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
) -> FitLoop:
    """The loop that minimises a stochastic loss with an optax optimizer.

    Its ``init`` takes the key for the loss's draws (split once per step) and
    for the final fresh-draw ELBO.

    Args:
      loss_fn: ``(params, rng_key) -> (loss, aux)``: an estimate of the loss and
        an auxiliary scalar to average per window (NaN when there is none).
      init_params: where to start.
      optimizer: any optax gradient transformation.
      max_steps: the most steps.
      check_every: steps per window of the stopping rule.
      decay: factor applied to the optimizer's updates at each plateau.
      num_decays: step-size decays after which the next plateau stops the fit.
      max_nonfinite_in_a_row: give up (``nonfinite``) after this many skipped
        steps in a row; from the fifth in a row on, each also decays the step size.
      logdensity_fn: the target's log density, for the final ELBO estimate.
      num_eval_samples: fresh draws for the final ELBO estimate.
      min_ess_fraction: flag the fit ``weights_collapsed`` when the loss's mean
        ESS fraction over the last window falls below this.

    Returns:
      A ``FitLoop``.
    """
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

    def running(carry):
        return carry.status == RUNNING

    def step(carry):
        rng_key, step_key = jax.random.split(carry.rng_key)
        (value, aux), grad = value_and_grad(carry.params, step_key)
        updates, opt_state = optimizer.update(grad, carry.opt_state, carry.params)
        updates = jax.tree.map(lambda u: carry.step_scale * u, updates)
        params = optax.apply_updates(carry.params, updates)
        finite = all_finite((value, grad, params))
        params, opt_state = jax.tree.map(
            lambda n, o: jnp.where(finite, n, o),
            (params, opt_state),
            (carry.params, carry.opt_state),
        )
        grad = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grad)
        bad_in_a_row = jnp.where(finite, 0, carry.bad_in_a_row + 1)
        # Sporadic non-finite draws are skipped; a run of them means the steps are too long.
        step_scale = jnp.where(bad_in_a_row >= 5, carry.step_scale * decay, carry.step_scale)
        step = carry.step + 1

        # Window statistics. Loss sums are of deviations from the window's first
        # value, so that large losses do not cancel in float32.
        start_of_window = carry.step % check_every == 0
        loss = jnp.where(finite, value, carry.loss_shift)
        shift = jnp.where(start_of_window, loss, carry.loss_shift)
        loss_sum = jnp.where(start_of_window, 0.0, carry.loss_sum) + (loss - shift)
        aux_sum = jnp.where(start_of_window, 0.0, carry.aux_sum) + aux
        restart = lambda tree: jax.tree.map(lambda x: jnp.where(start_of_window, 0.0, x), tree)
        grad_sum = jax.tree.map(jnp.add, restart(carry.grad_sum), grad)
        grad_sumsq = jax.tree.map(lambda s, g: s + g**2, restart(carry.grad_sumsq), grad)

        # The stopping rule, at the end of each window: is the mean gradient zero?
        end_of_window = step % check_every == 0
        mean_grad = jax.tree.map(lambda s: s / check_every, grad_sum)
        var_mean = jax.tree.map(
            lambda s, q, m: jnp.maximum(q / check_every - m**2, 0.0) / check_every,
            grad_sum,
            grad_sumsq,
            mean_grad,
        )
        z = jax.tree.map(lambda m, v: jnp.abs(m) / jnp.sqrt(v + 1e-30), mean_grad, var_mean)
        max_z = jnp.max(jnp.stack([jnp.max(leaf) for leaf in jax.tree.leaves(z)]))
        z_crit = plateau_threshold(2 * carry.params.loc.size)
        plateau = end_of_window & (max_z < z_crit)
        step_scale = jnp.where(plateau, step_scale * decay, step_scale)
        decays = carry.num_decays + plateau.astype(jnp.int32)
        window_mean = -(shift + loss_sum / check_every)
        rel_change = jnp.where(
            end_of_window,
            (window_mean - carry.prev_mean) / jnp.maximum(jnp.abs(window_mean), 1.0),
            carry.rel_change,
        )

        gave_up = bad_in_a_row >= max_nonfinite_in_a_row
        status = jnp.select(
            [gave_up, decays > num_decays, step >= max_steps],
            jnp.asarray([NONFINITE, CONVERGED, MAX_STEPS], jnp.int32),
            carry.status,
        )
        return carry._replace(
            params=params,
            opt_state=opt_state,
            rng_key=rng_key,
            step=step,
            status=status,
            step_scale=step_scale,
            num_decays=decays,
            grad_sum=grad_sum,
            grad_sumsq=grad_sumsq,
            loss_shift=shift,
            loss_sum=loss_sum,
            aux_sum=aux_sum,
            prev_aux=jnp.where(end_of_window, aux_sum / check_every, carry.prev_aux),
            prev_mean=jnp.where(end_of_window, window_mean, carry.prev_mean),
            rel_change=rel_change,
            last_grad=jax.tree.map(lambda n, o: jnp.where(finite, n, o), grad, carry.last_grad),
            num_nonfinite=carry.num_nonfinite + (~finite).astype(jnp.int32),
            bad_in_a_row=bad_in_a_row,
            failed_step=jnp.where(gave_up, step, carry.failed_step),
            trace=carry.trace.at[carry.step].set(jnp.where(finite, -value, jnp.nan)),
        )

    def init(rng_key, init_params):
        dtype = init_params.loc.dtype
        loop_key, eval_key = jax.random.split(rng_key)
        zero = jnp.zeros((), dtype)
        zeros = jax.tree.map(jnp.zeros_like, init_params)
        nan = jnp.asarray(jnp.nan, dtype)
        return _Carry(
            params=init_params,
            opt_state=optimizer.init(init_params),
            rng_key=loop_key,
            step=jnp.zeros((), jnp.int32),
            status=jnp.asarray(RUNNING, jnp.int32),
            step_scale=jnp.ones((), dtype),
            num_decays=jnp.zeros((), jnp.int32),
            grad_sum=zeros,
            grad_sumsq=zeros,
            loss_shift=zero,
            loss_sum=zero,
            aux_sum=zero,
            prev_aux=nan,
            prev_mean=nan,
            rel_change=nan,
            last_grad=zeros,
            num_nonfinite=jnp.zeros((), jnp.int32),
            bad_in_a_row=jnp.zeros((), jnp.int32),
            failed_step=jnp.asarray(-1, jnp.int32),
            trace=jnp.full((max_steps,), jnp.nan, dtype),
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
            grad_norm=natural_grad_norm(carry.params, carry.last_grad),
            rel_change=carry.rel_change,
            num_nonfinite=carry.num_nonfinite,
            failed_step=carry.failed_step,
            ess_fraction=carry.prev_aux,
        )
        return FitOutput(carry.params, carry.trace, flag_nonfinite_elbo(info))

    return FitLoop(init, step, running, finish)


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
    if loss_fn is None:
        loss_fn = negative_elbo_loss(
            logdensity_fn, num_samples, stick_the_landing=stick_the_landing
        )
    loop = stochastic_loop(
        loss_fn,
        logdensity_fn,
        optimizer=optimizer,
        num_eval_samples=num_eval_samples,
        min_ess_fraction=min_ess_fraction,
        **loop_options,
    )
    return run(loop, rng_key, init_params)
