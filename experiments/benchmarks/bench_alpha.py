"""The bounds between the two ends and PSIS: per-step cost against the ELBO's, and PSIS time.

Part 1: one ``vi.Stochastic`` step of ``vi.Renyi(0.5)``, ``vi.ImportanceWeighted`` (plain and
DReG) against ``vi.ReverseKL()`` at the same draws per step (64), on two D = 100 targets:
a correlated Gaussian and a logistic regression (N = 1,000), the log density the same code
for every objective. Steps run 200 at a time inside one ``lax.fori_loop``; the figure is
the median per step over interleaved rounds. Target (issue 15): each bound ≤ 1.2× the ELBO.

Part 2: ``vi.diagnostics.pareto_smooth`` on N = 10,000 log ratios (jitted, median of
interleaved rounds), against ArviZ's ``psislw`` on the same ratios; k-hat and the smoothed
log weights compared over ratio sets with k-hat from about 0 to above 1. Target: ≤ 10 ms
on CPU, k-hat equal to ArviZ's.

  python experiments/benchmarks/bench_alpha.py            # records results/bench_alpha.json
  python experiments/benchmarks/bench_alpha.py --quick    # fewer rounds, records nothing
"""

import argparse
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import vi
from experiments.benchmarks import record
from vi.diagnostics import pareto_smooth

DIM = 100
STEPS = 200
NUM_SAMPLES = 64


def _targets(rng_key):
    k1, k2, k3 = jax.random.split(rng_key, 3)
    a = jax.random.normal(k1, (DIM, DIM)) / jnp.sqrt(DIM)
    precision = a @ a.T + 0.5 * jnp.eye(DIM)
    gaussian = vi.from_logdensity(lambda x: -0.5 * x @ precision @ x, jnp.zeros(DIM))
    features = jax.random.normal(k2, (1000, DIM))
    truth = jax.random.normal(k3, (DIM,)) / jnp.sqrt(DIM)
    labels = (features @ truth > 0).astype(jnp.float32)

    def logistic(beta):
        logits = features @ beta
        return jnp.sum(labels * logits - jnp.logaddexp(0.0, logits)) - 0.5 * jnp.sum(beta**2)

    return {
        "correlated Gaussian": gaussian,
        "logistic regression": vi.from_logdensity(logistic, jnp.zeros(DIM)),
    }


def _runner(target, objective):
    method = vi.Stochastic(
        optax.adam(1e-3), num_samples=NUM_SAMPLES, stopping=None, max_steps=10**9
    )

    @jax.jit
    def run(rng_key, state):
        body = lambda i, s: method.step(jax.random.fold_in(rng_key, i), s)[0]
        return jax.lax.fori_loop(0, STEPS, body, state)

    state = method.init(jax.random.key(0), target, objective=objective)
    jax.block_until_ready(run(jax.random.key(1), state))  # compile
    return lambda: jax.block_until_ready(run(jax.random.key(1), state))


def _interleaved(fns: dict, rounds: int) -> dict:
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_steps(rounds: int) -> dict:
    objectives = {
        "ReverseKL (ELBO)": vi.ReverseKL(),
        "Renyi(0.5, K=64)": vi.Renyi(0.5, num_particles=64),
        "Renyi(0.5, K=8)": vi.Renyi(0.5, num_particles=8),
        "ImportanceWeighted(K=64)": vi.ImportanceWeighted(64),
        "ImportanceWeighted(K=64, DReG)": vi.ImportanceWeighted(64, doubly_reparameterised=True),
    }
    rows = []
    for target_name, target in _targets(jax.random.key(0)).items():
        fns = {name: _runner(target, objective) for name, objective in objectives.items()}
        times = _interleaved(fns, rounds)
        elbo = times["ReverseKL (ELBO)"]
        for name, t in times.items():
            rows.append([target_name, name, 1e6 * t / STEPS, t / elbo])
    return record.table(
        f"µs per step, D = {DIM}, {NUM_SAMPLES} draws per step",
        ["target", "objective", "µs / step", "÷ ELBO"],
        rows,
        f"Median over {rounds} interleaved rounds of {STEPS} steps in one compiled loop; "
        "the ratio is to ReverseKL's step on the same target. Target (issue 15): ≤ 1.2. "
        "Variants on the correlated Gaussian (this machine, same command): draws as "
        "(G, K, D) under a nested vmap, 1.36 (K = 64) and 1.92 (IW); a flat vmap of log p "
        "alone, 1.39; the normalised weights held as constants in the backward pass, no "
        "gain; every draw in one flat (G K, D) batch as the ELBO has them, as here. DReG "
        "pays for its path through log q, which a cheap log density cannot hide.",
    )


