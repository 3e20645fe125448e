"""Several sums along one axis in a single pass over memory, for the discrete kernels.

jax 0.10's CPU backend hands every `jnp.sum` to its own YNNPACK fusion, so Σ p log(p/q), Σ p
and Σ q cost three passes over memory, and a compare/select inside one is split out into
further passes. A variadic `lax.reduce` becomes one XLA multi-output loop fusion instead,
which LLVM vectorises only when the reduced extent is short and the kept axis contiguous.
So rows of up to 16 entries are reduced whole, and longer rows in two stages: a variadic
reduce over 8 strided blocks of K / 8 (one pass over the inputs, writing partial sums 1/8
their size), then plain sums of the partial sums. Measured on a 2-core x86 CPU under load
(ratios to the naive jitted sum(p log(p/q)); see experiments/benchmarks/RESULTS.md):
whole rows of 16, 1.0-1.45x; 8 blocks for K = 1024, 4000, 1e5, 0.7-1.7x, for K = 544 and
800 about 2x (the old path: 2.4-2.75x), but for K = 100 and 600 8-12x, and with a ragged
tail (K not a multiple of the blocks) 4-9x. Variants
that lost: a variadic reduce straight over long rows (scalar, 5-12x), 12, 16 or 24 blocks
(1.5-6.6x), a min- or abs-based validity operand (4.5-6x), stacking the operands into one
array (6.7x), a single-operand reduce (XLA merges it back into YNNPACK: 3-6x). In float64
LLVM does not vectorise the three-output loop (2.5-4.4x), so float64 stays on the
one-reduction-per-sum path, except for rows longer than 16384 entries (128 KiB), k a
multiple of 8: there each YNNPACK sum slows down 3-8x (the naive formula too: 6 ms at
K = 16384, 47 ms at K = 18016, for the same 1e7 entries), while the one-pass loop holds at
21-25 ms (kl_divergence 1.5-7x faster than on the YNNPACK path, measured 2026-11-21 for
K = 16400 to 1e6).
"""

import functools

import jax
import jax.numpy as jnp

_SHORT = 16
_BLOCKS = 8


_LONG_FLOAT64 = 16384


def fuses(k: int, dtype) -> bool:
    """Whether `one_pass_sums` is the faster way to sum rows of k entries of `dtype`
    (measured, see the module doc).

    float32: rows of at most 16 entries are reduced whole; longer ones in 8 blocks, which
    vectorised for k = 544, 800, 1024, 4000 and 1e5 but not for k = 100 or 600: k a multiple
    of 32 and at least 512 is the rule those measurements support. float64 (whose loop does
    not vectorise): only rows longer than 16384 entries, where one YNNPACK pass per sum is
    slower still, in 8 blocks (k a multiple of 8).
    """
    if dtype == jnp.float32:
        return k <= _SHORT or (k % (4 * _BLOCKS) == 0 and k >= 64 * _BLOCKS)
    return dtype == jnp.float64 and k > _LONG_FLOAT64 and k % _BLOCKS == 0


def _add_all(x: tuple[jax.Array, ...], y: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
    return tuple(a + b for a, b in zip(x, y, strict=True))


def _reduce(arrays: tuple[jax.Array, ...], axis: int) -> tuple[jax.Array, ...]:
    zeros = tuple(jnp.zeros((), a.dtype) for a in arrays)
    return tuple(jax.lax.reduce(arrays, zeros, _add_all, (axis,)))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def one_pass_sums(arrays: tuple[jax.Array, ...], axis: int) -> tuple[jax.Array, ...]:
    """Sums of at least two same-shaped arrays along `axis`, fused into one pass.

    A single array would be handed back to the one-reduction path by XLA's simplifier. Only for
    row lengths K where `fuses(K, dtype)`. Differentiable (a variadic `lax.reduce` is not): the sums
    are linear, so their tangents are the sums of the tangents.

    Args:
      arrays: a tuple of two or more (..., K, ...) arrays of one shape and dtype, K > 0.
      axis: a non-negative axis.

    Returns:
      one (...) sum per array, the shape without `axis`.
    """
    arrays = tuple(jnp.moveaxis(a, axis, -1) for a in arrays)
    *batch, k = arrays[0].shape
    if k <= _SHORT:
        return _reduce(arrays, len(batch))
    # Longer rows in _BLOCKS blocks, whose partial sums are contiguous and vectorise.
    main = tuple(a.reshape(*batch, _BLOCKS, k // _BLOCKS) for a in arrays)
    return tuple(jnp.sum(s, axis=-1) for s in _reduce(main, len(batch)))


@one_pass_sums.defjvp
def _one_pass_sums_jvp(axis, primals, tangents):
    (arrays,), (dots,) = primals, tangents
    return one_pass_sums(arrays, axis), tuple(jnp.sum(d, axis=axis) for d in dots)
