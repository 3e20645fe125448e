"""Large batches in bounded memory: ``vi.fit_batch`` at B = 10^3 … 10^5, whole and in chunks.

B fits of Bayesian logistic regression (N = 1000, D = 10, one dataset, NumPyro's potential),
``--steps`` steps of Adam(1e-2) with one draw per step and no stopping rule, on every local
device. Each case runs in a fresh process, so that its peak resident memory (``VmHWM``) is its
own: JAX, the compiled programs and the batch. Cases:

- ``auto``: ``vi.fit_batch``'s default chunking (the whole batch when it fits in half the
  free memory, measured on the program compiled for 4,096 members);
- ``chunk_size=C``: chunks of C members, in turn, each handed to the host before the next;
- fits/s = B / seconds of the call, its compilations included (a call is one or two
  compilations and the run; the first-call cost is part of what a user waits for).

Usage:
  python experiments/benchmarks/bench_chunked.py            # B up to 10^5 (~6 min, 2 cores)
  python experiments/benchmarks/bench_chunked.py --quick    # smoke run, B up to 10^3
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

NUM_DATA, DIM = 1000, 10


def one_case(batch: int, chunk_size: int | None, steps: int) -> dict:
    """Runs in its own process (``--case``): one ``fit_batch`` call, timed, and its memory."""
    import vi

    vi.set_cpu_devices()
    import jax
    import numpy as np
    import optax

    from experiments import models

    x, y = models.logistic_data(NUM_DATA, DIM, 0)
    target = vi.from_numpyro(models.logistic_regression, x, y=y)
    keys = jax.random.split(jax.random.key(0), batch)
    method = vi.Stochastic(optax.adam(1e-2), num_samples=1, max_steps=steps, stopping=None)
    start = time.perf_counter()
    result = vi.fit_batch(
        keys, target, method=method, num_eval_samples=2, chunk_size=chunk_size, progress=False
    )
    loc = np.asarray(result.params.loc)
    seconds = time.perf_counter() - start
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024
    return {
        "seconds": seconds,
        "peak_bytes": peak,
        "finite": bool(np.isfinite(loc).all()),
        "first_loc": loc[:3].tolist(),
        "devices": len(jax.local_devices()),
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
    }


def run_case(batch: int, chunk_size: int | None, steps: int) -> dict:
    command = [sys.executable, __file__, "--case", str(batch), str(chunk_size), str(steps)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import numpy as np

    if len(sys.argv) > 1 and sys.argv[1] == "--case":
        batch, chunk, steps = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
        print(json.dumps(one_case(batch, None if chunk == "None" else int(chunk), steps)))
        return
    from experiments.benchmarks import record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="smoke run: B up to 10^3")
    record.add_arguments(parser)
    args = parser.parse_args()
    session = record.start(args)
    cases = [(100, None), (1_000, None), (10_000, None), (100_000, None), (100_000, 10_000)]
    if args.quick:
        cases = [(100, None), (1_000, None), (1_000, 250)]
    rows, by_batch = [], {}
    for batch, chunk in cases:
        out = run_case(batch, chunk, args.steps)
        same = None
        if batch in by_batch:  # the same fits, whatever the chunks, to float rounding
            a, b = by_batch[batch]["first_loc"], out["first_loc"]
            same = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        by_batch.setdefault(batch, out)
        rows.append(
            [
                batch,
                "auto" if chunk is None else f"chunk_size={chunk:,}",
                out["seconds"],
                batch / out["seconds"],
                out["peak_bytes"] / 2**20,
                out["finite"],
                same,
            ]
        )
        print(rows[-1], flush=True)
    note = (
        f"One fit_batch call per row in a fresh process on {by_batch[batch]['devices']} "
        f"device(s), {args.steps} steps of Adam, 1 draw per step, compilation included; "
        "peak = the process's peak resident memory (VmHWM), JAX and the compiled programs "
        "included. max |Δ loc|: the first three members' means against the auto row's (other "
        "shard sizes round differently)."
    )
    table = record.table(
        "Bayesian logistic regression (N = 1000, D = 10): one call of B fits, on CPU",
        ["B", "chunks", "seconds", "fits/s", "peak MiB", "all finite", "max |Δ loc| vs auto"],
        rows,
        note,
    )
    print(json.dumps(table, indent=1))
    last = by_batch[batch]
    devices = {"backend": last["backend"], "devices": f"{last['devices']} × {last['device_kind']}"}
    record.finish(session, "bench_chunked", [table], jax_devices=devices)


if __name__ == "__main__":
    main()
