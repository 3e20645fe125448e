"""The one door to backend-specific code: XLA:CPU workarounds, and plain JAX elsewhere.

Each workaround below is taken only when a program is traced for the CPU backend (JAX's
default backend is ``cpu``) and names the benchmark that justifies it; on any other
backend the plain ``jax.random`` / ``jnp`` code runs. ``generic()`` forces the plain code
on CPU too, so tests can check that both paths give the same fits.

============================  ==========================================  =====================
workaround                    why                                         measured by
============================  ==========================================  =====================
``normal``: straight-line     compiling ``jax.random.normal`` takes       ``bench_first_call.py``
Threefry + Box-Muller         0.6-0.7 s (one-off draws of a fit only)
``fuses``/``one_pass_sums``   YNNPACK runs one pass per ``jnp.sum``       ``bench_discrete_kl.py``
``block_length``              XLA:CPU runs small loop bodies inline only  ``bench_batch.py``
                              when their buffers are tiny
``orthonormal_columns``       LAPACK's QR can deadlock a batch sharded    (a hang, not a speed:
by block Gram-Schmidt         over host devices (``_lapack``)             ``tests/fitting``)
``top_k`` behind an           XLA:CPU turns a float32 ``top_k`` whose     ``bench_alpha.py``
optimization barrier          output feeds a fusion into a full sort      (PSIS)
                              (PSIS at N = 10^4: 2.2 ms, 0.3 ms with it;
                              float64 has no TopK kernel and sorts)
============================  ==========================================  =====================

The draws of every fitting step are ``jax.random.normal``'s on every backend: the
straight-line sampler, which compiles ten times faster, runs slower inside the steps'
loop, alone and batched (``experiments/benchmarks/RESULTS.md``).
"""

import contextlib

import jax
import jax.numpy as jnp

from vi.backend._gram_schmidt import orthonormal_columns as _gram_schmidt
from vi.backend._lapack import LAPACK_PRIMITIVES, uses_lapack, uses_primitive
from vi.backend._one_pass import fuses as _fuses
from vi.backend._one_pass import one_pass_sums
from vi.backend._threefry import normal as _threefry_normal

_generic = False


def cpu_path() -> bool:
    """Whether programs traced now take the XLA:CPU workarounds."""
    return not _generic and jax.default_backend() == "cpu"


@contextlib.contextmanager
def generic():
    """Traces the plain ``jax.random`` / ``jnp`` code on every backend, for tests.

    JAX's compilation caches are cleared on entry and exit, since a program compiled on
    one path would otherwise be reused on the other.
    """
    global _generic
    previous, _generic = _generic, True
    jax.clear_caches()
    try:
        yield
    finally:
        _generic = previous
        jax.clear_caches()


def normal(rng_key: jax.Array, shape: tuple[int, ...], dtype=None) -> jax.Array:
    """Standard-normal draws, as ``jax.random.normal(rng_key, shape, dtype)``, for a fit's
    one-off draws (its fixed draws, its final ELBO estimate).

    On the CPU path, for Threefry keys and float dtypes, each draw is the cosine half of a
    Box-Muller pair hashed from its own counter: other numbers than ``jax.random.normal``'s
    from the same distribution, in a program that compiles in a tenth of the time.
    """
    out_dtype = jnp.dtype(dtype or jnp.result_type(float))
    data = _threefry_data(rng_key) if cpu_path() else None
    if data is None or not jnp.issubdtype(out_dtype, jnp.floating):
        return jax.random.normal(rng_key, shape, out_dtype)
    return _threefry_normal(data, shape, out_dtype)


def _threefry_data(rng_key: jax.Array) -> jax.Array | None:
    """A Threefry key's ``uint32[2]`` data, or None for keys of other PRNG implementations."""
    if jnp.issubdtype(rng_key.dtype, jax.dtypes.prng_key):
        if rng_key.shape == () and str(jax.random.key_impl(rng_key)) == "threefry2x32":
            return jax.random.key_data(rng_key)
        return None
    return rng_key if rng_key.dtype == jnp.uint32 and rng_key.shape == (2,) else None


def fuses(k: int, dtype) -> bool:
    """Whether ``one_pass_sums`` is the faster way to sum rows of ``k`` entries of ``dtype``."""
    return cpu_path() and _fuses(k, dtype)


_SMALL_BUFFER_BYTES = 512
"""XLA:CPU runs a loop body's operations one after another on the calling thread only
when every buffer they touch holds at most this many bytes; otherwise it hands ready
operations to its thread pool, which costs microseconds per step of a small model."""


def block_length(num_steps: int, bytes_per_step: int) -> int:
    """Steps per innermost scan of a loop that emits ``bytes_per_step`` per step.

    On the CPU path, a number of steps whose outputs fit in a small buffer: a divisor of
    ``num_steps`` between half the most and the most, else equal blocks covering it with a
    few steps to spare. Elsewhere ``num_steps``: one scan.
    """
    most = max(1, _SMALL_BUFFER_BYTES // max(1, bytes_per_step))
    if not cpu_path() or num_steps <= most:
        return num_steps
    divisor = next((d for d in range(most, most // 2, -1) if num_steps % d == 0), None)
    return divisor or -(-num_steps // -(-num_steps // most))


def orthonormal_columns(y: jax.Array) -> jax.Array:
    """The Q of ``y = QR`` (n, d), n >= d, with R's diagonal positive.

    On the CPU path by block Gram-Schmidt (no LAPACK call); elsewhere ``jnp.linalg.qr``.
    """
    if cpu_path():
        return _gram_schmidt(y)
    q, r = jnp.linalg.qr(y)
    return q * jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(q.dtype)


__all__ = [
    "LAPACK_PRIMITIVES",
    "block_length",
    "cpu_path",
    "fuses",
    "generic",
    "normal",
    "one_pass_sums",
    "orthonormal_columns",
    "uses_lapack",
    "uses_primitive",
]


def top_k(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """``jax.lax.top_k``: the ``k`` largest values of ``x`` (..., N) and their indices."""
    result = jax.lax.top_k(x, k)
    if cpu_path():  # kept out of the fusions after it, so XLA:CPU keeps its TopK kernel
        result = jax.lax.optimization_barrier(result)
    return result
