"""A fitting loop as four pure functions, and the drivers that run one or many.

Writing each loop as ``init / step / running / finish`` (like blackjax's
``init`` / ``step`` pairs) lets one definition run as a single compiled
``while_loop`` or as a batch: ``vmap`` of ``step`` inside one ``while_loop``
that runs until every member is done. Members that are done keep their state
(their updates are masked), so an early finisher does not drift and a failing
member cannot disturb the others. The batch driver has a scalar step counter,
which lets a progress callback fire once per chunk of steps; a single fit with a
progress bar is driven from Python in chunks instead (``advance``).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vi.families.mean_field import MeanFieldParams
from vi.fitting.state import FitOutput


class FitLoop(NamedTuple):
    """A fitting loop.

    Attributes:
      init: ``(rng_key, init_params) -> carry``.
      step: ``carry -> carry``: ``steps_per_call`` optimisation steps.
      running: ``carry -> bool``, whether to call ``step`` again.
      finish: ``carry -> FitOutput``.
      steps_per_call: how many optimisation steps one call of ``step`` takes
        (a window of steps as one ``scan`` keeps per-step work to the minimum).
    """

    init: Callable[[jax.Array, MeanFieldParams], Any]
    step: Callable[[Any], Any]
    running: Callable[[Any], jax.Array]
    finish: Callable[[Any], FitOutput]
    steps_per_call: int = 1


ProgressFn = Callable[..., None]
"""Called on the host as ``progress_fn(step, num_running, *progress_args)`` every chunk
of steps."""


def _report(progress_fn, every, count, steps_per_call, num_running, progress_args=()):
    """Reports after call ``count`` when it completes a chunk of ``every`` steps."""
    jax.lax.cond(
        count % max(1, every // steps_per_call) == 0,
        lambda: jax.debug.callback(
            progress_fn, count * steps_per_call, num_running, *progress_args
        ),
        lambda: None,
    )


def advance(loop: FitLoop, carry: Any, max_calls: int | None = None) -> Any:
    """Calls ``loop.step`` as one ``while_loop`` while the fit runs, at most ``max_calls``
    times (None: until it stops)."""
    if max_calls is None:
        return jax.lax.while_loop(loop.running, loop.step, carry)
    carry, _ = jax.lax.while_loop(
        lambda c: loop.running(c[0]) & (c[1] < max_calls),
        lambda c: (loop.step(c[0]), c[1] + 1),
        (carry, jnp.zeros((), jnp.int32)),
    )
    return carry


def run(loop: FitLoop, rng_key: jax.Array, init_params: MeanFieldParams) -> FitOutput:
    """Runs one fit as a single ``while_loop``."""
    return loop.finish(advance(loop, loop.init(rng_key, init_params)))


def run_batch(
    make_loop: Callable[[Any], FitLoop],
    rng_keys: jax.Array,
    init_params: MeanFieldParams,
    members: Any,
    *,
    member_axes: Any = 0,
    progress_fn: ProgressFn | None = None,
    progress_every: int = 100,
    progress_args: tuple = (),
    chunk_size: int | None = None,
) -> FitOutput:
    """Runs a batch of fits as one ``while_loop`` over a ``vmap`` of their steps.

    Args:
      make_loop: builds the loop of one member from that member's slice of ``members``.
      rng_keys: (B,) keys.
      init_params: initial parameters with a leading axis B.
      members: per-member inputs (target arrays, hyperparameters), batched along
        ``member_axes`` (an int or None per leaf, as for ``jax.vmap``).
      member_axes: the ``vmap`` axes of ``members``.
      progress_fn: host callback ``(step, num_running, *progress_args)`` every
        ``progress_every`` steps.
      progress_args: traced values passed on to ``progress_fn`` (a shard's index).
      chunk_size: take each ``step`` in chunks of this many members, one chunk after
        another (``lax.map``), so that a chunk's working set stays in cache; None: all
        members at once.

    Returns:
      A ``FitOutput`` whose leaves have a leading axis B.
    """
    over_members = lambda fn: jax.vmap(fn, in_axes=(0, member_axes))
    running = over_members(lambda carry, member: make_loop(member).running(carry))

    def step(state):
        carry, count = state
        active = running(carry, members)
        new = _map_members(
            lambda c, member: make_loop(member).step(c), carry, members, member_axes, chunk_size
        )
        carry = jax.tree.map(
            lambda n, o: jnp.where(active.reshape(active.shape + (1,) * (n.ndim - 1)), n, o),
            new,
            carry,
        )
        if progress_fn is not None:
            num_running = jnp.sum(running(carry, members))
            _report(
                progress_fn, progress_every, count + 1, steps_per_call, num_running, progress_args
            )
        return carry, count + 1

    seen = []  # ``steps_per_call`` is static: read it off while tracing ``init``

    def init_one(key, params, member):
        loop = make_loop(member)
        seen.append(loop.steps_per_call)
        return loop.init(key, params)

    init = jax.vmap(init_one, in_axes=(0, 0, member_axes))(rng_keys, init_params, members)
    steps_per_call = seen[0]
    carry, count = jax.lax.while_loop(
        lambda s: jnp.any(running(s[0], members)), step, (init, jnp.zeros((), jnp.int32))
    )
    if progress_fn is not None:  # the last word: this batch (or shard) is done
        done = jnp.zeros((), jnp.int32)
        jax.debug.callback(progress_fn, count * steps_per_call, done, *progress_args)
    return over_members(lambda c, member: make_loop(member).finish(c))(carry, members)


def _map_members(fn, carry, members, member_axes, chunk_size):
    """``vmap`` of ``fn(carry, member)`` over the members, in chunks of ``chunk_size``."""
    batch = jax.tree.leaves(carry)[0].shape[0]
    if chunk_size is None or batch <= chunk_size:
        return jax.vmap(fn, in_axes=(0, member_axes))(carry, members)
    axes, treedef = jax.tree_util.tree_flatten(member_axes, is_leaf=lambda a: a is None)
    parts = treedef.flatten_up_to(members)
    batched = [part for axis, part in zip(axes, parts, strict=True) if axis is not None]

    def one(xs):
        member_carry, member_batched = xs
        it = iter(member_batched)
        member = [
            part if axis is None else next(it) for axis, part in zip(axes, parts, strict=True)
        ]
        return fn(member_carry, treedef.unflatten(member))

    return jax.lax.map(one, (carry, batched), batch_size=chunk_size)
