"""Input checks for the discrete kernels: dtypes, shapes and axes at trace time, values eagerly.

Shapes, dtypes and axes are static under `jax.jit`, so they are checked while tracing and bad
ones raise at once. Values are not: a negative or non-finite probability inside `jit` follows
the documented semantics of each kernel (NaN out), and `check_probabilities` is the eager
entry point that raises instead, naming the first offending entry.
"""

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


def as_float_array(x: ArrayLike, name: str) -> jax.Array:
    """Converts `x` to a JAX array and rejects non-floating dtypes.

    Integer counts are rejected rather than cast (scipy would accept them): a silent cast to
    float32 loses counts above 2**24, and the cast is one explicit `.astype(float)` away.

    Args:
      x: array-like input.
      name: argument name used in error messages.

    Returns:
      `x` as a floating-point `jax.Array`, dtype unchanged.

    Raises:
      TypeError: if `x` is not a real floating-point array (bool, integer, complex, object,
        string).
    """
    try:
        arr = jnp.asarray(x)
    except TypeError as err:
        raise TypeError(
            f"{name} must be a real floating-point array, got {type(x).__name__}"
        ) from err
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        hint = (
            " (cast counts with .astype(float) first)"
            if jnp.issubdtype(arr.dtype, jnp.integer)
            else ""
        )
        raise TypeError(f"{name} must have a real floating dtype, got {arr.dtype}{hint}")
    return arr


def broadcast_pair(
    p: ArrayLike, q: ArrayLike, names: tuple[str, str] = ("p", "q")
) -> tuple[jax.Array, jax.Array]:
    """Checks dtypes, promotes to a common float dtype and broadcasts like numpy.

    Args:
      p: (...) first array.
      q: (...) second array, broadcastable against `p`.
      names: argument names used in error messages.

    Returns:
      `p` and `q` with a common floating dtype and the broadcast shape.

    Raises:
      TypeError: on a non-floating dtype.
      ValueError: if the shapes do not broadcast, naming both shapes.
    """
    p = as_float_array(p, names[0])
    q = as_float_array(q, names[1])
    try:
        shape = np.broadcast_shapes(p.shape, q.shape)
    except ValueError as err:
        raise ValueError(
            f"{names[0]} has shape {p.shape} and {names[1]} has shape {q.shape}: "
            "they do not broadcast"
        ) from err
    dtype = jnp.result_type(p, q)
    return jnp.broadcast_to(p.astype(dtype), shape), jnp.broadcast_to(q.astype(dtype), shape)


def canonical_axis(axis: int, shape: tuple[int, ...], names: str) -> int:
    """Returns `axis` as a non-negative index into `shape`, or raises.

    Args:
      axis: the axis along which the distributions lie; negative counts from the end.
      shape: the (broadcast) shape of the inputs.
      names: the argument names, for error messages (e.g. "p and q").

    Returns:
      The axis in `[0, len(shape))`.

    Raises:
      TypeError: if `axis` is not an integer.
      ValueError: if `axis` is out of range, naming the shape.
    """
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
        raise TypeError(f"axis must be an int, got {axis!r}")
    ndim = len(shape)
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"axis {axis} is out of range for {names} of shape {shape} ({ndim} dimensions)"
        )
    return int(axis) % ndim


def log_base(base: float | None) -> float | None:
    """Returns log(base), or None for natural logarithms; rejects base <= 0 and base == 1.

    Raises:
      ValueError: if `base` is not a positive number other than 1.
    """
    if base is None:
        return None
    if isinstance(base, bool) or not isinstance(base, numbers.Real):
        raise TypeError(f"base must be a number (e.g. 2 for bits) or None, got {base!r}")
    if not base > 0 or base == 1:
        raise ValueError(f"base must be a positive number other than 1, got {base!r}")
    return math.log(base)


