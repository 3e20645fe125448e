"""The default fit on the corpus of NumPyro models: distance to each stored optimum, and time.

For every model of ``experiments/corpus/models.py`` (float64), ``vi.fit(jax.random.key(1),
vi.from_numpyro(model, ...))`` with all defaults is scored against the reference stored by
``experiments/corpus/make_references.py``: its ELBO gap to the mean-field optimum (both
ELBOs from the same 8192 standard-normal draws, ``jax.random.key(3)``) and its largest mean
error in posterior standard deviations (NUTS). The first call's wall time includes
compiling (the target is built before it); the second call, with another key, reuses the
compiled fit. NumPyro's recipe (AutoNormal, Adam(1e-2), 10,000 steps) is scored the same
way in the reference files; its gap is copied from them.

Usage:
  python experiments/benchmarks/bench_corpus.py                     # every model, recorded
  python experiments/benchmarks/bench_corpus.py --only garch11      # one (repeatable)
  python experiments/benchmarks/bench_corpus.py --quick             # smoke run: three fast
                                                                    # models; records nothing
"""

import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import vi  # noqa: E402
from experiments.benchmarks import record  # noqa: E402
from experiments.corpus import scoring  # noqa: E402
from experiments.corpus.models import CORPUS  # noqa: E402

GAP_TOL, SD_TOL = 0.05, 0.1
COLUMNS = [
    "model",
    "D",
    "fast",
    "gap (nats)",
    "max mean err (post. sd)",
    "steps / stop",
    "first call (s)",
    "second call (s)",
    "AutoNormal 10k gap (nats)",
    "optimum vs NUTS mean err (sd)",
]


def significant(x: float) -> float:
    """``x`` to three significant digits."""
    return float(f"{float(x):.3g}")


def timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def bench_model(name: str) -> list:
    case, reference = CORPUS[name], scoring.load_reference(name)
    target = vi.from_numpyro(case.model, *case.args, **case.kwargs)
    result, first = timed(lambda: vi.fit(jax.random.key(1), target))
    _, second = timed(lambda: vi.fit(jax.random.key(2), target))
    optimum = scoring.optimum_params(reference)
    fitted, best = scoring.common_draw_elbos(
        jax.random.key(3), target.logdensity_fn, [result.params, optimum], 8192
    )
    sd = reference["nuts"]["sd"]
    row = [
        name,
        target.dim,
        case.fast,
        significant(best - fitted),
        significant(scoring.max_mean_error(result.params.loc, optimum.loc, sd)),
        f"{result.num_steps} / {result.stop_reason}",
        round(first, 2),
        round(second, 3),
        reference["autonormal"]["gap"],
        reference["optimum"]["max_mean_error_vs_nuts"],
    ]
    print(" | ".join(record.cell(x) for x in row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(CORPUS), help="a model")
    parser.add_argument("--quick", action="store_true", help="three fast models, not recorded")
    record.add_arguments(parser)
    args = parser.parse_args()
    session = record.start(args)
    names = args.only or list(CORPUS)
    if args.quick and not args.only:
        names = [n for n in names if CORPUS[n].fast][:3]
    rows = [bench_model(name) for name in names]
    reached = sum(r[3] <= GAP_TOL and r[4] <= SD_TOL for r in rows)
    converged = sum(r[5].endswith("/ converged") for r in rows)
    table = record.table(
        "default vi.fit on the corpus of NumPyro models (float64)",
        COLUMNS,
        rows,
        f"Gap: the optimum's ELBO minus the fit's, from 8192 common draws; mean error: the "
        f"largest |fit mean - optimum mean| / NUTS sd, on the unconstrained space. First call "
        f"includes compiling. {reached} of {len(rows)} fits within {GAP_TOL} nats and "
        f"{SD_TOL} sd of the optimum, {converged} converged. The AutoNormal gap and the "
        f"optimum's mean error against NUTS (the mean-field bias) are from the reference files.",
    )
    print("\n" + record.markdown(table))
    record.finish(session, "bench_corpus", [table])


if __name__ == "__main__":
    main()
