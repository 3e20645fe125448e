"""``fit``: the best mean-field Gaussian approximation of a target, in one call."""

import contextlib
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vi.families.mean_field import MeanFieldParams
from vi.fitting.fixed_draws import default_num_draws, fixed_draws_loop
from vi.fitting.loop import FitLoop, advance, run
from vi.fitting.progress import ProgressBar, progress_enabled, report_progress
from vi.fitting.result import FitResult
from vi.fitting.state import FitOutput
from vi.fitting.stochastic import stochastic_loop
from vi.objectives import forward_kl
from vi.objectives.elbo import negative_elbo_loss_from_draws
from vi.targets.target import Target

OBJECTIVES = ("reverse_kl", "forward_kl")
METHODS = ("fixed_draws", "stochastic")
ESTIMATORS = ("exact", "draws", "snis")


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


def _loop_for(spec: Spec, arrays, draws, hyperparameters) -> FitLoop:
    """The loop of one fit, for one member's target arrays and hyperparameters."""
    target = _join(arrays, spec.static)
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


def _initialise(rng_key, init_params, init_radius):
    if init_radius is None:
        return rng_key, init_params
    rng_key, init_key = jax.random.split(rng_key)
    return rng_key, init_params._replace(loc=jitter(init_key, init_params.loc, init_radius))


def _progress_options(spec: Spec) -> dict:
    if spec.progress_every is None:
        return {}
    return dict(progress_fn=report_progress, progress_every=spec.progress_every)


@functools.partial(jax.jit, static_argnames=("spec",))
def _fit_compiled(rng_key, arrays, init_params, draws, hyperparameters, *, spec) -> FitOutput:
    rng_key, init_params = _initialise(rng_key, init_params, spec.init_radius)
    loop = _loop_for(spec, arrays, draws, hyperparameters)
    return run(loop, rng_key, init_params)


# With a progress bar, the fit runs in chunks of steps from Python, which redraws the bar
# between chunks: a host callback inside the loop cost ~0.6 ms per report on a CPU.


@functools.partial(jax.jit, static_argnames=("spec",))
def _fit_init(rng_key, arrays, init_params, draws, *, spec):
    rng_key, init_params = _initialise(rng_key, init_params, spec.init_radius)
    return _loop_for(spec, arrays, draws, None).init(rng_key, init_params)


@functools.partial(jax.jit, static_argnames=("spec", "num_calls"), donate_argnums=0)
def _fit_chunk(carry, arrays, draws, *, spec, num_calls):
    loop = _loop_for(spec, arrays, draws, None)
    carry = advance(loop, carry, num_calls)
    return carry, loop.running(carry)


@functools.partial(jax.jit, static_argnames=("spec",))
def _fit_finish(carry, arrays, draws, *, spec):
    return _loop_for(spec, arrays, draws, None).finish(carry)


