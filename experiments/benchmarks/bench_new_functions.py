"""Memory of repeated fits of new functions: a new ``lambda`` over new data at every call.

Each call of the loop below fits ``vi.from_logdensity(lambda x: ... data ..., init)`` for a
new dataset of ``--size`` floats; every call compiles again (the log density is a new
function, and its data are constants of the program), and vi warns. Each variant runs
``--calls`` calls in its own process and reports the resident memory (RSS) every 10 % of
the calls and at its peak:

- ``closure, cache 32``: vi's default, the compiled programs in a cache of 32 (least
  recently used dropped, with what their functions close over);
- ``closure, unbounded``: ``vi.set_cache_size`` past the number of calls, which is how
  ``jax.jit`` keeps programs (for the life of the function they were compiled for: the
  library before the cache); run for ``--unbounded-calls`` calls only, as it grows
  without bound (a process that dies is reported with the samples it took);
- ``Partial``: the data passed as an argument, ``jax.tree_util.Partial(fn, data)``, as the
  warning advises: one compilation for every dataset.

Target (issue 17): 1,000 calls stay under a stated ceiling.

Usage:
  python experiments/benchmarks/bench_new_functions.py                # 1,000 calls (over an hour
                                                                      # on 2 cores: each compiles)
  python experiments/benchmarks/bench_new_functions.py --quick        # 60 calls, records nothing
"""

import argparse
import json
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def loop(variant: str, calls: int, size: int) -> None:
    """Runs in its own process (``--loop``): the calls, then one JSON line of measurements."""
    import gc
    import warnings

    import jax
    import jax.numpy as jnp

    import vi
    from experiments.benchmarks.record import rss_mib

    if variant == "unbounded":
        vi.set_cache_size(calls + 1)
    method = vi.Stochastic(max_steps=100)
    init = jnp.zeros(2)

    def fn(data, x):
        return -0.5 * jnp.mean((x[0] - data) ** 2) - 0.5 * x[1] ** 2

    samples, peak, loc = [], 0.0, []
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(calls):
            data = jax.random.normal(jax.random.key(i), (size,)) + 1.0
            if variant == "partial":
                target = vi.from_logdensity(jax.tree_util.Partial(fn, data), init)
            else:
                target = vi.from_logdensity(lambda x, data=data: fn(data, x), init)
            result = vi.fit(jax.random.key(0), target, method=method)
            loc.append(float(result.params.loc[0]))
            del target, result, data
            if (i + 1) % max(1, calls // 10) == 0 or i + 1 == calls:
                gc.collect()
                samples.append([i + 1, round(rss_mib())])
                # Each sample as it is taken, so that a process that dies keeps its record.
                print(json.dumps(dict(sample=samples[-1])), flush=True)
            peak = max(peak, rss_mib())
    print(
        json.dumps(
            dict(
                samples=samples,
                peak=round(peak),
                seconds=time.perf_counter() - start,
                warnings=sum("compiles again" in str(w.message) for w in caught),
                cache=vi.cache_info()._asdict(),
                loc=loc,
            )
        )
    )


def run(variant: str, calls: int, size: int) -> dict:
    """One variant in its own process. A process that dies (XLA runs out of room for code
    when every program is kept) gives the samples it printed, ``crashed`` naming how it
    ended, and the rest as NaN."""
    command = [sys.executable, __file__, "--loop", variant, str(calls), str(size)]
    process = subprocess.run(command, capture_output=True, text=True)
    lines = [json.loads(line) for line in process.stdout.splitlines() if line.startswith("{")]
    if process.returncode == 0:
        return {**lines[-1], "crashed": None}
    samples = [line["sample"] for line in lines if "sample" in line]
    how = (
        f"signal {-process.returncode}" if process.returncode < 0 else f"exit {process.returncode}"
    )
    return dict(
        samples=samples or [[0, float("nan")]],
        peak=max((s[1] for s in samples), default=float("nan")),
        seconds=float("nan"),
        warnings=float("nan"),
        cache={"currsize": float("nan")},
        loc=[],
        crashed=f"died ({how}) after call {samples[-1][0] if samples else 0}, before {calls}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--unbounded-calls", type=int, default=200)
    parser.add_argument("--size", type=int, default=10_000, help="floats of data per call")
    parser.add_argument("--quick", action="store_true", help="60 calls; records nothing")
    parser.add_argument("--loop", nargs=3, help=argparse.SUPPRESS)
    from experiments.benchmarks import record

    record.add_arguments(parser)
    args = parser.parse_args()
    if args.loop:
        loop(args.loop[0], int(args.loop[1]), int(args.loop[2]))
        return
    if args.quick:
        args.calls, args.unbounded_calls = 60, 60
    session = record.start(args)
    variants = [
        ("closure, cache 32", "closure", args.calls),
        ("closure, unbounded", "unbounded", args.unbounded_calls),
        ("Partial", "partial", args.calls),
    ]
    rows, results = [], {}
    for label, variant, calls in variants:
        result = results[variant] = run(variant, calls, args.size)
        first, last = result["samples"][0], result["samples"][-1]
        slope = (last[1] - first[1]) / max(1, last[0] - first[0])
        print(f"{label}: {result['samples']}, peak {result['peak']} MiB", flush=True)
        if result["crashed"]:
            print(f"{label}: {result['crashed']}", flush=True)
        rows.append(
            [
                label,
                result["crashed"] or calls,
                first[1],
                last[1],
                result["peak"],
                slope,
                result["seconds"] / calls,
                result["warnings"],
                result["cache"]["currsize"],
            ]
        )
    # The same fits, whichever way they were compiled (the unbounded run is a prefix).
    closure, partial = results["closure"]["loc"], results["partial"]["loc"]
    same_length = len(closure) == len(partial)  # not when a variant died
    differences = [abs(a - b) for a, b in zip(closure, partial, strict=True)] if same_length else []
    difference = max(differences, default=float("nan"))
    table = record.table(
        f"{args.calls:,} fits, each of a new lambda over {args.size:,} new floats "
        "(vi.Stochastic(max_steps=100), 2-D)",
        [
            "variant",
            "calls",
            "RSS after 10 % (MiB)",
            "RSS at the end (MiB)",
            "peak RSS (MiB)",
            "growth per call (MiB)",
            "s per call",
            "recompile warnings",
            "programs kept",
        ],
        rows,
        note=(
            "RSS of the fitting process (JAX start-up included), sampled every 10 % of the "
            "calls after gc. Growth per call: from the 10 % sample to the end. The three "
            f"variants' fitted means differ by at most {difference:.2g} (cache 32 against Partial)."
        ),
    )
    print(record.markdown(table))
    record.finish(session, "bench_new_functions", [table])


if __name__ == "__main__":
    main()
