"""The default fit: a deterministic ELBO from fixed draws, minimised by L-BFGS.

Fixing the Monte-Carlo draws turns the ELBO into a smooth deterministic function
(sample-average approximation; DADVI, Giordano, Ingram & Broderick, JMLR 2024),
which a quasi-Newton method minimises to convergence where stochastic gradient
steps stall on ill-conditioned posteriors. The draws are moment-matched
(``moment_matched_draws``), so on a Gaussian target the optimum is exact.
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
    STALLED,
    FitInfo,
    FitOutput,
    all_finite,
    natural_grad_norm,
)
from vi.objectives.elbo import elbo, elbo_from_draws, moment_matched_draws


class _Carry(NamedTuple):
    params: MeanFieldParams
    opt_state: optax.OptState
    value: jax.Array
    grad: MeanFieldParams
    step: jax.Array
    status: jax.Array
    stall_count: jax.Array
    rel_change: jax.Array
    trace: jax.Array


def default_num_draws(dim: int) -> int:
    """Enough draws to whiten them exactly up to D = 32, and 64 beyond."""
    return 2 * min(max(dim, 8), 32)


def fit_fixed_draws(
    rng_key: jax.Array,
    logdensity_fn: Callable[[jax.Array], jax.Array],
    init_params: MeanFieldParams,
    *,
    num_draws: int,
    max_steps: int = 2000,
    gtol: float | None = None,
    memory_size: int = 20,
    num_eval_samples: int = 1024,
    max_stalls: int = 10,
) -> FitOutput:
    """Maximises the fixed-draw ELBO with L-BFGS, as one compiled loop.

    Not jitted here: the caller composes and jits (``vi.fit`` does).

    Args:
      rng_key: key for the fixed draws and the final fresh-draw ELBO.
      logdensity_fn: unnormalised log density of the target, (D,) -> ().
      init_params: where to start.
      num_draws: M, the number of fixed draws (even).
      max_steps: the most L-BFGS iterations.
      gtol: stop when ``natural_grad_norm`` falls below this (default 1e-7 in
        float64, 1e-4 in float32).
      memory_size: L-BFGS memory.
      num_eval_samples: fresh draws for the final, unbiased ELBO estimate.
      max_stalls: stop as ``stalled`` after this many iterations in a row that
        do not lower the objective.

    Returns:
      The fitted parameters, the ELBO trace and diagnostics.
    """
    dtype = init_params.loc.dtype
    if gtol is None:
        gtol = 1e-7 if dtype == jnp.float64 else 1e-4
    draws_key, eval_key = jax.random.split(rng_key)
    eps = moment_matched_draws(draws_key, num_draws, init_params.loc.shape[-1], dtype)

    def loss_fn(params):
        return -elbo_from_draws(params, logdensity_fn, eps).value

    optimizer = optax.lbfgs(
        memory_size=memory_size,
        linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=30),
    )
    value_and_grad = optax.value_and_grad_from_state(loss_fn)

    def cond(carry):
        return carry.status == RUNNING

    def body(carry):
        updates, opt_state = optimizer.update(
            carry.grad,
            carry.opt_state,
            carry.params,
            value=carry.value,
            grad=carry.grad,
            value_fn=loss_fn,
        )
        params = optax.apply_updates(carry.params, updates)
        value, grad = value_and_grad(params, state=opt_state)
        finite = all_finite((value, grad))
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        params, opt_state, value, grad = keep(
            (params, opt_state, value, grad),
            (carry.params, carry.opt_state, carry.value, carry.grad),
        )
        rel_change = (carry.value - value) / jnp.maximum(jnp.abs(value), 1.0)
        stall_count = jnp.where(rel_change > 0, 0, carry.stall_count + 1)
        step = carry.step + 1
        status = jnp.select(
            [
                ~finite,
                natural_grad_norm(params, grad) < gtol,
                stall_count >= max_stalls,
                step >= max_steps,
            ],
            jnp.asarray([NONFINITE, CONVERGED, STALLED, MAX_STEPS], jnp.int32),
            carry.status,
        )
        trace = carry.trace.at[carry.step].set(-value)
        return _Carry(params, opt_state, value, grad, step, status, stall_count, rel_change, trace)

    opt_state = optimizer.init(init_params)
    value, grad = value_and_grad(init_params, state=opt_state)
    init_status = jnp.where(all_finite((value, grad)), RUNNING, NONFINITE).astype(jnp.int32)
    carry = _Carry(
        init_params,
        opt_state,
        value,
        grad,
        jnp.zeros((), jnp.int32),
        init_status,
        jnp.zeros((), jnp.int32),
        jnp.asarray(jnp.nan, dtype),
        jnp.full((max_steps,), jnp.nan, dtype),
    )
    carry = jax.lax.while_loop(cond, body, carry)

    estimate = elbo(eval_key, carry.params, logdensity_fn, num_eval_samples)
    info = FitInfo(
        num_steps=carry.step,
        status=carry.status,
        elbo=estimate.value,
        elbo_stderr=estimate.stderr,
        objective=-carry.value,
        grad_norm=natural_grad_norm(carry.params, carry.grad),
        rel_change=carry.rel_change,
        num_nonfinite=(carry.status == NONFINITE).astype(jnp.int32),
        failed_step=jnp.where(carry.status == NONFINITE, carry.step, -1),
    )
    return FitOutput(carry.params, carry.trace, info)

