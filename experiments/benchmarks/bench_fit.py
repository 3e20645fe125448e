"""Per-step time of vi's stochastic fit against NumPyro SVI, BlackJAX and a hand-written floor.

Every contender does the same work: ``num_steps`` steps of Adam(1e-2) on the reparameterised
ELBO of a mean-field Gaussian with ``S`` fresh draws per step, from the same start, and
returns each step's ELBO estimate (vi's trace, NumPyro's losses, BlackJAX's infos). vi runs
``vi.fit`` with ``vi.Stochastic(adam, num_samples=S, max_steps=num_steps,
stopping=vi.Stopping(num_decays=num_steps))``: the stopping rule runs after every 250-step
window but never stops the fit early. vi,
BlackJAX and the floor evaluate the same log-density code (``vi.from_numpyro(...)
.logdensity_fn``, NumPyro's potential); rows marked ``[hand]`` use a hand-written jnp formula
instead, ``[batch]`` one that takes all S draws at once. NumPyro runs its own model and
``AutoNormal`` guide. The floor is a ``lax.scan`` over the optax steps and nothing else:
``floor`` computes the gradient only (XLA then drops the log density's value), ``floor,
value`` also returns each step's ELBO, as the others do; each comes with keys split up front
and, as ``small buffers``, with keys split in the carry and values returned in blocks, with
``jax.random``'s draws or (``vi sampler``) with the straight-line Threefry and Box-Muller of
``vi.backend`` (which vi's steps no longer use: see RESULTS.md).

Per-step times exclude compilation: a warm-up call compiles, then each contender is timed
``repeats`` times, the contenders interleaved in a rotating order, and the median (and the
fastest call) is taken. Compile time (tracing + lowering + XLA compile, from
``jax.monitoring``) is reported apart. ``svi.run`` builds a new jitted function on every
call, so each of its calls compiles again; its per-step time is (wall - compile) / steps and
includes ``svi.init``. Ratios are within this one run (absolute times on a shared machine
are noisy, ratios less so).

The summary tables, and each case's table folded away, are recorded in
``results/bench_fit.json`` (``record.py``).

Usage:
  python experiments/benchmarks/bench_fit.py            # all models, S = 1 and 8
  python experiments/benchmarks/bench_fit.py --quick    # smoke run, < 1 min, records nothing
"""

import argparse
import contextlib
import hashlib
import io
import pathlib
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal

import vi
from experiments.benchmarks import record
from experiments.benchmarks.compile_clock import CompileClock
from experiments.benchmarks.fit_cases import Case, check_hand_formulas, make_cases
from vi.backend import _threefry
from vi.families import mean_field

LEARNING_RATE = 1e-2


