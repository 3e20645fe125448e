"""Finding LAPACK calls in a program: on CPU they can deadlock a sharded batch.

On jaxlib 0.10.2 a batched LAPACK call (a vmapped ``solve_triangular``, as in a Gaussian
mixture's log density) splits its batch over XLA's CPU thread pool and waits for the parts
from a thread of that same pool. Each device of a sharded program runs on one of those
threads, and with as many devices as threads (one per core, vi's default) every thread can
end up waiting: the process hangs (measured: 4 devices on 2 cores hung every time on
``mixture_10d``, 2 devices in 1 run of 4). ``vi.fit_batch`` runs such a batch on one device
instead, where the LAPACK calls get the other cores. vi's own parts of a fit make none
(see ``vi.objectives.elbo.moment_matched_draws``).
"""

# Primitives that XLA:CPU hands to LAPACK through jaxlib's FFI.
LAPACK_PRIMITIVES = frozenset(
    {
        "cholesky",
        "triangular_solve",
        "lu",
        "qr",
        "householder_product",
        "eigh",
        "eig",
        "svd",
        "schur",
        "hessenberg",
        "tridiagonal",
        "tridiagonal_solve",
    }
)


def uses_lapack(jaxpr) -> bool:
    """Whether a program calls LAPACK on the CPU backend.

    Args:
      jaxpr: a ``jax.extend.core.Jaxpr`` (a ``ClosedJaxpr``'s ``.jaxpr``).

    Returns:
      Whether it, or a jaxpr inside it, uses one of ``LAPACK_PRIMITIVES``.
    """
    return uses_primitive(jaxpr, LAPACK_PRIMITIVES)


def uses_primitive(jaxpr, names) -> bool:
    """Whether a program uses one of some primitives.

    Args:
      jaxpr: a ``Jaxpr``.
      names: primitive names, e.g. ``{"cholesky"}``.

    Returns:
      Whether ``jaxpr`` or a jaxpr inside it (scan, cond, pjit or shard_map bodies) has an
      equation of one of ``names``.
    """
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in names:
            return True
        for value in eqn.params.values():
            for inner in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(inner, "jaxpr", inner)
                if hasattr(inner, "eqns") and uses_primitive(inner, names):
                    return True
    return False
