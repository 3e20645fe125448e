"""The target of a fit: an unnormalised log density on R^D, with what is known about it."""

from collections.abc import Callable
from typing import Any, NamedTuple

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
    """

    logdensity_fn: Callable[[jax.Array], jax.Array]
    init_position: jax.Array
    sample_fn: Callable[[jax.Array, int], jax.Array] | None = None
    constrain_fn: Callable[[jax.Array], dict[str, jax.Array]] | None = None
    truth: Truth | None = None

    @property
    def dim(self) -> int:
        return self.init_position.shape[-1]


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
    flat, to_tree = ravel(init_position)
    if flat.size == 0:
        raise ValueError("init_position has no entries: there is nothing to fit")
    if not jnp.issubdtype(flat.dtype, jnp.floating):
        flat = flat.astype(jnp.result_type(float))
    # Partials of module-level functions: a target made again for new values of the same
    # structure has equal functions, so its fits reuse one compiled program; a
    # logdensity_fn that is itself a Partial has its arrays split out as the target's.
    return Target(
        Partial(_on_tree, logdensity_fn, to_tree),
        flat,
        constrain_fn=Partial(_constrain_on_tree, to_tree),
        truth=truth,
    )


def _on_tree(logdensity_fn, to_tree, x):
    return logdensity_fn(to_tree(x))


def _constrain_on_tree(to_tree, x):
    value = to_tree(x)
    return value if isinstance(value, dict) else {"x": value}


_UNRAVELS: dict[Any, Callable] = {}


def ravel(tree) -> tuple[jax.Array, Callable]:
    """Flattens a pytree of arrays, as ``jax.flatten_util.ravel_pytree``.

    Args:
      tree: a pytree of arrays.

    Returns:
      ``tree`` flattened to (D,), and the function that maps such a vector back to a
      tree. That function is one object for every tree of the same structure, shapes and
      dtypes (unless the structure cannot be hashed), so functions built on it can be
      cached: a target made again for new values then reuses its fits' compiled program,
      which is keyed on the target's functions.
    """
    flat, unravel_fn = jax.flatten_util.ravel_pytree(tree)
    key = (
        jax.tree.structure(tree),
        tuple((np.shape(v), jnp.result_type(v)) for v in jax.tree.leaves(tree)),
    )
    try:
        unravel_fn = _UNRAVELS.setdefault(key, unravel_fn)
    except TypeError:  # a pytree node with unhashable data: not shared
        pass
    return flat, unravel_fn


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
    columns, structures = zip(*(jax.tree.flatten(t) for t in targets), strict=True)
    for i, (leaves, structure) in enumerate(zip(columns, structures, strict=True)):
        # Functions (the non-array leaves, e.g. a plain log density) must be the same objects.
        same_functions = all(
            isinstance(a, jax.Array) or a is b for a, b in zip(leaves, columns[0], strict=True)
        )
        if structure != structures[0] or not same_functions:
            raise ValueError(
                f"targets[{i}] is built differently from targets[0] (another model, function or "
                "argument structure): only targets of one structure can be stacked"
            )
    shapes = [
        [jnp.shape(leaf) for leaf in leaves if isinstance(leaf, jax.Array)] for leaves in columns
    ]
    for i, leaf_shapes in enumerate(shapes[1:], start=1):
        if leaf_shapes != shapes[0]:
            raise ValueError(
                f"targets[{i}] has array shapes {leaf_shapes} but targets[0] has {shapes[0]}"
            )
    stacked = [
        jnp.stack(leaves) if isinstance(leaves[0], jax.Array) else leaves[0]
        for leaves in zip(*columns, strict=True)
    ]
    return jax.tree.unflatten(structures[0], stacked)
