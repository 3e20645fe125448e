"""Where a fit starts: the checks of its target, key and initial parameters."""

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from vi.families.family import PARAMS_TYPES, Params, check_family, family_of
from vi.targets.target import Target, member


def check_target(target: Target, batch_size: int | None = None) -> None:
    """Checks a target; ``batch_size`` when its arrays carry a leading batch axis."""
    if not isinstance(target, Target):
        raise TypeError(
            f"target must be a vi.Target, got {type(target).__name__}: wrap a NumPyro model "
            "with vi.from_numpyro(model, *args, **kwargs) or a log density with "
            "vi.from_logdensity(logdensity_fn, init_position)"
        )
    position = target.init_position
    leading = () if batch_size is None else (batch_size,)
    if position.shape[:-1] != leading or position.ndim == 0 or position.shape[-1] == 0:
        expected = "(D,)" if batch_size is None else f"({batch_size}, D)"
        raise ValueError(
            f"target.init_position must have shape {expected} with D >= 1, got {position.shape}"
        )
    if batch_size is not None:
        target = member(target, 0)
        position = target.init_position
    try:
        out = jax.eval_shape(target.logdensity_fn, position)
    except Exception as error:  # the user's function: say where it failed, keep the cause
        raise TypeError(
            f"target.logdensity_fn fails at target.init_position (shape {position.shape}): "
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        ) from error
    if not hasattr(out, "shape"):
        raise TypeError(
            f"target.logdensity_fn must return a scalar array, got {type(out).__name__}"
        )
    if out.shape != ():
        raise ValueError(
            f"target.logdensity_fn must return a scalar for a position of shape {position.shape}, "
            f"got shape {out.shape}"
        )


def check_num_eval_samples(num_eval_samples, name: str = "num_eval_samples") -> None:
    """Draws behind an estimate with a standard error (``name`` in the message): an integer
    of at least 2 (one draw has no standard error)."""
    if isinstance(num_eval_samples, bool) or not isinstance(num_eval_samples, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {num_eval_samples!r}")
    if num_eval_samples < 2:
        raise ValueError(
            f"{name} must be at least 2 (a standard error needs two draws), got {num_eval_samples}"
        )


def check_rng_key(rng_key, name: str = "rng_key") -> None:
    """Raises TypeError unless ``rng_key`` is one JAX key, typed or raw ``uint32[2]``."""
    is_typed = isinstance(rng_key, jax.Array) and jnp.issubdtype(rng_key.dtype, jax.dtypes.prng_key)
    is_raw = (
        isinstance(rng_key, jax.Array) and rng_key.dtype == jnp.uint32 and rng_key.shape == (2,)
    )
    if not (is_typed and rng_key.shape == ()) and not is_raw:
        raise TypeError(
            f"{name} must be a single JAX key (jax.random.key(seed)), got {type(rng_key).__name__}"
            + (f" with shape {rng_key.shape}" if hasattr(rng_key, "shape") else "")
        )


def default_params(target: Target, init_scale: float = 0.1, batch_shape=(), family=None) -> Params:
    """q of ``family`` (default mean-field) centred on ``target.init_position`` with
    standard deviation ``init_scale``."""
    family = check_family(family)
    if isinstance(init_scale, bool) or not isinstance(init_scale, numbers.Real):
        raise TypeError(f"init_scale must be a positive number, got {init_scale!r}")
    if not 0 < init_scale < float("inf"):
        raise ValueError(f"init_scale must be positive and finite, got {init_scale}")
    position = target.init_position
    rank = getattr(family, "rank", None)
    if rank is not None and rank >= position.shape[-1]:
        raise ValueError(
            f"family=vi.LowRank({rank}): the rank must be below the target's dimension "
            f"{position.shape[-1]}; use vi.FullRank() for a full covariance"
        )
    if not jnp.issubdtype(position.dtype, jnp.floating):
        position = position.astype(jnp.result_type(float))
    loc = jnp.broadcast_to(position, (*batch_shape, position.shape[-1]))
    make = lambda p: family.init(p, scale=init_scale)
    for _ in batch_shape:
        make = jax.vmap(make)
    return make(loc)


def initial_params(
    target: Target, init_params=None, batch_shape=(), init_scale: float = 0.1, family=None
) -> Params:
    """The checked start of a fit: ``init_params``, or ``default_params(target, init_scale,
    family=family)``.

    ``init_params`` may be an earlier result (``vi.fit``'s or ``vi.fit_batch``'s): its
    parameters, to continue that fit, with another method or objective if need be.

    Raises:
      TypeError, ValueError: naming the field of ``init_params`` that is not a floating
        array of the shape its family needs (``(*batch_shape, D)`` for ``loc``), a
        ``family`` the parameters do not belong to, or the first non-finite entry of a single
        fit's start (a batch flags such a member instead: it must not stop the others).
    """
    if init_params is None:
        params = default_params(target, init_scale, batch_shape, family)
        name = "target.init_position"
    else:
        if isinstance(getattr(init_params, "params", None), PARAMS_TYPES):
            init_params = init_params.params  # an earlier FitResult or BatchFitResult
        if not isinstance(init_params, PARAMS_TYPES):
            raise TypeError(
                "init_params must be vi.MeanFieldParams(loc, log_scale), vi.FullRankParams, "
                f"vi.LowRankParams or an earlier fit's result, got {type(init_params).__name__}"
            )
        if family is not None and not check_family(family).params_match(init_params):
            raise ValueError(
                f"init_params are {type(init_params).__name__} of {family_of(init_params)}, "
                f"but family={family}: give one of the two, or parameters of that family"
            )
        params, name = init_params, "init_params"
        template = family_of(params).init(jnp.zeros(target.dim))
        for field, value, like in zip(params._fields, params, template, strict=True):
            want = (*batch_shape, *like.shape)
            shape = np.shape(value)
            dtype = value.dtype if hasattr(value, "dtype") else np.asarray(value).dtype
            if shape != want:
                raise ValueError(
                    f"init_params.{field} has shape {shape}, expected {want} (the target has "
                    f"dimension {target.dim}"
                    + (f" and the batch has shape {tuple(batch_shape)})" if batch_shape else ")")
                )
            if not jnp.issubdtype(dtype, jnp.floating):
                raise TypeError(f"init_params.{field} must be a floating array, got {dtype}")
        params = type(params)(*(jnp.asarray(x) for x in params))
    if not batch_shape:
        for field, value in zip(params._fields, params, strict=True):
            bad = first_nonfinite(value)
            if bad is not None:
                where = f"{name}.{field}" if init_params is not None else name
                raise ValueError(f"{where}[{bad}] is not finite: the fit cannot start there")
    return params


def first_nonfinite(x) -> int | None:
    """The first index along axis 0 of ``x`` holding a non-finite entry, or None (also for
    a traced ``x``, which cannot be checked). Checked on the host, so that it holds when
    ``fit`` runs under a user's ``jit``."""
    if isinstance(x, jax.core.Tracer):
        return None
    finite = np.isfinite(np.asarray(x, np.float64)).reshape(len(x), -1).all(axis=1)
    return None if finite.all() else int(np.argmin(finite))


def jitter(rng_key: jax.Array, loc: jax.Array, radius: float) -> jax.Array:
    """``loc`` plus uniform noise in ``(-radius, radius)``; (D,) -> (D,)."""
    return loc + jax.random.uniform(rng_key, loc.shape, loc.dtype, -radius, radius)
