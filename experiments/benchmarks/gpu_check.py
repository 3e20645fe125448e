"""The GPU check: the device-independent tests, batch throughput and the KL kernels against the
memory-bandwidth floor, on whatever device JAX picks, in one JSON.

Three steps, each timed, each under a deadline (the whole check fits in 8 minutes on one GPU):

1. **tests**: ``pytest -m "not heavy"`` on the numerical tests that do not depend on the device
   count (kernels, families, objectives, diagnostics, targets) with the GPU as JAX's default
   device; the counts of passed, failed and skipped tests.
2. **batch**: ``vi.fit_batch`` of B fits of Bayesian logistic regression (N = 1000, D = 10,
   one dataset, NumPyro's potential), Adam(1e-2), one draw per step, no stopping rule:
   fits/s for B = 10^2 … 10^5 (compilation timed apart, then one timed call). Target on a
   GPU: ≥ 10^4 fits/s at B ≥ 10^4.
3. **kernels**: ``vi.kl_divergence(p, q)`` over (B, K) float32 probability tables against the
   floor ``jnp.sum(p + q, -1)``, which reads both tables once and does nothing else: the
   fraction of the floor's bandwidth the kernel reaches (target: ≥ 0.8), and the floor's GB/s.

``--small`` runs the same steps at sizes a CPU finishes in a minute or two (a few test files,
B ≤ 10^3, small tables); the test suite runs it so. ``gpu_check.sh`` is the entry point.

Usage:
  python experiments/benchmarks/gpu_check.py --out gpu_check.json           # on a GPU
  python experiments/benchmarks/gpu_check.py --small --out cpu_check.json   # on a CPU
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import vi  # noqa: E402

vi.set_cpu_devices()  # only shapes the CPU backend; a GPU stays the default device

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from experiments import models  # noqa: E402

DEVICE_INDEPENDENT = [
    "tests/kernels",
    "tests/families",
    "tests/objectives",
    "tests/diagnostics",
    "tests/targets",
]
SMALL_TESTS = ["tests/kernels/test_discrete.py"]
SIZES = {
    "full": {"batch": [100, 1_000, 10_000, 100_000], "steps": 200, "kernel": [(1024, 65536)]},
    "small": {"batch": [10, 100, 1_000], "steps": 20, "kernel": [(64, 4096)]},
}


def run_tests(paths: list[str], deadline_s: float) -> dict:
    """pytest on ``paths`` in a subprocess (JAX's default device: the GPU where there is one)."""
    command = [sys.executable, "-m", "pytest", "-m", "not heavy", "-p", "no:cacheprovider"]
    command += ["-n", "0", "-rfE", *paths]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    try:
        out = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=deadline_s
        )
        text, code = out.stdout + out.stderr, out.returncode
    except subprocess.TimeoutExpired as error:
        text, code = (error.stdout or b"").decode(errors="replace"), None
    counts = {
        word: int(n)
        for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed)", text)
    }
    failed = [line for line in text.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return {
        "paths": paths,
        "exit_code": code,
        "timed_out": code is None,
        "counts": counts,
        "failed": failed[:50],
        "seconds": time.perf_counter() - start,
    }


def run_batch(sizes: list[int], steps: int) -> list[dict]:
    """fits/s of ``vi.fit_batch`` at each B: a first call (compiles), then a timed call."""
    x, y = models.logistic_data(1000, 10, 0)
    target = vi.from_numpyro(models.logistic_regression, x, y=y)
    method = vi.Stochastic(optax.adam(1e-2), num_samples=1, max_steps=steps, stopping=None)
    rows = []
    for batch in sizes:
        keys = jax.random.split(jax.random.key(0), batch)
        fit = lambda keys=keys: vi.fit_batch(
            keys, target, method=method, num_eval_samples=2, progress=False
        )
        start = time.perf_counter()
        result = fit()
        first = time.perf_counter() - start
        start = time.perf_counter()
        result = fit()
        jax.block_until_ready(result.params.loc)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "B": batch,
                "steps": steps,
                "first_call_s": first,
                "seconds": seconds,
                "fits_per_s": batch / seconds,
                "all_finite": bool(np.isfinite(np.asarray(result.params.loc)).all()),
            }
        )
        print(f"  batch B={batch}: {batch / seconds:,.0f} fits/s", file=sys.stderr, flush=True)
    return rows


def _median_time(fn, args, repeats: int = 20) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run_kernels(shapes: list[tuple[int, int]]) -> list[dict]:
    """The discrete KL against the read-both-tables floor, float32."""
    kl = jax.jit(lambda p, q: vi.kl_divergence(p, q))
    floor = jax.jit(lambda p, q: jnp.sum(p + q, -1))
    rows = []
    for shape in shapes:
        kp, kq = jax.random.split(jax.random.key(0))
        p = jax.nn.softmax(jax.random.normal(kp, shape, jnp.float32), -1)
        q = jax.nn.softmax(jax.random.normal(kq, shape, jnp.float32), -1)
        t_kl, t_floor = _median_time(kl, (p, q)), _median_time(floor, (p, q))
        read = 2 * p.size * p.dtype.itemsize
        rows.append(
            {
                "shape": list(shape),
                "kl_s": t_kl,
                "floor_s": t_floor,
                "fraction_of_floor": t_floor / t_kl,
                "floor_gb_per_s": read / t_floor / 1e9,
                "kl_gb_per_s": read / t_kl / 1e9,
            }
        )
        print(f"  kernels {shape}: {t_floor / t_kl:.2f} of the floor", file=sys.stderr)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json", help="where the JSON goes")
    parser.add_argument("--small", action="store_true", help="CPU sizes (minutes, not hours)")
    parser.add_argument("--tests-deadline", type=float, default=240.0, help="seconds for pytest")
    parser.add_argument("--tests", nargs="+", default=None, help="test paths (default: by size)")
    args = parser.parse_args(argv)
    sizes = SIZES["small" if args.small else "full"]
    start = time.perf_counter()
    device = jax.devices()[0]
    print(f"gpu_check on {device.device_kind} ({device.platform})", file=sys.stderr)
    print("tests…", file=sys.stderr, flush=True)
    paths = args.tests or (SMALL_TESTS if args.small else DEVICE_INDEPENDENT)
    tests = run_tests(paths, args.tests_deadline)
    print(f"  {tests['counts']}", file=sys.stderr)
    print("batch…", file=sys.stderr, flush=True)
    batch = run_batch(sizes["batch"], sizes["steps"])
    print("kernels…", file=sys.stderr, flush=True)
    kernels = run_kernels(sizes["kernel"])
    report = {
        "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "size": "small" if args.small else "full",
        "device": {
            "platform": device.platform,
            "kind": device.device_kind,
            "count": len(jax.local_devices()),
        },
        "versions": {"python": platform.python_version(), "jax": jax.__version__},
        "tests": tests,
        "batch": batch,
        "kernels": kernels,
        "targets": {
            "fits_per_s_at_1e4": "≥ 10^4 fits/s at B ≥ 10^4 (GPU)",
            "kernel_fraction_of_floor": "≥ 0.8 (GPU)",
        },
        "seconds": time.perf_counter() - start,
    }
    pathlib.Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out} in {report['seconds']:.0f} s", file=sys.stderr)
    ok = tests["exit_code"] == 0 and all(row["all_finite"] for row in batch)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
