"""The drivers' loop: a method's ``step``, run window by window, for one fit or a batch.

A method (``vi.FixedDraws``, ``vi.Stochastic``) is a frozen object with ``init``, ``step``,
``summary(state, rng_key)``, ``window`` and ``max_steps``. The loop calls ``step`` with the key
``jax.random.fold_in(step_key, state.step)``, a window of steps as one ``scan`` (blocks of
them on CPU: ``vi.backend.block_length``), inside a ``while_loop`` that ends when the fit
(every member of a batch) has stopped. A running state's ``step`` is a multiple of the
window at the start of each window, so the window's keys are hashed at once. A stopped
state no longer changes, so members that finish early wait unchanged for the others, and a
failing member cannot touch the others.
The target and objective stay outside the carry: a batch over seeds shares one dataset.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vi import backend
from vi.fitting.state import RUNNING, FitOutput, Problem, flag_nonfinite_elbo
from vi.objectives.elbo import target_elbo


class Keys(NamedTuple):
    """The keys of one fit, all from its ``rng_key`` (``split(rng_key, 4)``, in this order).

    Attributes:
      init: ``method.init``'s key (the fixed draws).
      step: step ``i`` draws with ``jax.random.fold_in(step, i)``.
      eval: the final ELBO estimate's draws.
      jitter: the initial mean's jitter (``init_radius``).
    """

    init: jax.Array
    step: jax.Array
    eval: jax.Array
    jitter: jax.Array


def fit_keys(rng_key: jax.Array) -> Keys:
    """The keys of a fit from its ``rng_key``."""
    return Keys(*jax.random.split(rng_key, 4))


def empty_trace(method, dtype, batch_shape: tuple[int, ...] = ()) -> jax.Array:
    """The trace buffer, NaN: whole windows past ``max_steps``, and one more, so that a
    member that stopped in one window can write its NaNs in the next."""
    window = method.window
    length = (-(-method.max_steps // window) + 1) * window
    return jnp.full((*batch_shape, length), jnp.nan, dtype)


def _step_fn(method, problem, batched: bool, problem_axes) -> Callable:
    """``(state without problem, key) -> (state without problem, objective)``: one step of
    one fit, or of every member of a batch (``problem_axes``: the ``vmap`` axes of the
    problem's leaves, None when the members share it)."""

    def one(core, key, children):
        state, info = method.step(key, core._replace(problem=Problem.tree_unflatten(aux, children)))
        return state._replace(problem=None), info.objective

    children, aux = problem.tree_flatten()
    if not batched:
        return lambda core, key: one(core, key, children)
    return lambda cores, keys: jax.vmap(one, in_axes=(0, 0, problem_axes))(cores, keys, children)


def _window(method, step, core, step_keys, batched: bool):
    """One window of steps as a scan (of blocks of steps on CPU): ``(core, values)``.

    The window's keys, ``fold_in(step_key, i)`` for its steps, are hashed at once before it.
    """
    window = method.window
    offsets = jnp.arange(window, dtype=core.step.dtype)
    window_keys = lambda key, start: jax.vmap(jax.random.fold_in, (None, 0))(key, start + offsets)
    if batched:
        keys = jnp.swapaxes(jax.vmap(window_keys)(step_keys, core.step), 0, 1)
    else:
        keys = window_keys(step_keys, core.step)
    # A batch's buffers are past the small-buffer size of the CPU path's blocks anyway.
    values_dtype = jax.eval_shape(step, core, keys[0])[1].dtype
    block = window if batched else backend.block_length(window, values_dtype.itemsize)
    if window % block:
        block = window
    keys = keys.reshape(window // block, block, *keys.shape[1:])

    def one_block(core, block_keys):
        return jax.lax.scan(step, core, block_keys)

    core, values = jax.lax.scan(one_block, core, keys)
    return core, values.reshape(window, *values.shape[2:])


def advance(
    method,
    core: Any,
    problem,
    step_keys: jax.Array,
    trace: jax.Array,
    *,
    problem_axes: Any = None,
    max_windows: int | None = None,
    on_window: Callable | None = None,
):
    """Runs windows of steps while the fit (any member of a batch) runs.

    Args:
      method: the fitting method.
      core: the state without its problem (leading axis B for a batch).
      problem: the ``Problem`` the steps use.
      step_keys: the step key (B of them for a batch).
      trace: (L,) or (B, L) objective values so far.
      problem_axes: for a batch, the ``vmap`` axes of the problem's leaves (a list, as
        ``Problem.tree_flatten`` lists them), or None when the members share it.
      max_windows: stop after this many windows (None: until the fit stops).
      on_window: ``(core, count) -> None``, called inside the loop after each window.

    Returns:
      ``(core, trace)``.
    """
    batched = step_keys.ndim > (0 if jnp.issubdtype(step_keys.dtype, jax.dtypes.prng_key) else 1)
    step = _step_fn(method, problem, batched, problem_axes)
    running = lambda core: jnp.any(core.status == RUNNING)

    def body(carry):
        core, trace, count = carry
        start = core.step  # per member: one that stopped writes NaN from where it stopped
        core, values = _window(method, step, core, step_keys, batched)
        if batched:
            trace = jax.vmap(jax.lax.dynamic_update_slice_in_dim, (0, 1, 0, None))(
                trace, values, start, 0
            )
        else:
            trace = jax.lax.dynamic_update_slice_in_dim(trace, values, start, 0)
        if on_window is not None:
            on_window(core, count + 1)
        return core, trace, count + 1

    def cond(carry):
        keep = running(carry[0])
        return keep if max_windows is None else keep & (carry[2] < max_windows)

    core, trace, _ = jax.lax.while_loop(cond, body, (core, trace, jnp.zeros((), jnp.int32)))
    return core, trace


def finish(method, state, trace: jax.Array, eval_key: jax.Array, num_eval_samples: int):
    """The ``FitOutput`` of one finished fit: its summary (from the draws of
    ``fold_in(eval_key, 1)``) and a fresh-draw ELBO estimate (from ``eval_key``)."""
    params = state.params
    estimate = target_elbo(eval_key, params, state.problem.target, num_eval_samples)
    info = method.summary(state, jax.random.fold_in(eval_key, 1))
    info = info._replace(elbo=estimate.value, elbo_stderr=estimate.stderr)
    return FitOutput(params, trace[: method.max_steps], flag_nonfinite_elbo(info))
