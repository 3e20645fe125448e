"""What a fit is, statically: the user's options checked and resolved into a ``Spec``,
and the loop a ``Spec`` describes. Shared by ``fit`` and ``fit_batch``.

A target is split into its arrays (inputs of the compiled program, which a batch may
vmap over) and everything else (its functions, hashed into the ``Spec`` by identity), so
a new dataset of the same shapes reuses the compiled program.
"""

import contextlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vi.families.mean_field import MeanFieldParams
from vi.fitting.fixed_draws import default_num_draws, fixed_draws_loop
from vi.fitting.loop import FitLoop
from vi.fitting.progress import ProgressBar, progress_enabled, report_progress
from vi.fitting.stochastic import stochastic_loop
from vi.objectives import forward_kl
from vi.objectives.elbo import check_num_samples, negative_elbo_loss_from_draws
from vi.targets.target import Target, is_array

OBJECTIVES = ("reverse_kl", "forward_kl")
METHODS = ("fixed_draws", "stochastic")
ESTIMATORS = ("exact", "draws", "snis")

DEFAULT_OPTIMIZER = optax.adam(1e-2)
"""The stochastic loop's optimizer when none is given: one object, so that every fit
with the default compiles once (optax optimizers compare by identity)."""


class _Static(NamedTuple):
    """The non-array leaves of a target (its functions), hashed by identity."""

    treedef: Any
    leaves: tuple


def split_target(target: Target) -> tuple[list, _Static]:
    """The target's array leaves (None elsewhere) and the rest, for ``join_target``."""
    leaves, treedef = jax.tree.flatten(target)
    arrays = [leaf if is_array(leaf) else None for leaf in leaves]
    others = tuple(None if is_array(leaf) else leaf for leaf in leaves)
    return arrays, _Static(treedef, others)


def _first_nonfinite(x) -> int | None:
    """The first index along axis 0 of ``x`` holding a non-finite entry, or None (also for
    a traced ``x``, which cannot be checked). Checked on the host, so that it holds when
    ``fit`` runs under a user's ``jit``."""
    if isinstance(x, jax.core.Tracer):
        return None
    finite = np.isfinite(np.asarray(x, np.float64)).reshape(len(x), -1).all(axis=1)
    return None if finite.all() else int(np.argmin(finite))


def _check_finite_start(init_params: MeanFieldParams, name: str | None) -> None:
    """Raises ValueError naming the first non-finite entry of a single fit's start (a
    batch flags such a member instead: it must not stop the others)."""
    for field, value in zip(init_params._fields, init_params, strict=True):
        bad = _first_nonfinite(value)
        if bad is not None:
            where = f"{name}.{field}" if name else "target.init_position"
            raise ValueError(f"{where}[{bad}] is not finite: the fit cannot start there")


def member(target: Target, i: int) -> Target:
    """One target of a batch.

    Args:
      target: targets stacked along their arrays' leading axis (``vi.stack_targets``).
      i: which one.

    Returns:
      Target ``i``: its arrays without the leading axis, its functions as they are.
    """
    return jax.tree.map(lambda x: x[i] if is_array(x) else x, target)


def join_target(arrays: list, static: _Static) -> Target:
    """The target that ``split_target`` split."""
    leaves = [a if o is None else o for a, o in zip(arrays, static.leaves, strict=True)]
    return jax.tree.unflatten(static.treedef, leaves)


class FitOptions(NamedTuple):
    """The user's options of a fit, as passed to ``fit`` or ``fit_batch`` (see ``fit``)."""

    objective: str = "reverse_kl"
    method: str | None = None
    estimator: str | None = None
    draws: Any = None
    optimizer: Any = None
    num_samples: int | None = None
    max_steps: int | None = None
    init_params: MeanFieldParams | None = None
    init_scale: float = 0.1
    init_radius: float | None = None
    stick_the_landing: bool = False
    tol: float | None = None
    min_ess_fraction: float = 0.02
    num_eval_samples: int = 1024
    progress: bool | None = None


class Spec(NamedTuple):
    """Everything static about a fit: what the compiled program is specialised on."""

    static: _Static
    objective: str
    method: str
    options: tuple
    optimizer: Any
    init_radius: float | None
    progress_every: int | None


