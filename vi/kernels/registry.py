"""KL divergences between distributions: one registry of closed forms, a Monte-Carlo fallback.

Distributions are small NamedTuples of arrays (so they pass through ``jit`` and ``vmap``)
with ``sample(rng_key, num_samples)`` and ``log_prob(x)``. Closed-form KLs are registered
for a pair of types with :func:`register_kl`; :func:`kl` looks the pair up. The registry is
the plain dict ``_KL_REGISTRY``, filled when the modules that define distributions are
imported: the Gaussians of ``vi.families.gaussian`` register theirs on ``import vi`` (or
``import vi.families``), as numpyro's and distrax's distributions do.

What :func:`kl` returns depends only on how it is called, never on the pair:

* ``kl(q, p)`` returns the exact KL as an array, and raises ``NotImplementedError`` when
  the pair has no closed form;
* ``kl(q, p, rng_key=..., num_samples=...)`` returns an :class:`~vi.kernels.estimate.Estimate`:
  the closed form with ``stderr == 0`` when there is one, else a Monte-Carlo estimate with
  its standard error (positive unless ``log q - log p`` is constant on the draws, in which
  case the estimate is that constant, exactly).

Examples:
  >>> import vi
  >>> q = vi.DiagNormal(jnp.zeros(2), jnp.zeros(2))
  >>> kl(q, vi.StandardNormal())
  Array(0., dtype=float32)
"""

import itertools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from vi.kernels.estimate import Estimate
from vi.kernels.monte_carlo import monte_carlo_kl

_KL_REGISTRY: dict[tuple[type, type], Callable[[Any, Any], jax.Array]] = {}
"""Closed-form ``KL(q ‖ p)`` functions by ``(type of q, type of p)``; see :func:`register_kl`."""

_CONVERTERS: dict[str, Callable[[Any], Any]] = {}
"""Converters of other libraries' distributions by top-level package name (``"numpyro"``);
see :func:`register_converter`."""


def register_kl(type_q: type, type_p: type) -> Callable:
    """Registers a closed-form ``KL(q ‖ p)`` for ``q`` of ``type_q`` and ``p`` of ``type_p``.

    Used as a decorator on ``fn(q, p) -> (...) KL``; a pair can be registered once.
    Subclasses inherit their bases' registrations.
    """
    for name, kind in (("type_q", type_q), ("type_p", type_p)):
        if not isinstance(kind, type):
            raise TypeError(f"register_kl({name}=...) takes a class, e.g. vi.Normal, got {kind!r}")

    def register(fn: Callable[[Any, Any], jax.Array]) -> Callable[[Any, Any], jax.Array]:
        if (type_q, type_p) in _KL_REGISTRY:
            raise ValueError(f"KL({type_q.__name__} ‖ {type_p.__name__}) is already registered")
        _KL_REGISTRY[(type_q, type_p)] = fn
        return fn

    return register


def register_converter(package: str) -> Callable:
    """Registers a converter for distributions whose type is defined in ``package``.

    Used as a decorator on ``fn(dist) -> distribution``; :func:`kl` applies it to any
    argument from that package (e.g. ``"numpyro"``) before looking the pair up. A package
    can be registered once.
    """

    def register(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        if package in _CONVERTERS:
            raise ValueError(f"a converter for {package!r} is already registered")
        _CONVERTERS[package] = fn
        return fn

    return register


def _converted(dist: Any) -> Any:
    convert = _CONVERTERS.get(type(dist).__module__.partition(".")[0])
    return dist if convert is None else convert(dist)


def _closed_form(type_q: type, type_p: type) -> Callable[[Any, Any], jax.Array] | None:
    for base_q, base_p in itertools.product(type_q.__mro__, type_p.__mro__):
        if (base_q, base_p) in _KL_REGISTRY:
            return _KL_REGISTRY[(base_q, base_p)]
    return None


def kl(
    q: Any, p: Any, *, rng_key: jax.Array | None = None, num_samples: int | None = None
) -> jax.Array | Estimate:
    """KL(q ‖ p): the registered closed form, or a Monte-Carlo estimate where asked for.

    Distributions of another library with a registered converter are converted first
    (after ``import vi``: NumPyro ``Normal``, ``Independent(Normal)`` and
    ``MultivariateNormal``). Batched distributions broadcast against each other.

    Args:
      q: the distribution the expectation is under.
      p: the other distribution.
      rng_key: a JAX PRNG key; with it the result is an :class:`~vi.kernels.estimate.Estimate`,
        and pairs without a closed form are estimated from ``num_samples`` draws of q.
      num_samples: draws for the Monte-Carlo fallback; required with ``rng_key``.

    Returns:
      Without ``rng_key``, the exact KL (...); with it, an ``Estimate`` whose ``value`` and
      ``stderr`` are (...), ``stderr`` 0 for a closed form.

    Raises:
      NotImplementedError: no closed form is registered and no ``rng_key`` was given.
    """
    q, p = _converted(q), _converted(p)
    closed_form = _closed_form(type(q), type(p))
    if rng_key is None:
        if num_samples is not None:
            raise ValueError("num_samples is only used with rng_key; pass both or neither")
        if closed_form is None:
            names = f"{type(q).__name__}, {type(p).__name__}"
            raise NotImplementedError(
                f"no closed-form KL is registered for ({names}); pass rng_key= and "
                f"num_samples= for a Monte-Carlo estimate, or add one with register_kl({names})"
            )
        return closed_form(q, p)
    if num_samples is None:
        raise ValueError("rng_key needs num_samples (the Monte-Carlo sample size)")
    if closed_form is not None:
        value = closed_form(q, p)
        return Estimate(value, jnp.zeros_like(value))
    return monte_carlo_kl(rng_key, q, p, num_samples)
