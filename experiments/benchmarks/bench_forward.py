"""Time per step of forward-KL fits against the reverse fit, and the cost of diagnosing 1024 fits.

Issue 5. Part 1: seconds per step of ``vi.fit(key, target, objective=vi.ForwardKL(estimator),
method=vi.Stochastic(optimizer, num_samples=S, max_steps=steps))`` (estimators ``vi.SNIS()``
and ``vi.Exact()``) and of the same call with ``objective=vi.ReverseKL()`` (reverse KL, the
stochastic method) on the built-in targets ``bimodal_2d`` and ``mixture_10d``, with each one's
default draws per step (256 for forward KL, 8 for reverse) and at equal draws (8 and 256 for
every fit). Each fit is timed twice: through ``vi.fit`` as a user calls it (per step =
wall / steps run: its stopping rule, ``vi.Stopping()``, may end it before ``max_steps``, and
the call's fixed costs count), and as ``steps`` exact steps of the same compiled fit that
cannot stop early (``stopping=vi.Stopping(num_decays=steps)``: the stopping rule runs every
window but never stops; ``vi.fit`` called inside ``jax.jit``, so the call's host-side checks
are traced once and left out), which is the per-step cost alone. Beside them: the value and
gradient of each loss alone at one step (``objective.loss(target, S)``, the loss
``vi.Stochastic`` steps on, so the loop's overhead shows), and the target's log density
(value and gradient) and exact sampler at S points.

Part 2: the cost of diagnostics for B = 1024 fits at once: ``jit(vmap(pareto_smooth))`` on (1024, N)
log-ratios, N = 1000 and 4000; ``moment_errors``, ``mode_coverage`` and ``target_mass_in_hdr``
over 1024 fitted parameters; and ``jit(vmap(lambda k, p: vi.diagnose(k, target, p)))``
when ``vi.diagnose`` exists.

Compilation is excluded everywhere (a first call compiles; its compile time is shown).
Every fit gets the same ``optax.adam(1e-2)`` object: vi keys its compiled programs on the
method, which holds its optimizer by identity, so a new ``optax.adam(1e-2)`` at each call would
compile again (``vi.Stochastic()``'s default optimizer is one shared object, so the default
does not). Ratios are within one run.

The tables are recorded in ``results/bench_forward.json`` (``record.py``); the last recorded
run is in RESULTS.md, section ``bench_forward.py``.

Usage:
  python experiments/benchmarks/bench_forward.py            # full run (a few minutes)
  python experiments/benchmarks/bench_forward.py --quick    # smoke run, < 1 min, records nothing
"""

import argparse
import datetime
import os
import pathlib
import platform
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import jax
import jax.numpy as jnp
import optax

import vi
from experiments.benchmarks import record
from vi.diagnostics.moments import mode_coverage, moment_errors, target_mass_in_hdr
from vi.diagnostics.psis import pareto_smooth
from vi.families import mean_field
from vi.families.mean_field import MeanFieldParams
from vi.targets.mixture import bimodal_2d, mixture_10d

OPTIMIZER = optax.adam(1e-2)
OBJECTIVES = {
    "reverse": vi.ReverseKL(),
    "snis": vi.ForwardKL(vi.SNIS()),
    "exact": vi.ForwardKL(vi.Exact()),
}
NUM_FITS = 1024
STEP_COLUMNS = (
    "target | fit | S | steps run | fit µs/step | loop µs/step | loss µs/step | "
    "loop / reverse (S=8) | loop / reverse (same S) | compile s"
).split(" | ")
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_spans: list[tuple[float, float]] = []
jax.monitoring.register_event_time_span_listener(
    lambda event, start, end, **kw: _spans.append((start, end)) if event in COMPILE_EVENTS else None
)


