"""Wall time to the mean-field optimum: ``vi.fit`` with all defaults against NumPyro's recipe.

The recipe is ``SVI(model, AutoNormal(model), Adam(1e-2), Trace_ELBO())`` run for 10,000
steps. On the linear-Gaussian posteriors (uncentred and polynomial regression) the
mean-field optimum is known exactly, so each fit is scored by its ELBO gap to it (exact,
no Monte Carlo) and by its largest mean error in posterior standard deviations. On the
centred eight-schools funnel, vi's default is compared with a 4096-draw fixed-draw
reference fit (``method=vi.FixedDraws(num_draws=4096)``) by fresh-draw ELBO estimates
(``result.info.elbo`` ± ``elbo_stderr``), and all fits by ELBOs from 2^18 common draws.
"vi.fit (defaults)" is ``vi.fit(key, vi.from_numpyro(model, ...))``: ``vi.FixedDraws()`` on
``vi.ReverseKL()``.

Wall time is what a user waits for, compilation included: every timed call starts from
empty JAX caches (``jax.clear_caches()``), the contenders alternate, and the median over
repeats is reported, split into compile (tracing + lowering + XLA, from ``jax.monitoring``)
and the rest ("run"). Ratios are within this one run. The tables are recorded in
``results/bench_time_to_optimum.json`` (``_x32.json`` for float32; ``record.py``).

Usage:
  python experiments/benchmarks/bench_time_to_optimum.py           # float64
  python experiments/benchmarks/bench_time_to_optimum.py --x32     # float32
  python experiments/benchmarks/bench_time_to_optimum.py --quick   # smoke run: 1 repeat,
                                                                   # 1000 NumPyro steps; records nothing
"""

import argparse
import contextlib
import io
import os
import pathlib
import platform
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from experiments.benchmarks import record

PARSER = argparse.ArgumentParser(description=__doc__.splitlines()[0])
PARSER.add_argument("--x32", action="store_true", help="float32 instead of float64")
PARSER.add_argument("--quick", action="store_true", help="one repeat, fewer NumPyro steps")
PARSER.add_argument("--repeats", type=int, default=None, help="cold calls per contender")
PARSER.add_argument("--numpyro-steps", type=int, default=10_000)
record.add_arguments(PARSER)
ARGS = PARSER.parse_args()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", not ARGS.x32)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from numpyro.infer import SVI, Trace_ELBO  # noqa: E402
from numpyro.infer.autoguide import AutoNormal  # noqa: E402

import vi  # noqa: E402
from experiments import models  # noqa: E402
from experiments.benchmarks.compile_clock import CompileClock  # noqa: E402

GAP_TOL, SD_TOL = 0.05, 0.05
REFERENCE = "vi.fit(method=vi.FixedDraws(num_draws=4096)) reference"
LINEAR_GAUSSIAN_COLUMNS = (
    "fit | wall s | compile s | run s | ELBO gap (nats) | max mean err (post. sd) | "
    "max scale rel. err | steps / stop | at optimum"
).split(" | ")
FUNNEL_COLUMNS = (
    "fit | wall s | compile s | run s | ELBO ± stderr (fit's own estimate) | "
    "ELBO ± stderr (2^18 common draws) | ELBO - reference (paired) | max mean diff (ref. sd) | "
    "steps / stop"
).split(" | ")


CLOCK = CompileClock()


def cold_call(fn):
    """(result, wall seconds, compile seconds) of ``fn()`` from empty JAX caches."""
    jax.clear_caches()
    mark = len(CLOCK.spans)
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    wall = time.perf_counter() - start
    return out, wall, CLOCK.seconds(mark)


def vi_fit(model, args, kwargs, **options):
    """A fit as a user calls it, the target built inside the timed call."""

    def run():
        result = vi.fit(jax.random.key(0), vi.from_numpyro(model, *args, **kwargs), **options)
        jax.block_until_ready(result.params)
        return result

    return run


def numpyro_fit(model, args, kwargs, num_steps, progress_bar):
    def run():
        guide = AutoNormal(model)
        svi = SVI(model, guide, numpyro.optim.Adam(1e-2), Trace_ELBO())
        with contextlib.redirect_stderr(io.StringIO()):
            result = svi.run(
                jax.random.key(0), num_steps, *args, progress_bar=progress_bar, **kwargs
            )
        return result.params

    return run


