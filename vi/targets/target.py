"""The target of a fit: an unnormalised log density on R^D, with what is known about it."""

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial


class Truth(NamedTuple):
    """What is known exactly about a target, on the space it is fitted on.

    Attributes:
      mean: (D,) the target's mean.
      variance: (D,) the target's per-coordinate variance.
      modes: (K, D) locations of its modes, or None.
      mode_weights: (K,) the mass attached to each mode, or None.
      log_normalizer: log of the normalising constant of ``logdensity_fn``
        (0 for a normalised density), or None when unknown.
    """

    mean: jax.Array
    variance: jax.Array
    modes: jax.Array | None = None
    mode_weights: jax.Array | None = None
    log_normalizer: jax.Array | None = None


class Target(NamedTuple):
    """A log density on R^D and the functions that go with it.

    Callables are stored as ``jax.tree_util.Partial`` where they carry array
    parameters, so a ``Target`` is a pytree: it can be passed through ``jit``
    and batched with ``vmap`` (a batch of mixtures is one ``Target`` whose
    parameter leaves have a leading axis).

    Attributes:
      logdensity_fn: maps a position ``(D,)`` to its unnormalised log density ``()``.
      init_position: (D,) a starting point for the fit.
      sample_fn: maps ``(rng_key, num_samples)`` to exact draws ``(num_samples, D)``,
        or None when the target cannot be sampled exactly.
      constrain_fn: maps a position ``(D,)`` to a dict of named values in the
        model's own (constrained) space, or None when the target lives on R^D.
      truth: exact moments (and modes) of the target, or None.
      minibatch_fn: maps ``(rng_key, position)`` to an unbiased estimate of the log density
        from a random subsample of the data (a NumPyro model with
        ``plate(..., subsample_size=M)``), or None. Stochastic reverse-KL fits step on
        it (``ForwardKL(SNIS())`` weighs its draws by the full ``logdensity_fn``); the
        fixed-draw method refuses such a target.
    """

    logdensity_fn: Callable[[jax.Array], jax.Array]
    init_position: jax.Array
    sample_fn: Callable[[jax.Array, int], jax.Array] | None = None
    constrain_fn: Callable[[jax.Array], dict[str, jax.Array]] | None = None
    truth: Truth | None = None
    minibatch_fn: Callable[[jax.Array, jax.Array], jax.Array] | None = None

    @property
    def dim(self) -> int:
        return self.init_position.shape[-1]


def check_draws(draws, target: Target, where: str) -> None:
    """Raises a ValueError naming ``where`` unless ``draws`` are (N, D) draws of ``target``
    with N >= 2 (a standard error needs two draws)."""
    shape = jnp.shape(draws)
    if len(shape) != 2 or shape[1] != target.dim or shape[0] < 2:
        raise ValueError(
            f"{where}: draws must have shape (N, {target.dim}) with N >= 2 for this target "
            f"of dimension {target.dim}, got {shape}"
        )


def from_logdensity(
    logdensity_fn: Callable, init_position, *, truth: Truth | None = None
) -> Target:
    """Wraps a plain JAX log density as a ``Target``.

    Args:
      logdensity_fn: the unnormalised log density. It takes a position of the same
        structure as ``init_position``: an array ``(D,)`` or any pytree of arrays. Fits
        compile once per function object; to fit new data without compiling again, pass
        ``jax.tree_util.Partial(fn, data)`` (``fn(data, position)``): its arrays become
        the target's, like a NumPyro model's data (and ``stack_targets`` batches them).
      init_position: where the fit starts; its structure is kept for ``constrain_fn``.
      truth: exact moments on the flattened space, when known.

    Returns:
      A ``Target`` on the flattened space R^D. Its ``constrain_fn`` returns the
      position in ``init_position``'s structure, as a dict ``{"x": ...}`` for an
      array or the pytree itself when it is a dict.

    Examples:
      >>> import jax.numpy as jnp
      >>> target = from_logdensity(lambda p: -jnp.sum(p["a"] ** 2) - p["b"] ** 2,
      ...                          {"a": jnp.zeros(2), "b": jnp.zeros(())})
      >>> target.dim
      3
    """
    if not callable(logdensity_fn):
        raise TypeError(
            f"logdensity_fn must be a function of a position, got {type(logdensity_fn).__name__}"
        )
    flat, to_tree = jax.flatten_util.ravel_pytree(init_position)
    if flat.size == 0:
        raise ValueError("init_position has no entries: there is nothing to fit")
    if not isinstance(flat, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(flat))):
        index = int(jnp.argmin(jnp.isfinite(flat)))
        raise ValueError(f"init_position is not finite (entry {index} of the flattened position)")
    if not jnp.issubdtype(flat.dtype, jnp.floating):
        flat = flat.astype(jnp.result_type(float))
    # The functions go into the static part of Partials, equal for every target made from
    # the same log density and structure (the unravel function compares by value), so
    # those targets' fits share one compiled program; a Partial log density's arguments
    # stay its children, so its arrays are the target's.
    if isinstance(logdensity_fn, Partial):
        args = jax.tree.map(strong_array, (logdensity_fn.args, logdensity_fn.keywords))
        logdensity = Partial(_OnTree(logdensity_fn.func, to_tree), *args[0], **args[1])
    else:
        logdensity = Partial(_OnTree(logdensity_fn, to_tree))
    return Target(logdensity, flat, constrain_fn=Partial(_Constrain(to_tree)), truth=truth)