def _fit_in_chunks(rng_key, arrays, init_params, draws, spec) -> FitOutput:
    steps_per_call = _loop_for(spec, arrays, draws, None).steps_per_call
    num_calls = max(1, spec.progress_every // steps_per_call)
    max_steps = dict(spec.options)["max_steps"]
    with ProgressBar(max_steps, 1, description=spec.objective) as bar:
        carry = _fit_init(rng_key, arrays, init_params, draws, spec=spec)
        running = True
        while running:
            carry, running = _fit_chunk(carry, arrays, draws, spec=spec, num_calls=num_calls)
            running = bool(running)
            bar.update(int(carry.step), int(running))
        return jax.block_until_ready(_fit_finish(carry, arrays, draws, spec=spec))


def _check_target(target: Target, batch_size: int | None = None) -> None:
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
        target = jax.tree.map(lambda leaf: leaf[0], target)
        position = target.init_position
    out = jax.eval_shape(target.logdensity_fn, position)
    if out.shape != ():
        raise ValueError(
            f"target.logdensity_fn must return a scalar for a position of shape {position.shape}, "
            f"got shape {out.shape}"
        )


def _check_rng_key(rng_key) -> None:
    is_typed = isinstance(rng_key, jax.Array) and jnp.issubdtype(rng_key.dtype, jax.dtypes.prng_key)
    is_raw = (
        isinstance(rng_key, jax.Array) and rng_key.dtype == jnp.uint32 and rng_key.shape == (2,)
    )
    if not (is_typed and rng_key.shape == ()) and not is_raw:
        raise TypeError(
            f"rng_key must be a single JAX key (jax.random.key(seed)), got {type(rng_key).__name__}"
            + (f" with shape {rng_key.shape}" if hasattr(rng_key, "shape") else "")
        )


def fit(
    rng_key: jax.Array,
    target: Target,
    *,
    objective: str = "reverse_kl",
    method: str | None = None,
    estimator: str | None = None,
    draws: jax.typing.ArrayLike | None = None,
    optimizer: optax.GradientTransformation | None = None,
    num_samples: int | None = None,
    max_steps: int | None = None,
    init_params: MeanFieldParams | None = None,
    init_scale: float = 0.1,
    init_radius: float | None = None,
    stick_the_landing: bool = False,
    tol: float | None = None,
    min_ess_fraction: float = 0.02,
    num_eval_samples: int = 1024,
    progress: bool | None = None,
) -> FitResult:
    """Fits a mean-field Gaussian q to ``target``, by reverse or forward KL.

    Reverse KL (``objective="reverse_kl"``, the ELBO, mode-seeking) has two
    methods, both compiled into one program:

    - ``"fixed_draws"`` (the default): the ELBO over a fixed set of moment-matched
      draws is a deterministic function, maximised by L-BFGS to convergence. It
      reaches the mean-field optimum on ill-conditioned posteriors where Adam
      stalls, with no learning rate to tune. Use it unless D is in the thousands
      or the log density is too expensive to evaluate at ``num_samples`` draws.
    - ``"stochastic"``: fresh draws every step and an optax ``optimizer``
      (default ``optax.adam(1e-2)``), stopping itself when the gradient is
      indistinguishable from noise. It is slower to reach the optimum on badly
      conditioned posteriors; prefer it for very high D.

    Forward KL (``objective="forward_kl"``, mass-covering) always runs the
    stochastic loop, with draws of p from the ``estimator``:

    - ``"exact"``: fresh exact draws from ``target.sample_fn`` every step;
    - ``"draws"``: minibatches of a given pool ``draws`` (N, D), e.g. NUTS draws
      on the unconstrained space (``vi.targets.numpyro_model.nuts_draws``);
    - ``"snis"``: self-normalised importance sampling from q (the unnormalised
      density alone); ``info.ess_fraction`` reports the effective sample size and
      the fit is flagged ``weights_collapsed`` below ``min_ess_fraction``.

    Args:
      rng_key: a JAX key; the same key gives the same result, bit for bit.
      target: what to fit (``vi.from_numpyro``, ``vi.from_logdensity`` or a built-in target).
      objective: ``"reverse_kl"`` or ``"forward_kl"``.
      method: for reverse KL, ``"fixed_draws"`` or ``"stochastic"``; by default
        ``"stochastic"`` when an ``optimizer`` is given and ``"fixed_draws"`` otherwise.
      estimator: for forward KL, ``"exact"``, ``"draws"`` or ``"snis"``; by default
        ``"draws"`` when ``draws`` are given, else ``"exact"`` when the target can be
        sampled, else ``"snis"``.
      draws: (N, D) draws of the target for ``estimator="draws"``.
      optimizer: an optax optimizer for the stochastic loop (with any schedule).
      num_samples: the fixed draws of the fixed-draw method (even; default
        ``2 * min(max(D, 32), 64)``); else the draws per step (default 8 for the
        ELBO, 256 for forward KL).
      max_steps: the most steps (default 5000 for fixed draws, 20000 stochastic).
      init_params: where q starts; default: centred on ``target.init_position``.
      init_scale: q's initial standard deviation when ``init_params`` is not given.
      init_radius: when given, q's initial mean is ``target.init_position`` plus
        uniform noise in ``(-init_radius, init_radius)`` drawn from ``rng_key``
        (NumPyro's ``init_to_uniform`` idea), so restarts with different keys
        start in different places.
      stick_the_landing: the sticking-the-landing ELBO gradient (stochastic reverse KL).
      tol: the fixed-draw method's convergence tolerance (``gtol`` of
        ``vi.fitting.fixed_draws.fixed_draws_loop``).
      min_ess_fraction: the smallest tolerated SNIS effective-sample-size fraction.
      num_eval_samples: fresh draws for the final ELBO estimate in ``result.info``.
      progress: show a progress bar, updated every 5 % of ``max_steps`` (at least 500
        steps apart) between chunks of the compiled loop; by default only on an
        interactive terminal.

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
    options = FitOptions(
        objective=objective,
        method=method,
        estimator=estimator,
        draws=draws,
        optimizer=optimizer,
        num_samples=num_samples,
        max_steps=max_steps,
        init_params=init_params,
        init_scale=init_scale,
        init_radius=init_radius,
        stick_the_landing=stick_the_landing,
        tol=tol,
        min_ess_fraction=min_ess_fraction,
        num_eval_samples=num_eval_samples,
        progress=progress,
    )
    spec, init_params, draws = prepare(target, options)
    arrays, _ = _split(target)
    if spec.progress_every is None:
        output = _fit_compiled(rng_key, arrays, init_params, draws, None, spec=spec)
    else:
        output = _fit_in_chunks(rng_key, arrays, init_params, draws, spec)
    return FitResult(output, target)


def _bar(spec: Spec, num_fits: int):
    if spec.progress_every is None:
        return contextlib.nullcontext()
    max_steps = dict(spec.options)["max_steps"]
    return ProgressBar(max_steps, num_fits, description=spec.objective)


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
    _check_target(target, batch_size if batched_target else None)
    batch_shape = () if batch_size is None else (batch_size,)
    if o.objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {o.objective!r}")
    if o.init_params is not None and o.init_radius is not None:
        raise ValueError("give init_params or init_radius, not both")
    if o.init_radius is not None and not o.init_radius > 0:
        raise ValueError(f"init_radius must be positive, got {o.init_radius}")
    init_params = o.init_params
    if init_params is None:
        if not o.init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {o.init_scale}")
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
    if o.max_steps is not None and o.max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {o.max_steps}")
    if o.objective == "reverse_kl":
        method, loop_options, draws = _reverse_options(target, o)
    else:
        method, loop_options, draws = _forward_options(target, o, init_params.loc.dtype)
    optimizer = loop_options.pop("optimizer", None)
    _, static = _split(target)
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
        optimizer=o.optimizer or optax.adam(1e-2),
        num_samples=_positive(o.num_samples or 8),
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
        if not bool(jnp.all(jnp.isfinite(draws))):
            bad = int(jnp.argmax(~jnp.all(jnp.isfinite(draws), axis=1)))
            raise ValueError(f"draws[{bad}] is not finite")
    elif draws is not None:
        raise ValueError(f"draws are only used by estimator='draws', not {estimator!r}")
    if not 0.0 <= o.min_ess_fraction < 1.0:
        raise ValueError(f"min_ess_fraction must be in [0, 1), got {o.min_ess_fraction}")
    options = dict(
        estimator=estimator,
        optimizer=o.optimizer or optax.adam(1e-2),
        num_samples=_positive(o.num_samples or 256),
        max_steps=o.max_steps or 20_000,
        num_eval_samples=o.num_eval_samples,
        min_ess_fraction=o.min_ess_fraction if estimator == "snis" else 0.0,
    )
    return "stochastic", options, draws


def _positive(num_samples: int) -> int:
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    return num_samples
