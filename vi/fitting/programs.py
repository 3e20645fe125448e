"""The compiled programs that hold a user's functions, in one bounded cache.

``jax.jit`` keeps every program it compiles for as long as the function it wraps lives,
keyed on the static arguments, and a fit's static arguments hold the target's functions
(its log density with the data it closes over). A loop that fits a new ``lambda`` over
new data at every call kept every program and every dataset: +25 MiB a call for 500,000
floats of data, until XLA could map no more code (it crashed at ~60 calls on a 2-core
CPU). Here each combination of static arguments gets its own ``jax.jit`` of a fresh
wrapper, and the library keeps the most recently used ``maxsize`` of them; dropping one
drops its compiled code and what its functions close over.

``vi.set_cache_size(n)`` sizes the cache, ``vi.clear_caches()`` empties it and
``vi.cache_info()`` counts it, like ``functools.lru_cache``.
"""

import collections
import functools
from typing import NamedTuple

import jax


class CacheInfo(NamedTuple):
    """The compiled-program cache: calls that found their program (``hits``), calls that
    made one (``misses``), its bound and how many it holds."""

    hits: int
    misses: int
    maxsize: int
    currsize: int


_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
"""(function, static arguments, argument structure) -> its jax.jit; most recent last."""

_MAXSIZE = 32
_counts = {"hits": 0, "misses": 0}


def jit(fun=None, *, static_argnames=(), donate_argnums=()):
    """``jax.jit(fun, static_argnames=..., donate_argnums=...)``, its programs kept in the
    library's bounded cache (``vi.set_cache_size``) instead of for the life of ``fun``.

    A program is found by ``fun``, the static arguments and the pytree structure of the
    positional arguments (which holds a target's functions); new arrays of the same shapes
    reuse it, as with ``jax.jit``. Every argument other than the static ones is positional.
    JAX sees only the arrays: the structure and the static arguments live in the program's
    own wrapper, so that none of JAX's caches holds a user's function past the program.
    The result also has ``lower`` and ``trace``, and ``_cache_size`` (the programs compiled
    for ``fun``), as ``jax.jit``'s has.
    """
    if fun is None:
        return functools.partial(
            jit, static_argnames=static_argnames, donate_argnums=donate_argnums
        )
    static_argnames = (static_argnames,) if isinstance(static_argnames, str) else static_argnames

    def program(args, kwargs):
        if unknown := set(kwargs) - set(static_argnames):
            raise TypeError(f"{fun.__name__}: pass {sorted(unknown)} by position")
        static = tuple((name, kwargs[name]) for name in static_argnames if name in kwargs)
        structures = tuple(jax.tree.structure(a) for a in args)
        key = (fun, static, structures)
        found = _PROGRAMS.pop(key, None)
        _counts["hits" if found is not None else "misses"] += 1
        if found is None:
            found = jax.jit(_flat(fun, structures, dict(static)), donate_argnums=donate_argnums)
        _PROGRAMS[key] = found
        while len(_PROGRAMS) > _MAXSIZE:
            _PROGRAMS.popitem(last=False)
        return found, [jax.tree.leaves(a) for a in args]

    @functools.wraps(fun)
    def call(*args, **kwargs):
        compiled, leaves = program(args, kwargs)
        return compiled(*leaves)

    def lower(*args, **kwargs):
        compiled, leaves = program(args, kwargs)
        return compiled.lower(*leaves)

    def trace(*args, **kwargs):
        compiled, leaves = program(args, kwargs)
        return compiled.trace(*leaves)

    call.lower, call.trace = lower, trace
    call._cache_size = lambda: sum(p._cache_size() for k, p in _PROGRAMS.items() if k[0] is fun)
    return call


def _flat(fun, structures, static: dict):
    """``fun`` over the leaves of each positional argument, its structure and static
    arguments closed over: a new function for each program."""

    def flat(*leaves):
        args = [jax.tree.unflatten(s, x) for s, x in zip(structures, leaves, strict=True)]
        return fun(*args, **static)

    flat.__name__ = flat.__qualname__ = getattr(fun, "__name__", "program")
    return flat


def set_cache_size(maxsize: int) -> int:
    """Bounds how many compiled programs vi keeps (default 32); returns the bound before.

    Each program holds the functions it was compiled for, and the data they close over,
    until it is dropped, least recently used first. A program dropped and needed again
    compiles again. ``maxsize=0`` keeps none (every fit compiles).
    """
    global _MAXSIZE
    if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 0:
        raise ValueError(f"maxsize must be a non-negative integer, got {maxsize!r}")
    before, _MAXSIZE = _MAXSIZE, maxsize
    while len(_PROGRAMS) > _MAXSIZE:
        _PROGRAMS.popitem(last=False)
    return before


def clear_caches() -> None:
    """Drops every compiled program vi keeps (and what their functions close over)."""
    _PROGRAMS.clear()
    _counts.update(hits=0, misses=0)


def cache_info() -> CacheInfo:
    """How the compiled-program cache has served (``hits``, ``misses``) and its size."""
    return CacheInfo(_counts["hits"], _counts["misses"], _MAXSIZE, len(_PROGRAMS))
