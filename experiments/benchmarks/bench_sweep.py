"""The runner's overhead per run: ``vifit run`` of a sweep of many seeds against its fits alone.

A config of one 2-D target (``bimodal_2d``), reverse KL by the stochastic method, 200 steps
(``stopping: {max_steps: 200}``) and ``--runs`` seeds (default 10,000). Two processes, each
started fresh (JAX's start-up is in both, and cancels):

- ``vifit run``: the whole runner, a clean output directory: planning, the fits (one
  ``vi.fit_batch`` per chunk of 1,000 seeds), the diagnostics (4,096 draws each, vmapped over
  the chunk), the table's parts, ``metrics.csv``, figures and ``report.md``;
- ``fits alone``: ``vi.fit_batch`` over all the seeds with the runner's own options
  (``runner.fit_options``) and keys (``runner.batch_keys``), compilation included, as the
  runner compiles too; checked to give the runner's parameters.

overhead per run = (runner − fits alone) / runs. Target (issue): ≤ 2 ms. Then the interrupted
case: the run is killed (SIGINT) once its first part is written, and run again; the resumed
run must find that part and end with a ``metrics.csv`` byte-identical to the whole run's.

Usage:
  python experiments/benchmarks/bench_sweep.py                 # 10,000 runs (~2 min)
  python experiments/benchmarks/bench_sweep.py --quick         # 2,000 runs, records nothing
"""

import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CONFIG = """\
name: sweep
target: {{name: bimodal_2d, params: {{separation: 3.0}}}}
objectives:
  - {{name: reverse_kl, method: stochastic}}
optimizer: {{name: adam, learning_rate: 0.05}}
stopping: {{max_steps: 200}}
num_samples: 4
seeds: {{start: 0, stop: {runs}}}
"""


def fits_alone(config_path: str) -> None:
    """Runs in its own process (``--fits``): the runner's fits as one ``fit_batch``."""
    import vi

    vi.set_cpu_devices()
    start = time.perf_counter()
    import jax
    import numpy as np

    from vi.experiments import registry, runner
    from vi.experiments.config import load_experiment

    experiment = load_experiment(config_path, [])
    config = experiment.points[0].config
    target = registry.build_target(config.target)
    options = runner.fit_options(config, config.objectives[0])
    batch = vi.fit_batch(runner.batch_keys(list(config.seeds)).fit, target, **options)
    loc = np.asarray(jax.device_get(batch.params.loc))
    print(json.dumps({"seconds": time.perf_counter() - start, "loc": loc[:5].tolist()}))


def _vifit(config: pathlib.Path, out: pathlib.Path, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "vi", "run", str(config), "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, **kwargs)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--fits":
        fits_alone(sys.argv[2])
        return
    import numpy as np

    from experiments.benchmarks import record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 runs")
    record.add_arguments(parser)
    args = parser.parse_args()
    runs = 2_000 if args.quick else args.runs
    session = record.start(args)
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    config = work / "sweep.yaml"
    config.write_text(CONFIG.format(runs=runs))
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    start = time.perf_counter()
    whole = _vifit(config, work / "whole", stderr=subprocess.DEVNULL)
    assert whole.wait() == 0
    runner_s = time.perf_counter() - start
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--fits", str(config)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    fits_s = time.perf_counter() - start
    fits = json.loads(out.stdout.strip().splitlines()[-1])
    # The runner's first five runs (metrics.csv is in plan order: seed 0, 1, ...), from the
    # part that holds them.
    whole_dir = work / "whole" / "sweep"
    first = [line.split(",")[0] for line in (whole_dir / "metrics.csv").read_text().splitlines()]
    loc = {}
    for path in (whole_dir / "table").glob("part-*.npz"):
        with np.load(path) as part:
            loc.update(zip(part["run_id"].tolist(), part["params.loc"], strict=True))
    ours = np.stack([loc[run_id] for run_id in first[1:6]])
    same = float(np.max(np.abs(ours - np.asarray(fits["loc"]))))

    # Interrupted after its first part, then resumed.
    killed = work / "killed"
    process = _vifit(config, killed, stderr=subprocess.DEVNULL)
    table = killed / "sweep" / "table"
    while not list(table.glob("part-*.npz")) and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    code = process.wait()
    kept = len(list((killed / "sweep" / "table").glob("part-*.npz")))
    start = time.perf_counter()
    assert _vifit(config, killed, stderr=subprocess.DEVNULL).wait() == 0
    resume_s = time.perf_counter() - start
    identical = (killed / "sweep" / "metrics.csv").read_bytes() == (
        work / "whole" / "sweep" / "metrics.csv"
    ).read_bytes()
    shutil.rmtree(work)

    overhead_ms = (runner_s - fits_s) / runs * 1e3
    rows = [
        ["vifit run (whole runner)", runs, runner_s, runs / runner_s, None],
        ["fits alone (one fit_batch)", runs, fits_s, runs / fits_s, None],
        ["overhead per run", runs, None, None, overhead_ms],
    ]
    table = record.table(
        f"A sweep of {runs:,} runs: a 2-D target, 200 steps each, on CPU",
        ["", "runs", "seconds", "runs/s", "ms / run"],
        rows,
        "Each in a fresh process (JAX's start-up in both). The runner fits chunks of 1,000 "
        "seeds, diagnoses each chunk vmapped (4,096 draws a fit), writes a part of the table "
        "per chunk, metrics.csv, the figures (16 seeds a point drawn) and report.md. "
        f"max |Δ loc| runner vs fits alone, first 5 runs: {same:.2g}. Target (issue): "
        "overhead ≤ 2 ms a run.",
    )
    resume = record.table(
        "Interrupted after its first part, then resumed",
        ["exit code at SIGINT", "parts kept", "resume seconds", "metrics.csv byte-identical"],
        [[code, kept, resume_s, identical]],
        "SIGINT once the first part exists; the rerun fits only the chunks not yet stored.",
    )
    for t in (table, resume):
        print(json.dumps(t, indent=1))
    record.finish(
        session,
        "bench_sweep",
        [table, resume],
        jax_devices={"backend": "cpu", "devices": "2 × cpu"},
    )


if __name__ == "__main__":
    main()
