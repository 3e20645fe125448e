"""Seconds to a first fit in a fresh process, compilation included: vi against NumPyro.

Each contender runs in its own new Python process (so nothing is compiled yet), on eight
schools (non-centred, NumPyro model, float64), after its imports and model set-up:

- ``vi.fit default``: ``vi.fit(key, vi.from_numpyro(model, ...))`` (``vi.FixedDraws()``);
- ``vi.fit Stochastic()``: the same with ``method=vi.Stochastic()`` (stops itself);
- ``numpyro svi.run 10k``: NumPyro's recipe, ``SVI(model, AutoNormal, Adam(0.01),
  Trace_ELBO()).run(key, 10_000, progress_bar=False)``.

The child reports the first call's wall time and the seconds JAX spent compiling during
it (``compile_clock.CompileClock``). Each contender runs ``--repeats`` times; the table
gives medians. Target (issue 13): ``vi.fit`` default ≤ 1.5 s.

Usage:
  python experiments/benchmarks/bench_first_call.py [--repeats 3]
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from experiments.benchmarks import record  # noqa: E402

CHILD = """
import json, sys, time
import jax
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, {root!r})
from experiments import models
from experiments.benchmarks.compile_clock import CompileClock
import vi
clock = CompileClock()
y, sigma = models.eight_schools_data()
model = models.eight_schools_noncentred
key = jax.random.key(0)
if {name!r}.startswith("numpyro"):
    import numpyro.optim
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal
    svi = SVI(model, AutoNormal(model), numpyro.optim.Adam(0.01), Trace_ELBO())
    call = lambda: svi.run(key, 10_000, sigma, y=y, progress_bar=False).params
else:
    target = vi.from_numpyro(model, sigma, y=y)
    method = vi.Stochastic() if "Stochastic" in {name!r} else None
    call = lambda: vi.fit(key, target, method=method).params
mark = len(clock.spans)
start = time.perf_counter()
jax.block_until_ready(call())
print(json.dumps(dict(seconds=time.perf_counter() - start, compile=clock.seconds(mark))))
"""

CONTENDERS = ("vi.fit default", "vi.fit Stochastic()", "numpyro svi.run 10k")


def run_child(name: str) -> dict:
    code = CHILD.format(root=str(ROOT), name=name)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    record.add_arguments(parser)
    args = parser.parse_args()
    session = record.start(args)
    runs = {name: [] for name in CONTENDERS}
    for _ in range(args.repeats):  # interleaved, so drifts in load touch every contender
        for name in CONTENDERS:
            runs[name].append(run_child(name))
            print(name, runs[name][-1], flush=True)
    rows = [
        [
            name,
            round(statistics.median(r["seconds"] for r in results), 2),
            round(statistics.median(r["compile"] for r in results), 2),
        ]
        for name, results in runs.items()
    ]
    table = record.table(
        f"first call on eight schools, float64, fresh process (median of {args.repeats})",
        ["contender", "first call (s)", "of which compiling (s)"],
        rows,
        "Target (issue 13): vi.fit default ≤ 1.5 s.",
    )
    record.finish(session, "bench_first_call", [table])


if __name__ == "__main__":
    main()
