"""``fit``: the best Gaussian approximation of a target in a family, in one call."""

import jax

from vi.families.family import MeanField, Params, check_family, family_of
from vi.fitting import programs
from vi.fitting.fixed_draws import FixedDraws
from vi.fitting.interrupts import held_interrupts
from vi.fitting.loop import advance, empty_trace, finish, fit_keys
from vi.fitting.progress import ProgressBar, progress_enabled, report_every
from vi.fitting.recompile import warn_if_new_objects
from vi.fitting.result import FitResult
from vi.fitting.start import (
    check_num_eval_samples,
    check_rng_key,
    check_target,
    first_nonfinite,
    initial_params,
    jitter,
)
from vi.fitting.state import STATUS_NAMES, Problem
from vi.fitting.stochastic import Stochastic
from vi.objectives.elbo import ReverseKL
from vi.targets.target import Target


def resolve(target: Target, method, objective, init_params, init_radius, family=None):
    """Checks what ``fit`` and ``fit_batch`` are given and fills in the defaults.

    Returns:
      ``(method, problem)``: the method, and the target with its objective resolved for it.
    """
    family = check_family(family)
    if isinstance(getattr(init_params, "params", None), tuple):
        init_params = init_params.params
    if init_params is not None and hasattr(init_params, "_fields"):
        try:
            family = family_of(init_params)
        except TypeError:
            pass  # initial_params names the problem
    objective = ReverseKL() if objective is None else objective
    if not hasattr(objective, "loss") or isinstance(objective, type):
        raise TypeError(
            "objective must be vi.ReverseKL(), vi.ForwardKL(...), vi.Renyi(alpha) or "
            f"vi.ImportanceWeighted(...), got {_what(objective)}"
        )
    if method is None:
        full_data = getattr(target, "minibatch_fn", None) is None
        reverse = hasattr(objective, "fixed_loss")
        if reverse and full_data and family == MeanField():
            method = FixedDraws()
        else:
            # The other families have many more parameters, whose plain gradients stay
            # noisy at the optimum: sticking the landing lets the stopping rule see it.
            method = Stochastic(stick_the_landing=reverse and family != MeanField())
    is_method = all(hasattr(method, name) for name in ("init", "step", "summary", "window"))
    if isinstance(method, type) or not is_method:
        raise TypeError(
            f"method must be vi.FixedDraws(...) or vi.Stochastic(...), got {_what(method)}"
        )
    if init_params is not None and init_radius is not None:
        raise ValueError("give init_params or init_radius, not both")
    if init_radius is not None and not 0 < init_radius < float("inf"):
        raise ValueError(f"init_radius must be positive and finite, got {init_radius}")
    objective = objective.resolve(target)
    draws = getattr(getattr(objective, "estimator", None), "draws", None)
    if draws is not None:
        bad = first_nonfinite(draws)
        if bad is not None:
            raise ValueError(f"vi.Draws(draws): draws[{bad}] is not finite")
    return method, Problem(target, objective)


def _what(x) -> str:
    if isinstance(x, type):
        return f"the class {x.__name__}: call it, vi.{x.__name__}()"
    return repr(x) if isinstance(x, str) else type(x).__name__


def start(method, problem: Problem, init_params, keys, init_radius):
    """The state before the first step (``init_params`` jittered by ``init_radius``)."""
    if init_radius is not None:
        init_params = init_params._replace(loc=jitter(keys.jitter, init_params.loc, init_radius))
    return method.init(keys.init, problem.target, init_params, objective=problem.objective)


@programs.jit(static_argnames=("method", "init_radius", "num_eval_samples"))
def _fit_compiled(rng_key, problem, init_params, *, method, init_radius, num_eval_samples):
    keys = fit_keys(rng_key)
    state = start(method, problem, init_params, keys, init_radius)
    trace = empty_trace(method, init_params.loc.dtype)
    core, trace = advance(method, state._replace(problem=None), state.problem, keys.step, trace)
    return finish(method, core._replace(problem=state.problem), trace, keys.eval, num_eval_samples)


# With a progress bar, the fit runs in chunks of windows from Python, which redraws the bar
# between chunks: a host callback inside the loop cost ~0.6 ms per report on a CPU.


@programs.jit(static_argnames=("method", "init_radius"))
def _fit_start(rng_key, problem, init_params, *, method, init_radius):
    state = start(method, problem, init_params, fit_keys(rng_key), init_radius)
    return state, empty_trace(method, init_params.loc.dtype)


@programs.jit(static_argnames=("method", "max_windows"), donate_argnums=2)
def _fit_chunk(state, rng_key, trace, *, method, max_windows):
    core, trace = advance(
        method,
        state._replace(problem=None),
        state.problem,
        fit_keys(rng_key).step,
        trace,
        max_windows=max_windows,
    )
    return core._replace(problem=state.problem), trace