def autonormal_params(params, site_names) -> vi.MeanFieldParams:
    """AutoNormal's loc/scale as the flat ``MeanFieldParams`` of ``vi.from_numpyro``'s space."""
    loc, _ = ravel_pytree({name: params[f"{name}_auto_loc"] for name in site_names})
    scale, _ = ravel_pytree({name: params[f"{name}_auto_scale"] for name in site_names})
    return vi.MeanFieldParams(loc, jnp.log(scale))


def to_loc_scale(out, site_names):
    """(loc, scale) as float64 numpy arrays, from a ``FitResult`` or AutoNormal params."""
    params = out.params if isinstance(out, vi.FitResult) else autonormal_params(out, site_names)
    return np.asarray(params.loc, np.float64), np.exp(np.asarray(params.log_scale, np.float64))


def run_contenders(contenders: dict, repeats: int) -> dict:
    """name -> (last output, median wall, median compile), interleaved in rotating order."""
    names = list(contenders)
    walls = {n: [] for n in names}
    compiles = {n: [] for n in names}
    outputs = {}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            outputs[name], wall, compile_s = cold_call(contenders[name])
            walls[name].append(wall)
            compiles[name].append(compile_s)
    return {
        n: (outputs[n], statistics.median(walls[n]), statistics.median(compiles[n])) for n in names
    }


def bench_linear_gaussian(name, problem, dtype, repeats, numpyro_steps) -> dict:
    """Times the fits of one linear-Gaussian problem; returns its table, verdicts in the note."""
    X, y = problem.X.astype(dtype), problem.y.astype(dtype)
    args, kwargs = (X, problem.noise, problem.prior_scale), {"y": y}
    model = models.linear_gaussian_model
    contenders = {
        "vi.fit (defaults)": vi_fit(model, args, kwargs),
        f"numpyro recipe, {numpyro_steps} steps, progress_bar=False": numpyro_fit(
            model, args, kwargs, numpyro_steps, False
        ),
        f"numpyro recipe, {numpyro_steps} steps, progress bar": numpyro_fit(
            model, args, kwargs, numpyro_steps, True
        ),
    }
    results = run_contenders(contenders, repeats)
    optimum = problem.optimal_elbo()
    cells, rows = [], {}
    for fit_name, (out, wall, compile_s) in results.items():
        loc, scale = to_loc_scale(out, ["b"])
        gap = optimum - problem.elbo(loc, scale)
        mean_err = float(np.max(np.abs(loc - problem.posterior_mean) / problem.posterior_sd))
        scale_err = float(np.max(np.abs(scale / problem.mean_field_sd - 1.0)))
        there = gap <= GAP_TOL and mean_err <= SD_TOL
        stop = f"{out.num_steps} / {out.stop_reason}" if isinstance(out, vi.FitResult) else ""
        cells.append(
            [
                fit_name,
                wall,
                compile_s,
                wall - compile_s,
                gap,
                mean_err,
                scale_err,
                stop,
                there,
            ]
        )
        rows[fit_name] = (wall, there)
    vi_wall, vi_there = rows.pop("vi.fit (defaults)")
    verdicts = []
    for fit_name, (wall, _) in rows.items():
        verdict = "met" if vi_there and vi_wall < wall else "NOT met"
        verdicts.append(f"vi wall / ({fit_name}) wall = {vi_wall / wall:.2f}: {verdict}")
    table = record.table(
        f"{name} (D = {X.shape[1]}, {np.dtype(dtype).name})",
        LINEAR_GAUSSIAN_COLUMNS,
        cells,
        f"Target: vi at the optimum (within {GAP_TOL} nats and {SD_TOL} sd) in less wall time. "
        + "; ".join(verdicts)
        + ".",
    )
    print("\n" + record.markdown(table))
    return table