def _ratio_sets(rng_key, num: int):
    """Log ratios of q = N(0, s²) against p = N(0, 1) (k-hat rises as q narrows) and of
    Student-t weights, ``num`` draws each."""
    sets = {}
    for i, s in enumerate((2.0, 1.2, 0.8, 0.6, 0.45)):
        x = jax.random.normal(jax.random.fold_in(rng_key, i), (num,), jnp.float64) * s
        sets[f"Gaussian, q sd {s}"] = np.asarray(-0.5 * x**2 + 0.5 * (x / s) ** 2 + jnp.log(s))
    for i, df in enumerate((3.0, 1.5, 0.8)):
        t = jax.random.t(jax.random.fold_in(rng_key, 10 + i), df, (num,), jnp.float64)
        sets[f"log|t| with {df} df"] = np.asarray(jnp.log(jnp.abs(t)))
    return sets


def bench_psis(rounds: int) -> tuple[dict, dict]:
    import arviz

    num = 10_000
    sets = _ratio_sets(jax.random.key(1), num)
    smooth = jax.jit(pareto_smooth)
    rows = []
    for name, ratios in sets.items():
        ours = smooth(jnp.asarray(ratios))
        jax.block_until_ready(ours)
        log_w, k = arviz.psislw(ratios.copy())
        rows.append(
            [
                name,
                float(ours.pareto_k),
                float(k),
                abs(float(ours.pareto_k) - float(k)),
                float(np.max(np.abs(np.asarray(ours.log_weights) - log_w))),
            ]
        )
    agreement = record.table(
        f"k-hat against ArviZ's psislw, N = {num:,} (float64)",
        ["ratios", "vi k-hat", "ArviZ k-hat", "|Δk|", "max |Δ log w|"],
        rows,
        "The same log ratios through both; ArviZ's r_eff = 1.",
    )
    ratios64 = next(iter(sets.values()))
    ratios32 = jnp.asarray(ratios64, jnp.float32)
    fns = {
        "vi pareto_smooth (float64)": lambda: jax.block_until_ready(smooth(jnp.asarray(ratios64))),
        "vi pareto_smooth (float32)": lambda: jax.block_until_ready(smooth(ratios32)),
        "ArviZ psislw": lambda: arviz.psislw(ratios64.copy()),
    }
    for fn in fns.values():
        fn()
    times = _interleaved(fns, rounds)
    timing = record.table(
        f"PSIS on N = {num:,} log ratios, ms",
        ["implementation", "ms", "÷ ArviZ"],
        [[name, 1e3 * t, t / times["ArviZ psislw"]] for name, t in times.items()],
        f"Median over {rounds} interleaved rounds, compilation excluded. Target (issue 15): "
        "≤ 10 ms on CPU.",
    )
    return agreement, timing


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds; records nothing")
    record.add_arguments(parser)
    args = parser.parse_args()
    session = record.start(args)
    rounds = 3 if args.quick else 15
    tables = [bench_steps(rounds)]
    print(record.markdown(tables[-1]), flush=True)
    with jax.enable_x64(True):
        tables.extend(bench_psis(5 if args.quick else 51))
    for table in tables[1:]:
        print(record.markdown(table), flush=True)
    record.finish(session, "bench_alpha", tables)


if __name__ == "__main__":
    main()
