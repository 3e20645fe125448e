"""Times vi's discrete KL kernels against scipy, numpy, optax, jax.scipy and two jitted baselines.

For each batch shape (B, K) and dtype it times KL(p ‖ q) over the last axis:

  vi kl (normalized)    vi.kernels.discrete.kl_divergence, scipy normalisation, full edge cases
  vi kl (normalize=F)   the same without normalisation (sum of rel_entr terms)
  vi kl_log             vi.kernels.discrete.kl_divergence_log on log p, log q
  scipy.stats.entropy   scipy.stats.entropy(p, q, axis=-1) on numpy arrays
  numpy formula         np.sum(p * np.log(p / q), -1)
  optax kl_divergence   optax.losses.kl_divergence(log_predictions=log q, targets=p)
  jax.scipy rel_entr    jax.scipy.special.rel_entr(p, q).sum(-1), jitted
  naive jit             jnp.sum(p * jnp.log(p / q), -1), jitted (NaN at p == 0: wrong at edges)
  floor                 jnp.sum(p + q, -1), jitted: reads both inputs once, no transcendentals

Every jitted function is compiled and run once before timing. The methods are timed in
interleaved rounds (each round runs every method once, in turn), so that load from other
processes hits them alike; the table reports the median time over rounds and the median over
rounds of each method's time divided by the naive and by the floor time of the same round.

Runs on whatever device JAX picks (CPU or GPU); numpy and scipy always run on the host.
Records one table per dtype in ``results/bench_discrete_kl.json`` (``record.py``).

Usage:
  python experiments/benchmarks/bench_discrete_kl.py            # full run
  python experiments/benchmarks/bench_discrete_kl.py --quick    # smoke run, records nothing
"""

import argparse
import pathlib
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)  # float64 rows need it; float32 arrays stay float32

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import scipy.stats  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from experiments.benchmarks import record  # noqa: E402
from vi.kernels.discrete import kl_divergence  # noqa: E402
from vi.kernels.log_space import kl_divergence_log  # noqa: E402

FULL_SHAPES = ((1_000_000, 16), (10_000, 1024), (100, 100_000))
QUICK_SHAPES = ((100_000, 16), (1_000, 1024), (10, 100_000))


def _naive(p, q):
    return jnp.sum(p * jnp.log(p / q), axis=-1)


def _floor(p, q):
    return jnp.sum(p + q, axis=-1)


def _jax_scipy(p, q):
    return jax.scipy.special.rel_entr(p, q).sum(-1)


def _optax(log_q, p):
    return optax.losses.kl_divergence(log_q, p)


def _methods():
    """Returns {name: (callable, input kind)}; kind selects (p, q), (log_p, log_q) or numpy."""
    return {
        "vi kl (normalized)": (jax.jit(kl_divergence), "prob"),
        "vi kl (normalize=F)": (jax.jit(lambda p, q: kl_divergence(p, q, normalize=False)), "prob"),
        "vi kl_log": (jax.jit(kl_divergence_log), "log"),
        "naive jit": (jax.jit(_naive), "prob"),
        "floor": (jax.jit(_floor), "prob"),
        "jax.scipy rel_entr": (jax.jit(_jax_scipy), "prob"),
        "optax kl_divergence": (jax.jit(_optax), "optax"),
        "numpy formula": (lambda p, q: np.sum(p * np.log(p / q), axis=-1), "numpy"),
        "scipy.stats.entropy": (lambda p, q: scipy.stats.entropy(p, q, axis=-1), "numpy"),
    }


def _inputs(rng_key, shape, dtype):
    key_p, key_q = jax.random.split(rng_key)
    p = jax.random.uniform(key_p, shape, dtype, minval=0.01, maxval=1.0)
    q = jax.random.uniform(key_q, shape, dtype, minval=0.01, maxval=1.0)
    p = p / p.sum(-1, keepdims=True)
    q = q / q.sum(-1, keepdims=True)
    log_p, log_q = jnp.log(p), jnp.log(q)
    host = (np.asarray(p), np.asarray(q))
    return {
        "prob": (p, q),
        "log": (log_p, log_q),
        "optax": (log_q, p),
        "numpy": host,
    }


def _time_once(fn, args):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def bench_shape(rng_key, shape, dtype, rounds, host_rounds):
    """Times every method on one (B, K) shape; returns {name: (median s, ×naive, ×floor)}."""
    inputs = _inputs(rng_key, shape, dtype)
    methods = _methods()
    for fn, kind in methods.values():  # compile and warm up
        jax.block_until_ready(fn(*inputs[kind]))
    times = {name: [] for name in methods}
    for r in range(rounds):
        for name, (fn, kind) in methods.items():
            if kind == "numpy" and r >= host_rounds:
                continue
            times[name].append(_time_once(fn, inputs[kind]))
    naive, floor = np.array(times["naive jit"]), np.array(times["floor"])
    table = {}
    for name, ts in times.items():
        ts = np.array(ts)
        n = len(ts)
        table[name] = (np.median(ts), np.median(ts / naive[:n]), np.median(ts / floor[:n]))
    return table


def _short(n: int) -> str:
    """1000000 as 1e6; other counts as they are."""
    exponent = len(str(n)) - 1
    return f"1e{exponent}" if exponent >= 3 and n == 10**exponent else str(n)


def dtype_table(dtype_name, shapes, by_shape, rounds, host_rounds) -> dict:
    """One dtype's timings: a row per method, a column per shape."""
    columns = ["method", *(f"B={_short(b)}, K={_short(k)}" for b, k in shapes)]
    rows = []
    for name in by_shape[0]:
        cells = [by_shape[i][name] for i in range(len(shapes))]
        rows.append([name, *(f"{1e3 * t:.3g} ({n:.2f} / {f:.2f})" for t, n, f in cells)])
    itemsize = jnp.dtype(dtype_name).itemsize
    gbps = [
        2 * np.prod(s) * itemsize / t["floor"][0] / 1e9
        for s, t in zip(shapes, by_shape, strict=True)
    ]
    rows.append(["floor reads (GB/s)", *(f"{x:.1f}" for x in gbps)])
    return record.table(
        f"{dtype_name}: KL(p ‖ q) over the last axis of (B, K), median ms",
        columns,
        rows,
        f"Each cell: median ms over {rounds} interleaved rounds ({host_rounds} for numpy and "
        "scipy), then (÷ naive jit, ÷ floor): medians of the per-round ratios to the naive "
        "jitted sum(p·log(p/q)), which is wrong at the edges, and to the floor, which reads "
        "both inputs once.",
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x smaller batches, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of the jitted methods")
    parser.add_argument("--dtypes", default="float32,float64")
    record.add_arguments(parser)
    args = parser.parse_args()
    session = record.start(args)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    rounds = args.rounds or (3 if args.quick else 15)
    host_rounds = min(rounds, 3)
    rng_key = jax.random.key(0)
    tables = []
    for dtype_name in args.dtypes.split(","):
        by_shape = []
        for shape in shapes:
            rng_key, key = jax.random.split(rng_key)
            by_shape.append(bench_shape(key, shape, jnp.dtype(dtype_name), rounds, host_rounds))
        tables.append(dtype_table(dtype_name, shapes, by_shape, rounds, host_rounds))
        print(record.markdown(tables[-1]), flush=True)
    record.finish(session, "bench_discrete_kl", tables)


if __name__ == "__main__":
    main()