def loop_for(spec: Spec, arrays, draws, hyperparameters) -> FitLoop:
    """The loop of one fit, for one member's target arrays and hyperparameters."""
    target = join_target(arrays, spec.static)
    options = dict(spec.options)
    if spec.objective == "reverse_kl" and spec.method == "fixed_draws":
        return fixed_draws_loop(target.logdensity_fn, **options)
    optimizer = spec.optimizer
    if hyperparameters is not None:
        optimizer = optimizer(hyperparameters)
    num_samples = options.pop("num_samples")
    draw_fn = None
    if spec.objective == "forward_kl":
        estimator = options.pop("estimator")
        if estimator == "exact":
            loss_fn = forward_kl.exact_samples_loss(target.sample_fn, num_samples)
        elif estimator == "draws":
            loss_fn = forward_kl.draws_loss(draws, num_samples)
        else:
            loss_fn = forward_kl.snis_loss(target.logdensity_fn, num_samples)
    else:
        loss_fn, draw_fn = negative_elbo_loss_from_draws(
            target.logdensity_fn, num_samples, stick_the_landing=options.pop("stick_the_landing")
        )
    return stochastic_loop(
        loss_fn, target.logdensity_fn, optimizer=optimizer, draw_fn=draw_fn, **options
    )


def initialise(rng_key, init_params, init_radius):
    """The loop's key and start: ``init_params`` jittered by ``init_radius`` when given."""
    if init_radius is None:
        return rng_key, init_params
    rng_key, init_key = jax.random.split(rng_key)
    return rng_key, init_params._replace(loc=jitter(init_key, init_params.loc, init_radius))


def progress_options(spec: Spec) -> dict:
    """The progress callback options of a batch's loop (none without a bar)."""
    if spec.progress_every is None:
        return {}
    return dict(progress_fn=report_progress, progress_every=spec.progress_every)


def progress_bar(spec: Spec, num_fits: int):
    """The bar to open around a fit's compiled calls (a null context without one)."""
    if spec.progress_every is None:
        return contextlib.nullcontext()
    max_steps = dict(spec.options)["max_steps"]
    return ProgressBar(max_steps, num_fits, description=spec.objective)


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
    out = jax.eval_shape(target.logdensity_fn, position)
    if out.shape != ():
        raise ValueError(
            f"target.logdensity_fn must return a scalar for a position of shape {position.shape}, "
            f"got shape {out.shape}"
        )


