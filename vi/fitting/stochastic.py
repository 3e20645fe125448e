"""The stochastic fit: fresh draws every step, any optax optimizer, automatic stopping.

For targets where fixed draws don't serve: very high dimension (where the draws
needed to represent q well cost too much per step), or log densities too
expensive to evaluate at many draws. The loop stops itself: every ``check_every``
steps it compares the mean ELBO of the last window with the one before; when the
improvement is within the windows' Monte-Carlo noise it multiplies the step size
by ``decay`` (which also rescues a too-large learning rate), and after
``num_decays`` such decays it stops as ``converged``.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from vi.families.mean_field import MeanFieldParams
from vi.fitting.state import (
    CONVERGED,
    MAX_STEPS,
    NONFINITE,
    RUNNING,
    FitInfo,
    FitOutput,
    all_finite,
    natural_grad_norm,
)
from vi.objectives.elbo import elbo


class _Carry(NamedTuple):
    params: MeanFieldParams
    opt_state: optax.OptState
    grad: MeanFieldParams
    rng_key: jax.Array
    step: jax.Array
    status: jax.Array
    step_scale: jax.Array
    num_decays: jax.Array
    window_shift: jax.Array
    window_sum: jax.Array
    window_sumsq: jax.Array
    prev_mean: jax.Array
    prev_var: jax.Array
    rel_change: jax.Array
    num_nonfinite: jax.Array
    bad_in_a_row: jax.Array
    failed_step: jax.Array
    trace: jax.Array


def fit_stochastic(
    rng_key: jax.Array,
    logdensity_fn: Callable[[jax.Array], jax.Array],
    init_params: MeanFieldParams,
    *,
    optimizer: optax.GradientTransformation,
    num_samples: int = 8,
    max_steps: int = 20_000,
    check_every: int = 250,
    decay: float = 0.5,
    num_decays: int = 4,
    stick_the_landing: bool = False,
    max_nonfinite_in_a_row: int = 50,
    num_eval_samples: int = 1024,
) -> FitOutput:
    """Maximises the ELBO with fresh draws each step, as one compiled loop.

    Not jitted here: the caller composes and jits (``vi.fit`` does).

    Args:
      rng_key: key for the draws.
      logdensity_fn: unnormalised log density of the target, (D,) -> ().
      init_params: where to start.
      optimizer: any optax gradient transformation (it minimises the negative ELBO).
      num_samples: draws per step.
      max_steps: the most steps.
      check_every: steps per window of the stopping rule.
      decay: factor applied to the optimizer's updates at each plateau.
      num_decays: step-size decays after which the next plateau stops the fit.
      stick_the_landing: use the sticking-the-landing gradient.
      max_nonfinite_in_a_row: give up (``nonfinite``) after this many skipped
        steps in a row; each skipped step also decays the step size.
      num_eval_samples: fresh draws for the final ELBO estimate.

    Returns:
      The fitted parameters, the per-step ELBO estimates and diagnostics.
    """
    dtype = init_params.loc.dtype

    def loss_fn(params, key):
        estimate = elbo(key, params, logdensity_fn, num_samples, stick_the_landing=stick_the_landing)
        return -estimate.value

    value_and_grad = jax.value_and_grad(loss_fn)

    def cond(carry):
        return carry.status == RUNNING

    def body(carry):
        rng_key, step_key = jax.random.split(carry.rng_key)
        value, grad = value_and_grad(carry.params, step_key)
        updates, opt_state = optimizer.update(grad, carry.opt_state, carry.params)
        updates = jax.tree.map(lambda u: carry.step_scale * u, updates)
        params = optax.apply_updates(carry.params, updates)
        finite = all_finite((value, grad, params))
        params, opt_state, grad = jax.tree.map(
            lambda n, o: jnp.where(finite, n, o),
            (params, opt_state, grad),
            (carry.params, carry.opt_state, carry.grad),
        )
        bad_in_a_row = jnp.where(finite, 0, carry.bad_in_a_row + 1)
        step_scale = jnp.where(finite, carry.step_scale, carry.step_scale * decay)
        step = carry.step + 1
        # Window sums are of deviations from the window's first value, so that
        # large ELBOs do not cancel in float32.
        elbo_value = jnp.where(finite, -value, carry.window_shift)
        shift = jnp.where(carry.step % check_every == 0, elbo_value, carry.window_shift)
        deviation = elbo_value - shift
        window_sum = carry.window_sum + deviation
        window_sumsq = carry.window_sumsq + deviation**2

        # The stopping rule, evaluated at the end of each window.
        end_of_window = step % check_every == 0
        mean = shift + window_sum / check_every
        var = jnp.maximum(window_sumsq / check_every - (window_sum / check_every) ** 2, 0.0)
        var = var / check_every
        improvement = mean - carry.prev_mean
        plateau = end_of_window & (improvement < 2.0 * jnp.sqrt(var + carry.prev_var))
        step_scale = jnp.where(plateau, step_scale * decay, step_scale)
        decays = carry.num_decays + plateau.astype(jnp.int32)
        rel_change = jnp.where(
            end_of_window, improvement / jnp.maximum(jnp.abs(mean), 1.0), carry.rel_change
        )

        gave_up = bad_in_a_row >= max_nonfinite_in_a_row
        status = jnp.select(
            [gave_up, decays > num_decays, step >= max_steps],
            jnp.asarray([NONFINITE, CONVERGED, MAX_STEPS], jnp.int32),
            carry.status,
        )
        return _Carry(
            params=params,
            opt_state=opt_state,
            grad=grad,
            rng_key=rng_key,
            step=step,
            status=status,
            step_scale=step_scale,
            num_decays=decays,
            window_shift=shift,
            window_sum=jnp.where(end_of_window, 0.0, window_sum),
            window_sumsq=jnp.where(end_of_window, 0.0, window_sumsq),
            prev_mean=jnp.where(end_of_window, mean, carry.prev_mean),
            prev_var=jnp.where(end_of_window, var, carry.prev_var),
            rel_change=rel_change,
            num_nonfinite=carry.num_nonfinite + (~finite).astype(jnp.int32),
            bad_in_a_row=bad_in_a_row,
            failed_step=jnp.where(gave_up, step, carry.failed_step),
            trace=carry.trace.at[carry.step].set(jnp.where(finite, -value, jnp.nan)),
        )

    loop_key, eval_key = jax.random.split(rng_key)
    zero = jnp.zeros((), dtype)
    carry = _Carry(
        params=init_params,
        opt_state=optimizer.init(init_params),
        grad=jax.tree.map(jnp.zeros_like, init_params),
        rng_key=loop_key,
        step=jnp.zeros((), jnp.int32),
        status=jnp.asarray(RUNNING, jnp.int32),
        step_scale=jnp.ones((), dtype),
        num_decays=jnp.zeros((), jnp.int32),
        window_shift=zero,
        window_sum=zero,
        window_sumsq=zero,
        prev_mean=jnp.asarray(-jnp.inf, dtype),
        prev_var=zero,
        rel_change=jnp.asarray(jnp.nan, dtype),
        num_nonfinite=jnp.zeros((), jnp.int32),
        bad_in_a_row=jnp.zeros((), jnp.int32),
        failed_step=jnp.asarray(-1, jnp.int32),
        trace=jnp.full((max_steps,), jnp.nan, dtype),
    )
    carry = jax.lax.while_loop(cond, body, carry)

    estimate = elbo(eval_key, carry.params, logdensity_fn, num_eval_samples)
    info = FitInfo(
        num_steps=carry.step,
        status=carry.status,
        elbo=estimate.value,
        elbo_stderr=estimate.stderr,
        objective=carry.prev_mean,
        grad_norm=natural_grad_norm(carry.params, carry.grad),
        rel_change=carry.rel_change,
        num_nonfinite=carry.num_nonfinite,
        failed_step=carry.failed_step,
    )
    return FitOutput(carry.params, carry.trace, info)