def paired_elbos(rng_key, fits: dict, logdensity_fn, num_draws: int, reference: str) -> dict:
    """ELBO of each fit from the same standard-normal draws, and its difference to the
    reference with the standard error of the paired difference."""
    dim = next(iter(fits.values())).loc.shape[0]
    eps = jax.random.normal(rng_key, (num_draws, dim), next(iter(fits.values())).loc.dtype)
    terms = {}
    for name, params in fits.items():
        x = params.loc + jnp.exp(params.log_scale) * eps
        log_p = jax.lax.map(logdensity_fn, x, batch_size=4096)
        entropy = jnp.sum(params.log_scale) + 0.5 * dim * (1.0 + jnp.log(2.0 * jnp.pi))
        terms[name] = np.asarray(log_p, np.float64) + float(entropy)
    out = {}
    for name, t in terms.items():
        diff = t - terms[reference]
        out[name] = (
            t.mean(),
            t.std(ddof=1) / np.sqrt(num_draws),
            diff.mean(),
            diff.std(ddof=1) / np.sqrt(num_draws),
        )
    return out


def bench_funnel(dtype, repeats, numpyro_steps) -> dict:
    """Times the funnel's fits and scores them against the reference; returns the table."""
    y, sigma = (a.astype(dtype) for a in models.eight_schools_data())
    args, kwargs = (sigma,), {"y": y}
    model = models.hierarchical_funnel
    contenders = {
        "vi.fit (defaults)": vi_fit(model, args, kwargs),
        REFERENCE: vi_fit(model, args, kwargs, method=vi.FixedDraws(num_draws=4096)),
        f"numpyro recipe, {numpyro_steps} steps, progress_bar=False": numpyro_fit(
            model, args, kwargs, numpyro_steps, False
        ),
    }
    results = run_contenders(contenders, repeats)
    target = vi.from_numpyro(model, *args, **kwargs)
    names = ["mu", "tau", "theta"]
    ref_name = REFERENCE
    params = {
        fit_name: out.params if isinstance(out, vi.FitResult) else autonormal_params(out, names)
        for fit_name, (out, _, _) in results.items()
    }
    precise = paired_elbos(jax.random.key(123), params, target.logdensity_fn, 2**18, ref_name)
    ref_loc = np.asarray(params[ref_name].loc, np.float64)
    ref_scale = np.exp(np.asarray(params[ref_name].log_scale, np.float64))
    cells = []
    for fit_name, (out, wall, compile_s) in results.items():
        if isinstance(out, vi.FitResult):
            own = f"{float(out.info.elbo):.3f} ± {float(out.info.elbo_stderr):.3f}"
            stop = f"{out.num_steps} / {out.stop_reason}"
        else:
            own, stop = "", ""
        value, stderr, diff, diff_stderr = precise[fit_name]
        loc = np.asarray(params[fit_name].loc, np.float64)
        mean_diff = float(np.max(np.abs(loc - ref_loc) / ref_scale))
        cells.append(
            [
                fit_name,
                wall,
                compile_s,
                wall - compile_s,
                own,
                f"{value:.4f} ± {stderr:.4f}",
                f"{diff:+.4f} ± {diff_stderr:.4f}",
                mean_diff,
                stop,
            ]
        )
    table = record.table(
        f"Centred eight schools (hierarchical funnel, D = 10, {np.dtype(dtype).name})",
        FUNNEL_COLUMNS,
        cells,
        "No exact optimum here: each fit's ELBO is estimated from the same 2^18 draws, and "
        "compared with the 4096-draw reference fit's by paired differences.",
    )
    print("\n" + record.markdown(table))
    return table


def main():
    session = record.start(ARGS)
    repeats = ARGS.repeats or (1 if ARGS.quick else 3)
    numpyro_steps = 1000 if ARGS.quick else ARGS.numpyro_steps
    dtype = np.float32 if ARGS.x32 else np.float64
    device = jax.devices()[0]
    print(
        f"jax {jax.__version__}, numpyro {numpyro.__version__}; {device.platform} "
        f"({device.device_kind}), {platform.machine()}; {np.dtype(dtype).name}; "
        f"median of {repeats} cold calls (empty JAX caches) per fit; "
        f"load average {os.getloadavg()[0]:.2f} at the start"
    )
    tables = [
        bench_linear_gaussian(
            "uncentred regression", models.uncentred_regression(), dtype, repeats, numpyro_steps
        ),
        bench_linear_gaussian(
            "polynomial regression", models.polynomial_regression(), dtype, repeats, numpyro_steps
        ),
        bench_funnel(dtype, repeats, numpyro_steps),
    ]
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    record.finish(session, "bench_time_to_optimum" + "_x32" * ARGS.x32, tables)


if __name__ == "__main__":
    main()
