"""``fit``: the best mean-field Gaussian approximation of a target, in one call."""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vi.families import mean_field
from vi.families.mean_field import MeanFieldParams
from vi.fitting.fixed_draws import default_num_draws, fit_fixed_draws
from vi.fitting.result import FitResult
from vi.fitting.state import FitOutput
from vi.fitting.stochastic import fit_stochastic
from vi.targets.target import Target

METHODS = ("fixed_draws", "stochastic")


class _Static(NamedTuple):
    """The non-array leaves of a target (its functions), hashed by identity."""

    treedef: Any
    leaves: tuple


def _split(target: Target) -> tuple[list, _Static]:
    leaves, treedef = jax.tree.flatten(target)
    is_array = [isinstance(leaf, jax.Array | jnp.ndarray) for leaf in leaves]
    arrays = [leaf if a else None for leaf, a in zip(leaves, is_array, strict=True)]
    others = tuple(None if a else leaf for leaf, a in zip(leaves, is_array, strict=True))
    return arrays, _Static(treedef, others)


def _join(arrays: list, static: _Static) -> Target:
    leaves = [a if o is None else o for a, o in zip(arrays, static.leaves, strict=True)]
    return jax.tree.unflatten(static.treedef, leaves)


@functools.partial(jax.jit, static_argnames=("static", "method", "options"))
def _fit_compiled(rng_key, arrays, init_params, *, static, method, options) -> FitOutput:
    target = _join(arrays, static)
    options = dict(options)
    if method == "fixed_draws":
        return fit_fixed_draws(rng_key, target.logdensity_fn, init_params, **options)
    return fit_stochastic(rng_key, target.logdensity_fn, init_params, **options)


def _check_target(target: Target) -> None:
    if not isinstance(target, Target):
        raise TypeError(
            f"target must be a vi.Target, got {type(target).__name__}: wrap a NumPyro model "
            "with vi.from_numpyro(model, *args, **kwargs) or a log density with "
            "vi.from_logdensity(logdensity_fn, init_position)"
        )
    position = target.init_position
    if position.ndim != 1 or position.shape[0] == 0:
        raise ValueError(f"target.init_position must have shape (D,) with D >= 1, got {position.shape}")
    out = jax.eval_shape(target.logdensity_fn, position)
    if out.shape != ():
        raise ValueError(
            f"target.logdensity_fn must return a scalar for a position of shape {position.shape}, "
            f"got shape {out.shape}"
        )


def _check_rng_key(rng_key) -> None:
    is_typed = isinstance(rng_key, jax.Array) and jnp.issubdtype(rng_key.dtype, jax.dtypes.prng_key)
    is_raw = isinstance(rng_key, jax.Array) and rng_key.dtype == jnp.uint32 and rng_key.shape == (2,)
    if not (is_typed and rng_key.shape == ()) and not is_raw:
        raise TypeError(
            f"rng_key must be a single JAX key (jax.random.key(seed)), got {type(rng_key).__name__}"
            + (f" with shape {rng_key.shape}" if hasattr(rng_key, "shape") else "")
        )


def fit(
    rng_key: jax.Array,
    target: Target,
    *,
    method: str | None = None,
    optimizer: optax.GradientTransformation | None = None,
    num_samples: int | None = None,
    max_steps: int | None = None,
    init_params: MeanFieldParams | None = None,
    init_scale: float = 0.1,
    stick_the_landing: bool = False,
    tol: float | None = None,
    num_eval_samples: int = 1024,
) -> FitResult:
    """Fits a mean-field Gaussian to ``target`` by maximising the ELBO (reverse KL).

    Two methods, both compiled into one program:

    - ``"fixed_draws"`` (the default): the ELBO over a fixed set of moment-matched
      draws is a deterministic function, maximised by L-BFGS to convergence. It
      reaches the mean-field optimum on ill-conditioned posteriors where Adam
      stalls, with no learning rate to tune. Use it unless D is in the thousands
      or the log density is too expensive to evaluate at ``num_samples`` draws.
    - ``"stochastic"``: fresh draws every step and an optax ``optimizer``
      (default ``optax.adam(1e-2)``), stopping itself when the ELBO plateaus.

    Args:
      rng_key: a JAX key; the same key gives the same result, bit for bit.
      target: what to fit (``vi.from_numpyro``, ``vi.from_logdensity`` or a built-in target).
      method: ``"fixed_draws"`` or ``"stochastic"``; by default ``"stochastic"`` when
        an ``optimizer`` is given and ``"fixed_draws"`` otherwise.
      optimizer: an optax optimizer for the stochastic method (with any schedule).
      num_samples: draws of q: the fixed draws (even; default ``2 * min(max(D, 32), 64)``)
        or the draws per step (default 8).
      max_steps: the most steps (default 5000 for fixed draws, 20000 stochastic).
      init_params: where q starts; default: centred on ``target.init_position``.
      init_scale: q's initial standard deviation when ``init_params`` is not given.
      stick_the_landing: the sticking-the-landing gradient (stochastic method only).
      tol: the fixed-draw method's gradient tolerance (see ``fit_fixed_draws``).
      num_eval_samples: fresh draws for the final ELBO estimate in ``result.info``.

    Returns:
      A ``FitResult``: ``params``, ``info`` (steps, stop reason, ELBO ± stderr),
      ``trace``, and ``sample(rng_key, n)`` in the model's own space.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import vi
      >>> target = vi.from_logdensity(lambda x: -0.5 * jnp.sum((x - 3.0) ** 2), jnp.zeros(2))
      >>> result = vi.fit(jax.random.key(0), target)
      >>> result.stop_reason, [round(float(m), 4) for m in result.params.loc]
      ('converged', [3.0, 3.0])
    """
    _check_rng_key(rng_key)
    _check_target(target)
    if method is None:
        method = "fixed_draws" if optimizer is None else "stochastic"
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if init_params is None:
        init_params = mean_field.init(target.init_position, scale=init_scale)
    elif init_params.loc.shape != target.init_position.shape:
        raise ValueError(
            f"init_params.loc has shape {init_params.loc.shape} but the target has "
            f"dimension {target.dim}"
        )
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")

    if method == "fixed_draws":
        if optimizer is not None or stick_the_landing:
            raise ValueError(
                "optimizer and stick_the_landing apply to method='stochastic'; the fixed-draw "
                "method uses L-BFGS"
            )
        options = dict(
            num_draws=num_samples or default_num_draws(target.dim),
            max_steps=max_steps or 5000,
            gtol=tol,
            num_eval_samples=num_eval_samples,
        )
        if options["num_draws"] < 2 or options["num_draws"] % 2:
            raise ValueError(f"num_samples must be even and >= 2 for fixed draws, got {num_samples}")
    else:
        if tol is not None:
            raise ValueError("tol applies to method='fixed_draws'")
        options = dict(
            optimizer=optimizer or optax.adam(1e-2),
            num_samples=num_samples or 8,
            max_steps=max_steps or 20_000,
            stick_the_landing=stick_the_landing,
            num_eval_samples=num_eval_samples,
        )
        if options["num_samples"] < 2:
            raise ValueError(f"num_samples must be at least 2, got {num_samples}")

    arrays, static = _split(target)
    output = _fit_compiled(
        rng_key,
        arrays,
        init_params,
        static=static,
        method=method,
        options=tuple(sorted(options.items())),
    )
    return FitResult(output, target)