@programs.jit(static_argnames=("method", "num_eval_samples"))
def _fit_finish(state, rng_key, trace, *, method, num_eval_samples):
    return finish(method, state, trace, fit_keys(rng_key).eval, num_eval_samples)


def _fit_in_chunks(
    rng_key, problem, init_params, method, init_radius, num_eval_samples, check_interrupt
):
    max_windows = max(1, report_every(method.max_steps) // method.window)
    with ProgressBar(method.max_steps, 1, description=type(method).__name__) as bar:
        state, trace = _fit_start(
            rng_key, problem, init_params, method=method, init_radius=init_radius
        )
        while int(state.status) == 0:
            state, trace = _fit_chunk(state, rng_key, trace, method=method, max_windows=max_windows)
            bar.update(int(state.step), int(int(state.status) == 0))
            check_interrupt()
        output = _fit_finish(
            state, rng_key, trace, method=method, num_eval_samples=num_eval_samples
        )
        bar.finish(int(output.info.num_steps), STATUS_NAMES[int(output.info.status)])
        return jax.block_until_ready(output)


def fit(
    rng_key: jax.Array,
    target: Target,
    *,
    method=None,
    objective=None,
    init_params: Params | None = None,
    family=None,
    init_scale: float = 0.1,
    init_radius: float | None = None,
    num_eval_samples: int = 1024,
    progress: bool | None = None,
) -> FitResult:
    """Fits a Gaussian q to ``target`` (mean-field by default), by reverse or forward KL.

    ``fit`` is a driver over the method's ``init`` and ``step``, compiled as one program:
    with ``init_key, step_key, eval_key, jitter_key = jax.random.split(rng_key, 4)`` it
    runs ``state = method.init(init_key, target, init_params, objective=objective)``,
    then ``state, info = method.step(jax.random.fold_in(step_key, i), state)`` for
    ``i = 0, 1, ...`` until the state stops, and estimates the ELBO from
    ``num_eval_samples`` fresh draws of ``eval_key``. A loop of your own over ``step``
    gives the same numbers.

    Args:
      rng_key: a JAX key; the same key gives the same result, bit for bit.
      target: what to fit (``vi.from_numpyro``, ``vi.from_logdensity`` or a built-in target).
      method: ``vi.FixedDraws(...)`` or ``vi.Stochastic(...)``; by default
        ``FixedDraws()`` for ``ReverseKL`` with the mean-field family (L-BFGS to the optimum
        of the ELBO over fixed draws, no learning rate to tune), ``Stochastic(
        stick_the_landing=True)`` for ``ReverseKL`` with the other families, and
        ``Stochastic()`` otherwise.
      objective: ``vi.ReverseKL()`` (default; the ELBO, mode-seeking) or
        ``vi.ForwardKL(estimator)`` (mass-covering, with draws of the target from
        ``vi.Exact()``, ``vi.Draws(draws)`` or ``vi.SNIS()``).
      init_params: where q starts: ``vi.MeanFieldParams``, ``vi.FullRankParams``,
        ``vi.LowRankParams`` or an earlier ``FitResult`` (to continue that fit); default:
        centred on ``target.init_position``.
      family: q's family when ``init_params`` is not given: ``vi.MeanField()`` (default),
        ``vi.FullRank()`` (a Cholesky factor) or ``vi.LowRank(rank)`` (low rank plus
        diagonal).
      init_scale: q's initial standard deviation when ``init_params`` is not given.
      init_radius: when given, q's initial mean is ``target.init_position`` plus uniform
        noise in ``(-init_radius, init_radius)`` drawn from ``rng_key`` (NumPyro's
        ``init_to_uniform`` idea), so restarts with different keys start apart.
      num_eval_samples: fresh draws for the final ELBO estimate in ``result.info``.
      progress: show a progress bar, updated every 5 % of ``max_steps`` (at least 500
        steps apart); by default only on an interactive terminal.

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
    check_rng_key(rng_key)
    check_target(target)
    method, problem = resolve(target, method, objective, init_params, init_radius, family)
    check_num_eval_samples(num_eval_samples)
    init_params = initial_params(target, init_params, init_scale=init_scale, family=family)
    warn_if_new_objects(("fit", method, init_radius), problem, (rng_key, init_params))
    with held_interrupts() as check_interrupt:
        if progress_enabled(progress):
            output = _fit_in_chunks(
                rng_key,
                problem,
                init_params,
                method,
                init_radius,
                num_eval_samples,
                check_interrupt,
            )
        else:
            output = _fit_compiled(
                rng_key,
                problem,
                init_params,
                method=method,
                init_radius=init_radius,
                num_eval_samples=num_eval_samples,
            )
        return FitResult(output, target)