def compile_seconds(mark: int) -> float:
    """Seconds of tracing, lowering and compiling since ``mark`` (the union of the spans)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(_spans[mark:]):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """(median seconds of ``repeats`` calls after a first one, compile s of the first, output)."""
    mark = len(_spans)
    out = jax.block_until_ready(fn())
    compile_s = compile_seconds(mark)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), compile_s, out


# ------------------------------------------------------------- part 1: seconds per step


def time_fit(kind, target, num_samples, steps, repeats) -> dict:
    key = jax.random.key(0)
    objective = OBJECTIVES[kind]
    method = vi.Stochastic(OPTIMIZER, num_samples=num_samples, max_steps=steps)
    fit = lambda: vi.fit(key, target, method=method, objective=objective, progress=False)
    wall, compile_s, info = timed(lambda: fit().info, repeats)
    steps_run = int(info.num_steps)

    # The stopping rule runs every window but never stops: exactly ``steps`` steps.
    exact_method = vi.Stochastic(
        OPTIMIZER,
        num_samples=num_samples,
        max_steps=steps,
        stopping=vi.Stopping(num_decays=steps),
    )
    exact = jax.jit(
        lambda k: (
            vi.fit(
                k,
                target,
                method=exact_method,
                objective=objective,
                num_eval_samples=2,
                progress=False,
            ).info
        )
    )
    exact_wall, _, exact_info = timed(lambda: exact(key), repeats)
    assert int(exact_info.num_steps) == steps, int(exact_info.num_steps)

    # The loss ``vi.Stochastic`` steps on, and its draw function (None: it draws from its key).
    loss_fn, draw_fn = objective.resolve(target).loss(target, num_samples)
    if draw_fn is not None:
        loss_from_draws = loss_fn
        loss_fn = lambda params, rng_key: loss_from_draws(params, draw_fn(rng_key, params))
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
    init = mean_field.init(target.init_position, scale=0.1)
    step_keys = jax.random.split(key, 100)
    one_loss = jax.jit(
        lambda p: jax.lax.fori_loop(
            0, 100, lambda i, p: _nudge(p, value_and_grad(p, step_keys[i])[1]), p
        )
    )
    loss_wall, _, _ = timed(lambda: one_loss(init), repeats)
    return dict(
        fit_step=wall / steps_run,
        steps_run=steps_run,
        compile=compile_s,
        exact_step=exact_wall / steps,
        loss_step=loss_wall / 100,
    )


def _nudge(params: MeanFieldParams, grad: MeanFieldParams) -> MeanFieldParams:
    # Each repetition depends on the last, so XLA cannot hoist the loss out of the loop.
    return jax.tree.map(lambda p, g: p - 1e-9 * g, params, grad)


def time_target_parts(target, num_samples, repeats) -> dict:
    x = target.init_position + jax.random.normal(jax.random.key(2), (num_samples, target.dim))
    density = jax.value_and_grad(lambda x: jnp.sum(jax.vmap(target.logdensity_fn)(x)))
    looped_density = jax.jit(
        lambda x: jax.lax.fori_loop(0, 100, lambda i, x: x - 1e-9 * density(x)[1], x)
    )
    sample = jax.jit(
        lambda k: jax.lax.fori_loop(
            0, 100, lambda i, s: s + target.sample_fn(jax.random.fold_in(k, i), num_samples), x
        )
    )
    density_wall, _, _ = timed(lambda: looped_density(x), repeats)
    sample_wall, _, _ = timed(lambda: sample(jax.random.key(3)), repeats)
    return dict(density=density_wall / 100, sample=sample_wall / 100)


def part_one(targets, sample_counts, steps, repeats) -> list[dict]:
    """Times every fit and the target's parts; prints and returns the two tables."""
    step_rows, part_rows = [], []
    for name, target in targets.items():
        rows = {}
        for kind in ("reverse", "snis", "exact"):
            for s in sample_counts:
                rows[(kind, s)] = time_fit(kind, target, s, steps, repeats)
        base = rows[("reverse", 8)]["exact_step"]
        for (kind, s), r in rows.items():
            same = rows[("reverse", s)]["exact_step"]
            default = (
                " (default)" if (kind, s) in (("reverse", 8), ("snis", 256), ("exact", 256)) else ""
            )
            label = "reverse KL (stochastic)" if kind == "reverse" else f"forward KL, {kind}"
            step_rows.append(
                [
                    name,
                    f"{label}{default}",
                    s,
                    r["steps_run"],
                    1e6 * r["fit_step"],
                    1e6 * r["exact_step"],
                    1e6 * r["loss_step"],
                    r["exact_step"] / base,
                    r["exact_step"] / same,
                    r["compile"],
                ]
            )
    for name, target in targets.items():
        for s in sample_counts:
            parts = time_target_parts(target, s, repeats)
            part_rows.append([name, s, 1e6 * parts["density"], 1e6 * parts["sample"]])
    tables = [
        record.table(
            f"Seconds per step, {steps} steps, Adam(1e-2) (µs)",
            STEP_COLUMNS,
            step_rows,
            "fit: `vi.fit` wall / steps run (`vi.Stopping()` on; fixed costs of the call "
            "included). loop: the same fit under `jax.jit`, exactly the steps (its stopping "
            "rule never stops). loss: the loss's value and gradient alone. Ratios: loop µs/step "
            "over the reverse fit's at its default S = 8, and at the same S.",
        ),
        record.table(
            "The target alone at S points (µs per call)",
            ["target", "S", "log density + gradient", "exact sampler"],
            part_rows,
        ),
    ]
    for table in tables:
        print("\n" + record.markdown(table))
    return tables