@dataclasses.dataclass(frozen=True)
class _OnTree:
    """``fn(*args, unravel(x), **kwargs)``: a log density of a pytree, called on R^D."""

    fn: Callable
    unravel: Callable

    def __call__(self, *args, **kwargs):
        *args, x = args
        return self.fn(*args, self.unravel(x), **kwargs)


@dataclasses.dataclass(frozen=True)
class _Constrain:
    """The position as a dict: the pytree itself, or ``{"x": array}``."""

    unravel: Callable

    def __call__(self, x):
        value = self.unravel(x)
        return value if isinstance(value, dict) else {"x": value}


def is_array(leaf) -> bool:
    """Whether a leaf of a target is data (an array), not one of its functions."""
    return isinstance(leaf, jax.Array | np.ndarray)


def strong_array(leaf):
    """An array leaf as a JAX array without a weak type (compiled fits are keyed on it,
    so ``jnp.full(3, 2.0)`` and ``jnp.ones(3)`` would compile apart); others unchanged."""
    if not is_array(leaf):
        return leaf
    leaf = jnp.asarray(leaf)
    return jnp.asarray(leaf, leaf.dtype) if leaf.weak_type else leaf


def member(target: Target, i: int) -> Target:
    """Target ``i`` of a batch of targets (``stack_targets``): its arrays without the
    leading axis, its functions as they are."""
    return jax.tree.map(lambda x: x[i] if is_array(x) else x, target)


def stack_targets(targets: "list[Target]") -> Target:
    """Stacks targets of one structure (e.g. one model on several datasets) into a batch.

    Args:
      targets: targets built the same way, with arrays of equal shapes.

    Returns:
      One ``Target`` whose array leaves have a leading axis of ``len(targets)``,
      for ``vi.fit_batch(..., batched_target=True)``.

    Raises:
      ValueError: when the targets differ in structure or shapes.
    """
    if not targets:
        raise ValueError("stack_targets needs at least one target")
    for i, t in enumerate(targets):
        if not isinstance(t, Target):
            raise TypeError(f"targets[{i}] must be a vi.Target, got {type(t).__name__}")
    leaf_lists, structures = zip(*(jax.tree.flatten(t) for t in targets), strict=True)
    for i, (leaves, structure) in enumerate(zip(leaf_lists, structures, strict=True)):
        # The same structure, and the same objects as functions (the non-array leaves).
        if structure != structures[0] or not all(
            is_array(a) == is_array(b) and (is_array(a) or a is b)
            for a, b in zip(leaves, leaf_lists[0], strict=True)
        ):
            raise ValueError(
                f"targets[{i}] is built differently from targets[0] (another model, function or "
                "argument structure, or a NumPyro model whose latent sites differ in shape, "
                "such as another count of missing entries): only targets of one structure "
                "can be stacked"
            )
    shapes = [[np.shape(leaf) for leaf in leaves if is_array(leaf)] for leaves in leaf_lists]
    for i, leaf_shapes in enumerate(shapes[1:], start=1):
        if leaf_shapes != shapes[0]:
            raise ValueError(
                f"targets[{i}] has array shapes {leaf_shapes} but targets[0] has {shapes[0]}"
            )
    stacked = [
        jnp.stack(leaves) if is_array(leaves[0]) else leaves[0]
        for leaves in zip(*leaf_lists, strict=True)
    ]
    return jax.tree.unflatten(structures[0], stacked)
