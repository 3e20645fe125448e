"""Orthonormal columns by block Gram-Schmidt: a QR without LAPACK, for XLA:CPU.

On jaxlib 0.10.2 a LAPACK call inside a batch sharded over one CPU device per core can
deadlock the process (``vi.backend._lapack``), so the CPU path orthonormalises the fixed
draws of ``vi.objectives.elbo.moment_matched_draws`` without one.
"""

import jax
import jax.numpy as jnp

_BLOCK = 32
"""Columns orthonormalised together by ``orthonormal_columns`` (32 measured best of 32
and 64 at D = 64-1000: 8x faster than column by column at D = 1000)."""


def orthonormal_columns(y: jax.Array) -> jax.Array:
    """The Q of y = QR with R's diagonal positive, by block Gram-Schmidt.

    ``jnp.linalg.qr`` would do, up to rounding, but on CPU it calls LAPACK, which deadlocks
    a batch of fits sharded over one device per core (see ``vi.fitting.batch``). Each block
    of ``_BLOCK`` columns is projected off the columns before it and orthonormalised within
    itself (column by column, each projected twice), and all that twice (BCGS2: Barlow &
    Smoktunowicz 2013; "twice is enough": Giraud, Langou & Rozloznik 2005), which keeps Q
    orthogonal to rounding while y's columns are numerically independent; the projections
    between blocks are matrix products. A positive diagonal makes the draws a continuous
    function of y.
    """
    dim = y.shape[1]

    def within(v):
        """Gram-Schmidt within a block, each column projected twice."""

        def next_column(j, w):
            # The columns of w from j on are still zero, so projecting on all of w
            # projects on the first j.
            c = jax.lax.dynamic_index_in_dim(v, j, axis=1, keepdims=False)
            c = c - w @ (w.T @ c)
            c = c - w @ (w.T @ c)
            return jax.lax.dynamic_update_index_in_dim(w, c / jnp.linalg.norm(c), j, axis=1)

        return jax.lax.fori_loop(0, v.shape[1], next_column, jnp.zeros_like(v))

    def orthonormalise(q, start, width):
        """q with columns [start, start + width) made from y's; the later ones are zero."""
        v = jax.lax.dynamic_slice_in_dim(y, start, width, axis=1)
        for _ in range(2):
            v = within(v - q @ (q.T @ v))
        return jax.lax.dynamic_update_slice_in_dim(q, v, start, axis=1)

    num_blocks, rest = divmod(dim, _BLOCK)
    q = jnp.zeros_like(y)
    if num_blocks:
        q = jax.lax.fori_loop(0, num_blocks, lambda b, q: orthonormalise(q, b * _BLOCK, _BLOCK), q)
    return orthonormalise(q, dim - rest, rest) if rest else q
