"""Standard-normal draws that compile in a tenth of the time of ``jax.random.normal``'s.

XLA:CPU (jaxlib 0.10.2) takes 0.6-0.7 s to compile one ``jax.random.normal`` call (LLVM on
its Threefry lowering; 0.07 s for what follows), and a default fit draws twice: its fixed
draws and its final ELBO estimate. Here the same hash, Threefry-2x32 with
20 rounds (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3",
SC 2011), is written out as straight-line code that XLA fuses into one kernel, and each
draw is the cosine half of a Box-Muller pair. The draws are exact standard normals to the resolution of the uniforms (24 bits in
float32, 53 in float64; no float32 draw exceeds 5.9 in size), but not the numbers
``jax.random.normal`` gives for the same key.

In a loop that draws every step, ``jax.random.normal`` runs faster (``bench_batch.py``), so
the fitting steps use it; these draws are for the one-off draws of a fit.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
_KEY_PARITY = np.uint32(0x1BD11BDA)


def threefry2x32(key_data: jax.Array, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The Threefry-2x32-20 hash of the counter pairs ``(x0, x1)`` under a ``uint32[2]`` key."""
    k0, k1 = key_data[0], key_data[1]
    schedule = (k0, k1, k0 ^ k1 ^ _KEY_PARITY)
    x0, x1 = x0 + schedule[0], x1 + schedule[1]
    for r in range(20):
        x0 = x0 + x1
        rot = _ROTATIONS[r % 8]
        x1 = ((x1 << np.uint32(rot)) | (x1 >> np.uint32(32 - rot))) ^ x0
        if r % 4 == 3:  # key injection after every four rounds
            s = (r + 1) // 4
            x0 = x0 + schedule[s % 3]
            x1 = x1 + schedule[(s + 1) % 3] + np.uint32(s)
    return x0, x1


def _uniform_open(words: tuple[jax.Array, ...], dtype) -> jax.Array:
    """Uniforms in (0, 1) from 32-bit words: the top 24 bits of one word (float32) or 26 + 27
    bits of two (float64), shifted half a step off zero."""
    if jnp.dtype(dtype).itemsize <= 4:
        return ((words[0] >> 8).astype(dtype) + 0.5) * (1.0 / 2**24)
    hi, lo = (w.astype(dtype) for w in (words[0] >> 6, words[1] >> 5))
    return (hi * 2**27 + lo + 0.5) * (1.0 / 2**53)


def normal(data: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """Standard-normal draws of ``shape`` from a Threefry key's ``uint32[2]`` ``data``.

    Every draw is ``sqrt(-2 log u) cos(2 pi v)`` for its own pair of uniforms ``(u, v)``,
    hashed from its own counter: one elementwise formula (the sine half of the Box-Muller
    pair is not used), which XLA vectorises where a pairing of draws would not.
    """
    out_dtype = jnp.dtype(dtype)
    dtype = jnp.promote_types(out_dtype, jnp.float32)  # half precision: computed in float32
    counters = jnp.arange(math.prod(shape), dtype=jnp.uint32).reshape(shape)
    u_words, v_words = threefry2x32(data, counters, jnp.zeros_like(counters))
    if dtype.itemsize <= 4:
        u, v = _uniform_open((u_words,), dtype), _uniform_open((v_words,), dtype)
    else:  # a second hash of each counter gives the low words
        u_low, v_low = threefry2x32(data, counters, jnp.ones_like(counters))
        u = _uniform_open((u_words, u_low), dtype)
        v = _uniform_open((v_words, v_low), dtype)
    draws = jnp.sqrt(-2.0 * jnp.log(u)) * jnp.cos((2.0 * math.pi) * v)
    return draws.astype(out_dtype)
