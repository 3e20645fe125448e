"""Times vi's diagonal-Gaussian KL against NumPyro, hand-written jnp and numpy formulas.

Every implementation gets the same B x D inputs (loc and log-scale, or loc and scale for
those that take scales) and returns the (B,) KLs. A "floor" reads the same four inputs
once and reduces them, the least any of them can cost. Times are medians over repeats
after a compile-and-warm-up call; ratios are to the fastest peer and to the floor, within
this one run. The rows are timed in turn in every round, so a change in machine load hits
all of them alike (absolute times on a shared machine are noisy, ratios less so); the slow
numpy row runs in the first third of the rounds only. Records one table per dtype in
``results/bench_gaussian_kl.json`` (``record.py``).

Usage:
  python experiments/benchmarks/bench_gaussian_kl.py            # B = 1e6, D = 64
  python experiments/benchmarks/bench_gaussian_kl.py --quick    # B = 1e5, 5 rounds, records nothing
"""

import argparse
import pathlib
import statistics
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from numpyro.distributions import Independent, Normal, kl_divergence  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from experiments.benchmarks import record  # noqa: E402
from vi import DiagNormal, kl  # noqa: E402
from vi.kernels.gaussian import diag_normal_kl, diag_normal_kl_from_scale  # noqa: E402


def jnp_formula(loc_q, log_scale_q, loc_p, log_scale_p):
    var_ratio = jnp.exp(2.0 * (log_scale_q - log_scale_p))
    z = (loc_q - loc_p) * jnp.exp(-log_scale_p)
    return jnp.sum(0.5 * (var_ratio + z**2 - 1.0) - (log_scale_q - log_scale_p), axis=-1)


def numpy_formula(loc_q, log_scale_q, loc_p, log_scale_p):
    var_ratio = np.exp(2.0 * (log_scale_q - log_scale_p))
    z = (loc_q - loc_p) * np.exp(-log_scale_p)
    return np.sum(0.5 * (var_ratio + z**2 - 1.0) - (log_scale_q - log_scale_p), axis=-1)


def numpyro_kl(loc_q, scale_q, loc_p, scale_p):
    q = Independent(Normal(loc_q, scale_q), 1)
    p = Independent(Normal(loc_p, scale_p), 1)
    return kl_divergence(q, p)


def registry_kl(loc_q, log_scale_q, loc_p, log_scale_p):
    return kl(DiagNormal(loc_q, log_scale_q), DiagNormal(loc_p, log_scale_p))


def read_floor(a, b, c, d):
    return jnp.sum(a + b + c + d, axis=-1)


def interleaved_medians(rows, repeats):
    """Median seconds per row, timing the rows in turn each round so load drifts hit all."""
    for fn, args, _ in rows.values():
        jax.block_until_ready(fn(*args))  # compile and warm up
    times = {name: [] for name in rows}
    for round_ in range(repeats):
        for name, (fn, args, kind) in rows.items():
            if kind == "slow" and round_ >= max(3, repeats // 3):
                continue
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_dtype(rng_key, batch, dim, dtype, repeats) -> dict:
    """Times every implementation in one dtype; returns the table of times and ratios."""
    keys = jax.random.split(rng_key, 4)
    loc_q, loc_p = (jax.random.normal(k, (batch, dim), dtype) for k in keys[:2])
    log_scale_q, log_scale_p = (0.5 * jax.random.normal(k, (batch, dim), dtype) for k in keys[2:])
    log_args = (loc_q, log_scale_q, loc_p, log_scale_p)
    scale_args = (loc_q, jnp.exp(log_scale_q), loc_p, jnp.exp(log_scale_p))
    host_args = tuple(np.asarray(a) for a in log_args)
    jax.block_until_ready((log_args, scale_args))

    rows = {
        "vi diag_normal_kl (log-scale)": (jax.jit(diag_normal_kl), log_args, "vi"),
        "vi diag_normal_kl_from_scale": (jax.jit(diag_normal_kl_from_scale), scale_args, "vi"),
        "vi kl(DiagNormal, DiagNormal)": (jax.jit(registry_kl), log_args, "vi"),
        "numpyro kl_divergence (jit)": (jax.jit(numpyro_kl), scale_args, "peer"),
        "jnp formula (jit)": (jax.jit(jnp_formula), log_args, "peer"),
        "numpy formula": (numpy_formula, host_args, "slow"),
        "read floor (jit)": (jax.jit(read_floor), log_args, "floor"),
    }
    reference = np.asarray(numpyro_kl(*scale_args), np.float64)
    errors = {}
    for name, (fn, args, kind) in rows.items():
        if kind != "floor":
            result = np.asarray(fn(*args), np.float64)
            errors[name] = np.max(np.abs(result - reference) / np.abs(reference))
    times = interleaved_medians(rows, repeats)
    fastest_peer = min(times[name] for name, row in rows.items() if row[2] in ("peer", "slow"))
    floor = times["read floor (jit)"]
    rows = [
        [
            name,
            1e3 * t,
            t / fastest_peer,
            t / floor,
            errors[name] if name in errors else None,
        ]
        for name, t in times.items()
    ]
    return record.table(
        f"{jnp.dtype(dtype).name}: KL of B = {batch} pairs of D = {dim} diagonal Gaussians",
        ["implementation", "ms", "÷ fastest peer", "÷ floor", "max rel. diff. from NumPyro"],
        rows,
        f"Median ms over {repeats} interleaved rounds (numpy: the first third); ratios to the "
        "fastest peer (NumPyro or a formula) and to the floor, which reads the four inputs once.",
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B = 1e5 and 5 rounds")
    parser.add_argument("--batch", type=int, default=None, help="override B")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    record.add_arguments(parser)
    args = parser.parse_args()
    session = record.start(args)
    batch = args.batch or (100_000 if args.quick else 1_000_000)
    repeats = args.repeats or (5 if args.quick else 9)
    rng_key = jax.random.key(args.seed)
    tables = []
    for dtype in (jnp.float32, jnp.float64):
        tables.append(bench_dtype(rng_key, batch, args.dim, dtype, repeats))
        print(record.markdown(tables[-1]), flush=True)
    record.finish(session, "bench_gaussian_kl", tables)


if __name__ == "__main__":
    main()
