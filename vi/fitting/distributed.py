"""A sweep spread over processes on JAX's own distributed runtime.

Every process runs the same script: it calls ``jax.distributed.initialize(...)``
before any JAX computation, builds the whole sweep (keys, stacked targets,
hyperparameters) the same way, fits its share with ``vi.fit_batch`` (which
shards that share over the process's local devices), and ``gather`` gives every
process every result in the sweep's order. Members are dealt out strided:
process p of P fits members p, p + P, p + 2P, ..., so a sweep ordered by cost
(say, a grid of learning rates) is spread evenly, and a batch size that P does
not divide leaves a few processes one member short. With one process both
functions hand the sweep back whole, so the script also runs on one machine.

On CPUs the processes exchange results through JAX's CPU collectives (gloo by
default, ``jax_cpu_collectives_implementation``); ``tests/fitting/test_distributed.py``
runs two processes on loopback and checks that the gathered sweep equals one
process's ``fit_batch`` of the whole sweep.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from vi.fitting.batch import BatchFitResult
from vi.fitting.state import FitOutput

_INITIALIZE = (
    "call jax.distributed.initialize(coordinator_address=..., num_processes=..., "
    "process_id=...) in every process before any JAX computation"
)


def share_indices(batch_size: int) -> np.ndarray:
    """The members of a sweep of ``batch_size`` that this process fits.

    Args:
      batch_size: the number of members B in the whole sweep.

    Returns:
      (ceil((B - p) / P),) the indices p, p + P, ... for process p of P.

    Raises:
      ValueError: when there are more processes than members.
    """
    if batch_size < jax.process_count():
        raise ValueError(
            f"a sweep of {batch_size} cannot be spread over {jax.process_count()} processes: "
            "each needs at least one member"
        )
    return np.arange(jax.process_index(), batch_size, jax.process_count())


def process_share(tree: Any) -> Any:
    """This process's share of a sweep: every leaf indexed by ``share_indices``.

    Args:
      tree: a pytree whose leaves all have the leading batch axis B: keys
        ``(B,)``, a stacked target (``vi.stack_targets``), hyperparameters.

    Returns:
      The same pytree with leading axis ``len(share_indices(B))`` (with one
      process, the pytree itself).

    Raises:
      ValueError: when the leaves disagree on B, or B is less than the number
        of processes.

    Examples:
      >>> import jax
      >>> keys = jax.random.split(jax.random.key(0), 8)
      >>> process_share(keys).shape  # one process: the whole sweep
      (8,)
    """
    leaves = jax.tree.leaves(tree)
    sizes = {np.shape(leaf)[:1] for leaf in leaves}
    if len(sizes) != 1 or sizes == {()}:
        raise ValueError(
            "process_share needs every leaf to have the same leading batch axis, got "
            f"shapes {sorted({np.shape(leaf) for leaf in leaves})}"
        )
    (batch_size,) = sizes.pop()
    indices = share_indices(batch_size)
    if jax.process_count() == 1:
        return tree
    return jax.tree.map(lambda leaf: leaf[indices], tree)


def gather(tree: Any, batch_size: int) -> Any:
    """Every process's share of a sweep, on every process, in the sweep's order.

    Every process must call it, each with its own share: it is a collective, so
    a process that does not call it leaves the others waiting.

    Args:
      tree: this process's results, a ``BatchFitResult`` from ``vi.fit_batch`` or
        a pytree of numeric arrays with leading axis ``len(share_indices(batch_size))``.
      batch_size: the number of members B in the whole sweep.

    Returns:
      The whole sweep: a ``BatchFitResult`` of B fits (its target gathered too
      when it was batched), or the pytree with leading axis B.

    Raises:
      ValueError: when ``tree`` is not this process's share of ``batch_size``
        members (with one process: when ``jax.distributed.initialize`` was not
        called, the message says so).
      RuntimeError: when JAX's CPU collectives are off.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import vi
      >>> target = vi.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))
      >>> keys = jax.random.split(jax.random.key(0), 5)
      >>> batch = vi.fit_batch(process_share(keys), target)
      >>> len(gather(batch, 5))
      5
    """
    if isinstance(tree, BatchFitResult):
        output = FitOutput(tree.params, tree.trace, tree.info)
        batched = tree._batched_target
        output, target = gather((output, tree.target if batched else None), batch_size)
        return BatchFitResult(output, target if batched else tree.target, batched_target=batched)
    share = len(share_indices(batch_size))
    for leaf in jax.tree.leaves(tree):
        if np.shape(leaf)[:1] != (share,):
            alone = f"; if other processes fit the rest, {_INITIALIZE}"
            raise ValueError(
                f"process {jax.process_index()} of {jax.process_count()} fits {share} of the "
                f"{batch_size} members, but a leaf has shape {np.shape(leaf)}: gather takes "
                "the results of this process's share (process_share)"
                + (alone if jax.process_count() == 1 else "")
            )
    if jax.process_count() == 1:
        return tree
    if jax.devices()[0].platform == "cpu" and jax.config.jax_cpu_collectives_implementation is None:
        raise RuntimeError(
            "JAX's CPU collectives are off, so processes cannot exchange results: leave "
            'jax_cpu_collectives_implementation at "gloo" (the default) or set "mpi"'
        )
    return jax.tree.map(lambda leaf: _gather_leaf(leaf, batch_size), tree)


def _gather_leaf(leaf, batch_size: int) -> jax.Array:
    """Stacks the shares (padded to equal length) and interleaves them back."""
    longest = -(-batch_size // jax.process_count())
    leaf = np.asarray(leaf)
    if len(leaf) < longest:
        leaf = np.concatenate([leaf, leaf[-1:]])
    stacked = multihost_utils.process_allgather(leaf)  # (P, longest, ...)
    interleaved = np.swapaxes(stacked, 0, 1).reshape(-1, *stacked.shape[2:])
    return jnp.asarray(interleaved[:batch_size])


__all__ = ["gather", "process_share", "share_indices"]