def check_optimizer(optimizer) -> None:
    """Raises TypeError unless ``optimizer`` is None or an optax gradient transformation."""
    if optimizer is None or (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        return
    hint = ""
    if callable(optimizer):
        hint = (
            ": call it (optimizer=optax.adam(1e-2)); a function of hyperparameters is for "
            "vi.fit_batch(..., hyperparameters=...)"
        )
    raise TypeError(
        f"optimizer must be an optax optimizer (with init and update), got "
        f"{type(optimizer).__name__}{hint}"
    )


def check_rng_key(rng_key) -> None:
    """Raises TypeError unless ``rng_key`` is one JAX key, typed or raw ``uint32[2]``."""
    is_typed = isinstance(rng_key, jax.Array) and jnp.issubdtype(rng_key.dtype, jax.dtypes.prng_key)
    is_raw = (
        isinstance(rng_key, jax.Array) and rng_key.dtype == jnp.uint32 and rng_key.shape == (2,)
    )
    if not (is_typed and rng_key.shape == ()) and not is_raw:
        raise TypeError(
            f"rng_key must be a single JAX key (jax.random.key(seed)), got {type(rng_key).__name__}"
            + (f" with shape {rng_key.shape}" if hasattr(rng_key, "shape") else "")
        )


def prepare(
    target: Target,
    options: FitOptions,
    *,
    batch_size: int | None = None,
    batched_target: bool = False,
):
    """Checks a fit's options and resolves their defaults.

    Returns:
      The static ``Spec``, the initial parameters (with a leading axis
      ``batch_size`` for a batch) and the draws (or None).
    """
    o = options
    check_target(target, batch_size if batched_target else None)
    batch_shape = () if batch_size is None else (batch_size,)
    if o.objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {o.objective!r}")
    if o.init_params is not None and o.init_radius is not None:
        raise ValueError("give init_params or init_radius, not both")
    if o.init_radius is not None and not o.init_radius > 0:
        raise ValueError(f"init_radius must be positive, got {o.init_radius}")
    init_params = o.init_params
    if init_params is None:
        if not 0 < o.init_scale < float("inf"):
            raise ValueError(f"init_scale must be positive and finite, got {o.init_scale}")
        position = target.init_position
        if not jnp.issubdtype(position.dtype, jnp.floating):
            position = position.astype(jnp.result_type(float))
        loc = jnp.broadcast_to(position, (*batch_shape, position.shape[-1]))
        init_params = MeanFieldParams(loc, jnp.full_like(loc, jnp.log(o.init_scale)))
    elif init_params.loc.shape != (*batch_shape, target.dim):
        raise ValueError(
            f"init_params.loc has shape {init_params.loc.shape} but the target has "
            f"dimension {target.dim}"
            + (f" and the batch has shape {batch_shape}" if batch_shape else "")
        )
    if batch_size is None:
        _check_finite_start(init_params, "init_params" if o.init_params is not None else None)
    if o.max_steps is not None and o.max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {o.max_steps}")
    if o.objective == "reverse_kl":
        method, loop_options, draws = _reverse_options(target, o)
    else:
        method, loop_options, draws = _forward_options(target, o, init_params.loc.dtype)
    optimizer = loop_options.pop("optimizer", None)
    _, static = split_target(target)
    max_steps = loop_options["max_steps"]
    spec = Spec(
        static=static,
        objective=o.objective,
        method=method,
        options=tuple(sorted(loop_options.items())),
        optimizer=optimizer,
        init_radius=o.init_radius,
        # Each report makes the compiled loop wait for the host (~0.4 ms on a CPU), so
        # report every 5 % of max_steps, and no more often than every 500 steps.
        progress_every=max(500, max_steps // 20) if progress_enabled(o.progress) else None,
    )
    return spec, init_params, draws


def jitter(rng_key: jax.Array, loc: jax.Array, radius: float) -> jax.Array:
    """``loc`` plus uniform noise in ``(-radius, radius)``; (D,) -> (D,)."""
    return loc + jax.random.uniform(rng_key, loc.shape, loc.dtype, -radius, radius)


def _reverse_options(target: Target, o: FitOptions):
    """The loop options of a reverse-KL fit: ``(method, options, draws)``."""
    if o.estimator is not None or o.draws is not None:
        raise ValueError("estimator and draws apply to objective='forward_kl'")
    method = o.method or ("fixed_draws" if o.optimizer is None else "stochastic")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "fixed_draws":
        if o.optimizer is not None or o.stick_the_landing:
            raise ValueError(
                "optimizer and stick_the_landing apply to method='stochastic'; the fixed-draw "
                "method uses L-BFGS"
            )
        num_draws = o.num_samples or default_num_draws(target.dim)
        if num_draws < 2 or num_draws % 2:
            raise ValueError(
                f"num_samples must be even and >= 2 for fixed draws, got {o.num_samples}"
            )
        options = dict(
            num_draws=num_draws,
            max_steps=o.max_steps or 5000,
            gtol=o.tol,
            num_eval_samples=o.num_eval_samples,
        )
        return method, options, None
    if o.tol is not None:
        raise ValueError("tol applies to method='fixed_draws'")
    options = dict(
        optimizer=o.optimizer or DEFAULT_OPTIMIZER,
        num_samples=check_num_samples(o.num_samples or 8),
        max_steps=o.max_steps or 20_000,
        stick_the_landing=o.stick_the_landing,
        num_eval_samples=o.num_eval_samples,
    )
    return method, options, None


def _forward_options(target: Target, o: FitOptions, dtype):
    """The loop options of a forward-KL fit: ``("stochastic", options, draws)``."""
    if o.method not in (None, "stochastic"):
        raise ValueError(
            f"objective='forward_kl' runs the stochastic loop; got method={o.method!r}"
        )
    if o.stick_the_landing or o.tol is not None:
        raise ValueError("stick_the_landing and tol apply to objective='reverse_kl'")
    draws = o.draws
    estimator = o.estimator
    if estimator is None:
        estimator = "draws" if draws is not None else "exact" if target.sample_fn else "snis"
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if estimator == "exact" and target.sample_fn is None:
        raise ValueError(
            "estimator='exact' needs a target that can be sampled exactly (target.sample_fn is "
            "None): pass draws=... (e.g. NUTS draws) or use estimator='snis'"
        )
    if estimator == "draws":
        if draws is None:
            raise ValueError("estimator='draws' needs draws=... of shape (N, D)")
        draws = jnp.asarray(draws, dtype)
        if draws.ndim != 2 or draws.shape[1] != target.dim or draws.shape[0] < 2:
            raise ValueError(
                f"draws must have shape (N, {target.dim}) with N >= 2 for this target of "
                f"dimension {target.dim}, got {draws.shape}"
            )
        bad = _first_nonfinite(o.draws)  # as given: converting may trace under a user's jit
        if bad is not None:
            raise ValueError(f"draws[{bad}] is not finite")
    elif draws is not None:
        raise ValueError(f"draws are only used by estimator='draws', not {estimator!r}")
    if not 0.0 <= o.min_ess_fraction < 1.0:
        raise ValueError(f"min_ess_fraction must be in [0, 1), got {o.min_ess_fraction}")
    options = dict(
        estimator=estimator,
        optimizer=o.optimizer or DEFAULT_OPTIMIZER,
        num_samples=check_num_samples(o.num_samples or 256),
        max_steps=o.max_steps or 20_000,
        num_eval_samples=o.num_eval_samples,
        min_ess_fraction=o.min_ess_fraction if estimator == "snis" else 0.0,
    )
    return "stochastic", options, draws
