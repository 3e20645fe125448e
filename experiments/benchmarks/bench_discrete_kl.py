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

Usage:
  python experiments/benchmarks/bench_discrete_kl.py            # full run
  python experiments/benchmarks/bench_discrete_kl.py --quick    # smaller shapes, fewer rounds
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)  # float64 rows need it; float32 arrays stay float32

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import scipy.stats  # noqa: E402

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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x smaller batches, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of the jitted methods")
    parser.add_argument("--dtypes", default="float32,float64")
    args = parser.parse_args()
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    rounds = args.rounds or (3 if args.quick else 15)
    host_rounds = min(rounds, 3)
    device = jax.devices()[0]
    print(f"device: {device.platform} ({device.device_kind}), jax {jax.__version__}")
    print(f"{rounds} rounds for jitted methods, {host_rounds} for numpy/scipy; medians\n")
    rng_key = jax.random.key(0)
    for dtype_name in args.dtypes.split(","):
        dtype = jnp.dtype(dtype_name)
        for shape in shapes:
            rng_key, key = jax.random.split(rng_key)
            table = bench_shape(key, shape, dtype, rounds, host_rounds)
            floor_s = table["floor"][0]
            gbps = 2 * np.prod(shape) * dtype.itemsize / floor_s / 1e9
            print(f"{dtype_name} B={shape[0]} K={shape[1]}: floor reads {gbps:.1f} GB/s")
            print(f"  {'method':<22}{'ms':>10}{'x naive':>10}{'x floor':>10}")
            for name, (median, vs_naive, vs_floor) in table.items():
                print(f"  {name:<22}{median * 1e3:>10.3f}{vs_naive:>10.2f}{vs_floor:>10.2f}")
            print(flush=True)


if __name__ == "__main__":
    main()