def _concrete(p: ArrayLike, name: str) -> np.ndarray:
    try:
        return np.asarray(p)
    except jax.errors.TracerArrayConversionError as err:
        raise TypeError(
            f"cannot validate {name} inside jax.jit or jax.vmap: its values are not known while "
            "tracing; call check_probabilities on concrete arrays, outside the transformation"
        ) from err


def _entry(name: str, idx) -> str:
    return f"{name}[{', '.join(str(int(i)) for i in idx)}]" if len(idx) else name


def _slice(name: str, idx, axis: int) -> str:
    parts = [str(int(i)) for i in idx]
    parts.insert(axis, ":")
    return f"{name}[{', '.join(parts)}]"


def check_probabilities(
    p: ArrayLike,
    *,
    name: str = "p",
    axis: int = -1,
    sums_to_one: bool = False,
    atol: float | None = None,
) -> None:
    """Raises a ValueError naming the first invalid entry of a probability array (eager only).

    The kernels cannot raise on values inside `jax.jit` (they return NaN for negative or NaN
    entries instead); call this on concrete arrays to find the offending entry.

    Args:
      p: (..., K, ...) probabilities or non-negative weights, distributions along `axis`.
      name: the name used in error messages.
      axis: the axis along which the distributions lie.
      sums_to_one: also require every distribution to sum to 1 within `atol`.
      atol: tolerance for `sums_to_one`; defaults to sqrt(machine epsilon) of the dtype.

    Raises:
      TypeError: on a non-floating dtype, or if `p` is a tracer (inside `jit`/`vmap`).
      ValueError: on the first NaN, infinite or negative entry, as in
        "p[2, 5] = -0.1 is negative", or with `sums_to_one` on the first distribution whose
        sum is off, as in "p[3, :] sums to 0.9, not 1".

    Examples:
      >>> check_probabilities(jnp.array([[0.5, 0.5], [0.2, -0.1]]))
      Traceback (most recent call last):
      ...
      ValueError: p[1, 1] = -0.1 is negative
    """
    values = _concrete(p, name)
    if not jnp.issubdtype(values.dtype, jnp.floating):
        as_float_array(values, name)  # raises the TypeError
    ax = canonical_axis(axis, values.shape, name) if values.ndim else None
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        value = values[idx]
        what = "is negative" if value < 0 else "is not finite"
        raise ValueError(f"{_entry(name, idx)} = {value!s} {what}")
    if sums_to_one and ax is not None:
        if atol is None:
            atol = math.sqrt(float(jnp.finfo(values.dtype).eps))
        sums = values.sum(axis=ax, dtype=np.float64)
        off = np.abs(sums - 1) > atol
        if off.any():
            idx = tuple(np.argwhere(off)[0])
            raise ValueError(f"{_slice(name, idx, ax)} sums to {sums[idx]:.6g}, not 1")


def check_positive_sums(p: ArrayLike, *, name: str, axis: int) -> None:
    """Raises a ValueError on the first distribution along `axis` that sums to zero (eager).

    Such a distribution cannot be normalised; the kernels return NaN for it, like scipy.
    """
    values = _concrete(p, name)
    if values.ndim == 0 or values.shape[axis] == 0:
        return
    ax = axis % values.ndim
    sums = values.sum(axis=ax)
    zero = sums == 0
    if zero.any():
        idx = tuple(np.argwhere(zero)[0])
        raise ValueError(f"{_slice(name, idx, ax)} sums to 0 and cannot be normalised")


def finish_result(value: jax.Array, valid: jax.Array, scale: float | None) -> jax.Array:
    """``value`` where ``valid``, NaN elsewhere, divided by ``scale`` (log of the base) if given."""
    value = jnp.where(valid, value, jnp.nan)
    return value if scale is None else value / scale


def empty_result(shape: tuple[int, ...], axis: int, dtype) -> jax.Array:
    """The result of a reduction over an empty ``axis``: zeros, like scipy."""
    return jnp.zeros(shape[:axis] + shape[axis + 1 :], dtype)