CLOCK = CompileClock()


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, compile seconds) of one call, waiting for its result."""
    mark = len(CLOCK.spans)
    start = time.perf_counter()
    jax.block_until_ready(fn())
    wall = time.perf_counter() - start
    return wall, CLOCK.seconds(mark)


# The contenders. Each returns a zero-argument function that runs num_steps steps from the
# same start and returns something to wait on.


def vi_contender(logdensity_fn, init_params, num_samples, num_steps):
    method = vi.Stochastic(
        optax.adam(LEARNING_RATE),
        num_samples=num_samples,
        max_steps=num_steps,
        stopping=vi.Stopping(num_decays=num_steps),  # runs every window but never stops
    )
    target = vi.Target(logdensity_fn, init_params.loc)
    options = dict(method=method, init_params=init_params, num_eval_samples=2, progress=False)
    return lambda: vi.fit(jax.random.key(0), target, **options).params


def _vi_split(rng_key):
    """Two keys from one by the straight-line Threefry (``jax.random.split``'s values)."""
    data = jax.random.key_data(rng_key)
    y0, y1 = _threefry.threefry2x32(data, jnp.zeros(2, jnp.uint32), jnp.arange(2, dtype=jnp.uint32))
    wrap = lambda i: jax.random.wrap_key_data(jnp.stack([y0[i], y1[i]]), impl="threefry2x32")
    return wrap(0), wrap(1)


def _vi_normal(rng_key, shape, dtype=jnp.float32):
    return _threefry.normal(jax.random.key_data(rng_key), shape, dtype)


def blackjax_contender(logdensity_fn, init_params, num_samples, num_steps):
    algorithm = blackjax.meanfield_vi(logdensity_fn, optax.adam(LEARNING_RATE), num_samples)

    @jax.jit
    def run(rng_key, params):
        state = algorithm.init(params.loc)._replace(mu=params.loc, rho=params.log_scale)

        def one_step(state, step_key):
            state, info = algorithm.step(step_key, state)
            return state, info.elbo

        return jax.lax.scan(one_step, state, jax.random.split(rng_key, num_steps))

    return lambda: run(jax.random.key(0), init_params)


def floor_contender(
    batch_logdensity_fn,
    init_params,
    num_samples,
    num_steps,
    *,
    with_value,
    small_buffers,
    vi_sampler=False,
):
    """The least a step can do: draws, the log density's gradient, one Adam update.

    ``with_value`` also computes the ELBO estimate of each step and returns them (as vi,
    NumPyro and BlackJAX do); without it XLA drops the log density's value entirely.
    ``small_buffers`` splits each step's key off the last one in the carry, draws a step
    ahead and returns the values from scans of at most 512 bytes of them, instead of
    scanning over keys split up front: XLA:CPU then runs a small model's step on one thread
    (see vi's stochastic loop).
    ``vi_sampler`` splits keys and draws normals with the straight-line Threefry and
    Box-Muller of ``vi.backend._threefry`` instead of ``jax.random``.
    """
    optimizer = optax.adam(LEARNING_RATE)
    split, normal = (_vi_split, _vi_normal) if vi_sampler else (jax.random.split, jax.random.normal)

    def loss_fn(params, eps):
        x = params.loc + jnp.exp(params.log_scale) * eps
        return -jnp.mean(batch_logdensity_fn(x)) - jnp.sum(params.log_scale)

    def draw(step_key, params):
        return normal(step_key, (num_samples, *params.loc.shape), params.loc.dtype)

    def update(state, eps):
        params, opt_state = state
        if with_value:
            value, grad = jax.value_and_grad(loss_fn)(params, eps)
        else:
            value, grad = None, jax.grad(loss_fn)(params, eps)
        updates, opt_state = optimizer.update(grad, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    def one_step(state, step_key):
        return update(state, draw(step_key, state[0]))

    def carried_key_step(carry, _):
        # The next step's draws are made a step ahead and carried, as vi does: XLA would
        # otherwise copy vi's straight-line hash into every use of the draws.
        state, rng_key, eps = carry
        rng_key, step_key = split(rng_key)
        next_eps = draw(step_key, state[0])
        state, value = update(state, eps)
        return (state, rng_key, next_eps), value

    @jax.jit
    def run(rng_key, params):
        state = (params, optimizer.init(params))
        if not small_buffers:
            return jax.lax.scan(one_step, state, jax.random.split(rng_key, num_steps))
        most = 512 // params.loc.dtype.itemsize
        block = max(n for n in range(1, most + 1) if num_steps % n == 0)

        def one_block(carry, _):
            return jax.lax.scan(carried_key_step, carry, length=block)

        rng_key, step_key = split(rng_key)
        carry = (state, rng_key, draw(step_key, params))
        return jax.lax.scan(one_block, carry, length=num_steps // block)

    return lambda: run(jax.random.key(0), init_params)


def numpyro_contenders(case: Case, num_samples: int, num_steps: int) -> dict[str, Callable]:
    guide = AutoNormal(case.model, init_scale=0.1)
    svi = SVI(case.model, guide, optax.adam(LEARNING_RATE), Trace_ELBO(num_particles=num_samples))
    args, kwargs = case.args, case.kwargs

    def run_with_bar():
        with contextlib.redirect_stderr(io.StringIO()):
            return svi.run(jax.random.key(0), num_steps, *args, progress_bar=True, **kwargs).params

    def run_without_bar():
        return svi.run(jax.random.key(0), num_steps, *args, progress_bar=False, **kwargs).params

    def run_inside_jit(rng_key):
        # The losses are returned so that XLA computes them, as every other contender does.
        result = svi.run(rng_key, num_steps, *args, progress_bar=False, **kwargs)
        return result.params, result.losses

    jitted_run = jax.jit(run_inside_jit)
    update = jax.jit(lambda state: svi.update(state, *args, **kwargs))

    def update_loop():
        state = svi.init(jax.random.key(0), *args, **kwargs)
        for _ in range(num_steps):
            state, _ = update(state)
        return state

    return {
        "numpyro svi.run (progress bar)": run_with_bar,
        "numpyro svi.run (progress_bar=False)": run_without_bar,
        "numpyro jit(svi.run(progress_bar=False))": lambda: jitted_run(jax.random.key(0)),
        "numpyro Python loop, jit(svi.update)": update_loop,
    }


class Row(NamedTuple):
    name: str
    kind: str  # "vi", "peer", "floor" or "floor+value"
    per_step_s: float  # median over the timed calls
    compile_s: float
    note: str = ""
    min_per_step_s: float = np.nan


def bench_case(case: Case, num_samples: int, repeats: int) -> list[Row]:
    target = vi.from_numpyro(case.model, *case.args, **case.kwargs)
    check_hand_formulas(case, target)
    init_params = mean_field.init(target.init_position, scale=0.1)
    n = case.num_steps
    numpyro_ld = target.logdensity_fn
    hand_ld = case.hand_logdensity_fn

    contenders: dict[str, tuple[str, Callable]] = {}
    skipped: list[Row] = []
    for label, ld in (("[numpyro ld]", numpyro_ld), ("[hand]", hand_ld)):
        try:
            fn = vi_contender(ld, init_params, num_samples, n)
            jax.eval_shape(fn)
            contenders[f"vi fit {label}"] = ("vi", fn)
        except ValueError as err:
            skipped.append(Row(f"vi fit {label}", "vi", np.nan, np.nan, str(err)))
    for name, fn in numpyro_contenders(case, num_samples, n).items():
        contenders[name] = ("peer", fn)
    contenders["blackjax meanfield_vi scan [numpyro ld]"] = (
        "peer",
        blackjax_contender(numpyro_ld, init_params, num_samples, n),
    )
    contenders["blackjax meanfield_vi scan [hand]"] = (
        "peer",
        blackjax_contender(hand_ld, init_params, num_samples, n),
    )
    floors = {"[numpyro ld]": jax.vmap(numpyro_ld), "[hand]": jax.vmap(hand_ld)}
    if case.batch_logdensity_fn is not None:
        floors["[batch]"] = case.batch_logdensity_fn
    for with_value, kind in ((False, "floor"), (True, "floor+value")):
        for small_buffers, vi_sampler in ((False, False), (True, False), (True, True)):
            for label, batch_ld in floors.items():
                name = "floor scan+adam" + ", value" * with_value
                name += ", small buffers" * small_buffers + ", vi sampler" * vi_sampler
                fn = floor_contender(
                    batch_ld,
                    init_params,
                    num_samples,
                    n,
                    with_value=with_value,
                    small_buffers=small_buffers,
                    vi_sampler=vi_sampler,
                )
                contenders[f"{name} {label}"] = (kind, fn)

    names = list(contenders)
    compile_s = {}
    for name in names:
        _, compile_s[name] = timed(contenders[name][1])
    runs: dict[str, list[float]] = {name: [] for name in names}
    compiles_each_call: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            wall, compile_part = timed(contenders[name][1])
            runs[name].append(wall - compile_part)
            compiles_each_call[name].append(compile_part)
    rows = []
    for name in names:
        per_call_compile = statistics.median(compiles_each_call[name])
        note = (
            f"recompiles every call ({per_call_compile:.2f} s)" if per_call_compile > 0.05 else ""
        )
        median, fastest = statistics.median(runs[name]) / n, min(runs[name]) / n
        rows.append(Row(name, contenders[name][0], median, compile_s[name], note, fastest))
    return rows + skipped


def print_case(case: Case, num_samples: int, rows: list[Row]) -> tuple[dict, dict]:
    """Prints one case's table; returns its summary and the table."""
    timed_rows = [r for r in rows if not np.isnan(r.per_step_s)]
    fastest = lambda kinds: min(
        (r for r in timed_rows if r.kind in kinds), key=lambda r: r.per_step_s
    )
    floor, best_peer = fastest({"floor"}), fastest({"peer"})
    cells = [
        [
            r.name,
            1e6 * r.per_step_s,
            1e6 * r.min_per_step_s,
            r.per_step_s / floor.per_step_s,
            r.per_step_s / best_peer.per_step_s,
            r.compile_s,
            r.note,
        ]
        for r in rows
    ]
    table = record.table(
        f"{case.name}, S = {num_samples}, {case.num_steps} steps",
        ["contender", "µs/step", "(min)", "x floor", "x best peer", "compile s", "note"],
        cells,
        f"floor = {floor.name}; best peer = {best_peer.name}.",
        detail=True,
    )
    print("\n" + record.markdown(table))
    summary = {"model": case.name, "S": num_samples}
    for stat in ("per_step_s", "min_per_step_s"):
        t = {r.name: getattr(r, stat) for r in rows}
        best = lambda names, t=t: min(names, key=t.__getitem__)
        vi_names = ["vi fit [numpyro ld]", "vi fit [hand]"]
        peers = [r.name for r in timed_rows if r.kind == "peer"]
        floors = [r.name for r in timed_rows if r.kind == "floor"]
        value_floors = [r.name for r in timed_rows if r.kind == "floor+value"]
        same_ld = lambda names: [name for name in names if name.endswith("[numpyro ld]")]
        summary[stat] = dict(
            vi=t[vi_names[0]],
            vi_best=t[best(vi_names)],
            floor=t[best(same_ld(floors))],
            floor_value=t[best(same_ld(value_floors))],
            floor_best=t[best(floors)],
            peer_name=best([name for name in peers if "[hand]" not in name]),
            peer_best=t[best(peers)],
        )
        summary[stat]["peer"] = t[summary[stat]["peer_name"]]
    return summary, table


def print_summary(summaries: list[dict]) -> list[dict]:
    """Prints and returns the summary tables: medians, then fastest calls (folded away)."""
    columns = [
        "model",
        "S",
        "vi",
        "floor",
        "vi / floor",
        "floor+value",
        "vi / floor+value",
        "best peer",
        "vi / best peer",
        "best vi / best floor (any ld)",
        "best vi / best peer (any ld)",
    ]
    targets = (
        "Targets (issue 3): vi ≤ 1.0x the best peer and ≤ 1.1x the floor. "
        "floor = the faster gradient-only floor; floor+value the faster one that also computes "
        "each step's ELBO, as vi's trace does (both on NumPyro's potential)."
    )
    tables = []
    for stat, label in (("per_step_s", "median"), ("min_per_step_s", "fastest call")):
        rows = []
        for summary in summaries:
            s = summary[stat]
            rows.append(
                [
                    summary["model"],
                    summary["S"],
                    1e6 * s["vi"],
                    1e6 * s["floor"],
                    s["vi"] / s["floor"],
                    1e6 * s["floor_value"],
                    s["vi"] / s["floor_value"],
                    f"{1e6 * s['peer']:.1f} ({s['peer_name']})",
                    s["vi"] / s["peer"],
                    s["vi_best"] / s["floor_best"],
                    s["vi_best"] / s["peer_best"],
                ]
            )
        title = (
            f"Summary ({label} of each contender): µs per step; same log-density code "
            "(NumPyro's potential) unless noted"
        )
        median = stat == "per_step_s"
        note = targets if median else ""
        tables.append(record.table(title, columns, rows, note, detail=not median))
        print("\n" + record.markdown(tables[-1]))
    return tables


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer models and steps")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per contender")
    parser.add_argument(
        "--big-steps", type=int, default=300, help="steps for logistic N=50000 D=100"
    )
    parser.add_argument("--samples", type=int, nargs="+", default=None, help="draws per step")
    parser.add_argument("--only", default="", help="only the models whose name contains this")
    record.add_arguments(parser)
    args = parser.parse_args()
    session = record.start(args)
    repeats = args.repeats or (1 if args.quick else 7)
    samples = args.samples or ([8] if args.quick else [1, 8])

    device = jax.devices()[0]
    print(
        f"jax {jax.__version__}, optax {optax.__version__}, blackjax {blackjax.__version__}, "
        f"numpyro {sys.modules['numpyro'].__version__}; {device.platform} ({device.device_kind}), "
        f"{platform.machine()}; {repeats} timed calls per contender, median"
    )
    sources = pathlib.Path(vi.__file__).parent
    digests = {
        path: hashlib.sha256((sources / path).read_bytes()).hexdigest()[:10]
        for path in ("fitting/stochastic.py", "fitting/loop.py", "objectives/elbo.py")
        if (sources / path).exists()
    }
    print("vi sources measured (sha256[:10]): " + ", ".join(f"{p} {d}" for p, d in digests.items()))
    summaries, case_tables = [], []
    for case in make_cases(args.quick, args.big_steps):
        if args.only not in case.name:
            continue
        for num_samples in samples:
            rows = bench_case(case, num_samples, repeats)
            summary, table = print_case(case, num_samples, rows)
            summaries.append(summary)
            case_tables.append(table)
            sys.stdout.flush()
    record.finish(session, "bench_fit", print_summary(summaries) + case_tables)


if __name__ == "__main__":
    main()