# ------------------------------------------------------------- part 2: diagnostics of 1024 fits


def fitted_params(target: vi.Target, rng_key: jax.Array, count: int) -> MeanFieldParams:
    """``count`` plausible fits: means near the target's mean, scales near its sd (timing does
    not depend on how good they are)."""
    loc_key, scale_key = jax.random.split(rng_key)
    sd = jnp.sqrt(target.truth.variance)
    loc = target.truth.mean + sd * jax.random.normal(loc_key, (count, target.dim))
    log_scale = jnp.log(sd) + 0.3 * jax.random.normal(scale_key, (count, target.dim))
    return MeanFieldParams(loc, log_scale)


def log_ratios(target, params, rng_key, num_draws):
    def one(key, p):
        x = mean_field.sample(key, p, num_draws)
        return jax.vmap(target.logdensity_fn)(x) - mean_field.log_prob(p, x)

    keys = jax.random.split(rng_key, params.loc.shape[0])
    return jax.jit(jax.vmap(one))(keys, params)


def part_two(targets, draw_counts, repeats) -> dict:
    """Times the diagnostics of NUM_FITS fits; prints and returns the table."""
    cells = []
    diagnose = getattr(vi, "diagnose", None)
    for name, target in targets.items():
        params = fitted_params(target, jax.random.key(0), NUM_FITS)
        truth = target.truth
        rows = []
        for n in draw_counts:
            ratios = log_ratios(target, params, jax.random.key(1), n)
            rows.append(("psis", n, jax.jit(jax.vmap(pareto_smooth)), (ratios,)))
        rows.append(
            ("moment_errors", "", jax.jit(jax.vmap(moment_errors, (0, None))), (params, truth))
        )
        rows.append(
            ("mode_coverage", "", jax.jit(jax.vmap(mode_coverage, (0, None))), (params, truth))
        )
        for n in draw_counts:
            draws = target.sample_fn(jax.random.key(2), n)
            mass = jax.jit(jax.vmap(target_mass_in_hdr, (0, None)))
            rows.append(("target_mass_in_hdr (shared draws of p)", n, mass, (params, draws)))
        if diagnose is not None:
            for n in draw_counts:
                fn = jax.jit(jax.vmap(lambda k, p, n=n, t=target: diagnose(k, t, p, num_samples=n)))
                keys = jax.random.split(jax.random.key(3), NUM_FITS)
                rows.append(("vi.diagnose", n, fn, (keys, params)))
        for label, n, fn, args in rows:
            wall, compile_s, _ = timed(lambda fn=fn, args=args: fn(*args), repeats)
            cells.append([name, label, n or None, 1e3 * wall, 1e6 * wall / NUM_FITS, compile_s])
        if diagnose is None:
            cells.append([name, "vi.diagnose (not available)", None, None, None, None])
    table = record.table(
        f"Diagnostics of B = {NUM_FITS} fits at once (one jit(vmap) call each)",
        ["target", "diagnostic", "N", "ms per call", "µs per fit", "compile s"],
        cells,
    )
    print("\n" + record.markdown(table))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, < 1 min")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    record.add_arguments(parser)
    args = parser.parse_args()
    session = record.start(args)
    targets = {"bimodal_2d": bimodal_2d(), "mixture_10d": mixture_10d()}
    if args.quick:
        targets = {"bimodal_2d": targets["bimodal_2d"]}
        steps, repeats, sample_counts, draw_counts = (
            args.steps or 100,
            args.repeats or 2,
            (8,),
            (1000,),
        )
    else:
        steps, repeats, sample_counts, draw_counts = (
            args.steps or 2000,
            args.repeats or 5,
            (8, 256),
            (1000, 4000),
        )
    print("## bench_forward: forward-KL step cost and batched diagnostics (issue 5)\n")
    print(f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"- command: `python {' '.join(sys.argv)}`")
    print(
        f"- machine: {platform.machine()}, nproc = {os.cpu_count()}, load average at start: "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    print(
        f"- jax {jax.__version__}, backend {jax.default_backend()}, {len(jax.devices())} "
        f"device(s); median of {repeats} timed calls; vi.diagnose "
        f"{'present' if hasattr(vi, 'diagnose') else 'absent'}"
    )
    tables = part_one(targets, sample_counts, steps, repeats)
    tables.append(part_two(targets, draw_counts, repeats))
    print(f"\n- load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    record.finish(session, "bench_forward", tables)


if __name__ == "__main__":
    main()
