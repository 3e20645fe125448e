"""Computes and stores the reference answers of the corpus models (float64).

For each model of ``experiments/corpus/models.py`` it writes ``references/<name>.json``:

- ``optimum``: the mean-field optimum on the unconstrained space, from
  ``vi.fit(jax.random.key(0), target, method=vi.FixedDraws(num_draws=4096,
  max_steps=20000))`` started at the target's initial point and at NUTS's moments, the
  better of the two: ``loc``, ``log_scale``, status, steps, and its ELBO from ``--elbo-draws``
  common standard-normal draws (``jax.random.key(3)``), with the ELBO from each start;
- ``nuts``: per-coordinate mean and sd on the same space from ``vi.nuts_draws`` (4 chains of
  1000 draws after 1000 warmup steps, run one after another, each from its own
  ``init_to_uniform`` start), with split R-hat and ESS per coordinate;
- ``autonormal``: NumPyro's recipe, ``SVI(model, AutoNormal(model), Adam(1e-2),
  Trace_ELBO()).run(jax.random.key(2), 10_000, ...)``, mapped to the same flat space, and
  its ELBO gap to the optimum from the same common draws;
- the commit, package versions and date.

Usage:
  python experiments/corpus/make_references.py                 # every model (~15 min)
  python experiments/corpus/make_references.py --only garch11  # one (repeatable)
"""

import argparse
import contextlib
import datetime
import importlib.metadata
import io
import json
import pathlib
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin  # noqa: E402
from numpyro.infer import SVI, Trace_ELBO  # noqa: E402
from numpyro.infer.autoguide import AutoNormal  # noqa: E402
from numpyro.infer.util import potential_energy  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import vi  # noqa: E402
from experiments.benchmarks import record  # noqa: E402
from experiments.corpus import scoring  # noqa: E402
from experiments.corpus.models import CORPUS  # noqa: E402

SIGNIFICANT = 8


def rounded(x):
    """A number or array as JSON numbers to 8 significant digits (None for NaN or inf)."""
    if np.ndim(x) == 0:
        x = float(x)
        return float(f"{x:.{SIGNIFICANT}g}") if np.isfinite(x) else None
    return [rounded(v) for v in np.asarray(x, np.float64)]


def autonormal_fit(case, num_steps: int):
    """NumPyro's recipe; returns (flat params, the constrained-space params dict)."""
    guide = AutoNormal(case.model)
    svi = SVI(case.model, guide, numpyro.optim.Adam(1e-2), Trace_ELBO())
    with contextlib.redirect_stderr(io.StringIO()):
        result = svi.run(
            jax.random.key(2), num_steps, *case.args, progress_bar=False, **case.kwargs
        )
    return scoring.autonormal_params(result.params), result.params


def check_site_order(case, target, flat, params) -> None:
    """Raises unless the flat AutoNormal loc gives NumPyro's own log density at its sites."""
    suffix = "_auto_loc"
    sites = {k[: -len(suffix)]: v for k, v in params.items() if k.endswith(suffix)}
    expected = -potential_energy(case.model, case.args, case.kwargs, sites)
    got = target.logdensity_fn(flat.loc)
    if not np.allclose(got, expected, rtol=1e-8, atol=1e-8, equal_nan=True):
        raise AssertionError(f"site order: log density {got} at AutoNormal's loc, not {expected}")


def nuts_moments(case, target, args) -> dict:
    """Moments and diagnostics of NUTS draws of ``target``, each chain from its own start."""
    # Chain c starts at NumPyro's init_to_uniform point for jax.random.key(c), and
    # nuts_draws broadcasts init_position to (num_chains, D), so a stack of starts spreads
    # the chains (R-hat then sees local modes that one start would hide).
    starts = jnp.stack(
        [
            vi.from_numpyro(
                case.model, *case.args, rng_key=jax.random.key(c), **case.kwargs
            ).init_position
            for c in range(args.chains)
        ]
    )
    draws = vi.nuts_draws(
        jax.random.key(1),
        target._replace(init_position=starts) if args.chains > 1 else target,
        args.num_samples,
        num_warmup=args.num_warmup,
        num_chains=args.chains,
    )
    chains = np.asarray(draws, np.float64).reshape(args.chains, args.num_samples, target.dim)
    flat = chains.reshape(-1, target.dim)
    rhat = split_gelman_rubin(chains) if args.chains > 1 else np.full(target.dim, np.nan)
    return dict(
        mean=flat.mean(axis=0),
        sd=flat.std(axis=0, ddof=1),
        rhat=rhat,
        ess=effective_sample_size(chains),
    )


def reference(name: str, case, args) -> dict:
    target = vi.from_numpyro(case.model, *case.args, **case.kwargs)
    dim = target.dim
    started = time.perf_counter()
    nuts = nuts_moments(case, target, args)
    nuts_seconds = time.perf_counter() - started

    # The optimum is the better of two fits: from the target's initial point (where the
    # default fit starts) and from NUTS's moments, for models whose ELBO has local optima.
    started = time.perf_counter()
    method = vi.FixedDraws(num_draws=args.num_draws, max_steps=args.max_steps)
    at_nuts = vi.MeanFieldParams(jnp.asarray(nuts["mean"]), jnp.log(nuts["sd"]))
    fits = {
        "target.init_position": vi.fit(jax.random.key(0), target, method=method),
        "NUTS moments": vi.fit(jax.random.key(0), target, method=method, init_params=at_nuts),
    }
    fit_seconds = time.perf_counter() - started

    started = time.perf_counter()
    autonormal, autonormal_raw = autonormal_fit(case, args.svi_steps)
    svi_seconds = time.perf_counter() - started
    check_site_order(case, target, autonormal, autonormal_raw)

    params = [f.params for f in fits.values()] + [autonormal]
    elbos = scoring.common_draw_elbos(
        jax.random.key(3), target.logdensity_fn, params, args.elbo_draws
    )
    start_elbos = dict(zip(fits, elbos[:2], strict=True))
    start = max(start_elbos, key=start_elbos.get)
    optimum, elbo = fits[start], start_elbos[start]
    mean_error = scoring.max_mean_error(optimum.params.loc, nuts["mean"], nuts["sd"])
    print(
        f"{name}: D={dim} optimum {optimum.stop_reason} in {optimum.num_steps} steps from "
        f"{start} (ELBOs by start {[round(float(e), 4) for e in elbos[:2]]}; {fit_seconds:.1f} "
        f"s), NUTS {nuts_seconds:.1f} s (max R-hat {np.max(nuts['rhat']):.3f}, min ESS "
        f"{np.min(nuts['ess']):.0f}), AutoNormal {svi_seconds:.1f} s, gap "
        f"{elbo - elbos[2]:.4f} nats; optimum mean vs NUTS {mean_error:.3f} sd",
        flush=True,
    )
    return {
        "name": name,
        "note": case.note,
        "dim": dim,
        "optimum": {
            "method": f"vi.FixedDraws(num_draws={args.num_draws}, max_steps={args.max_steps})",
            "rng_key": 0,
            "start": start,
            "elbo_by_start": {k: rounded(v) for k, v in start_elbos.items()},
            "status": optimum.stop_reason,
            "num_steps": optimum.num_steps,
            "elbo": rounded(elbo),
            "loc": rounded(optimum.params.loc),
            "log_scale": rounded(optimum.params.log_scale),
            "max_mean_error_vs_nuts": rounded(mean_error),
        },
        "nuts": {
            "num_chains": args.chains,
            "num_samples": args.num_samples,
            "num_warmup": args.num_warmup,
            "rng_key": 1,
            "mean": rounded(nuts["mean"]),
            "sd": rounded(nuts["sd"]),
            "split_rhat": rounded(nuts["rhat"]),
            "ess": rounded(nuts["ess"]),
            "max_split_rhat": rounded(np.max(nuts["rhat"])),
            "min_ess": rounded(np.min(nuts["ess"])),
        },
        "autonormal": {
            "recipe": f"SVI(model, AutoNormal(model), Adam(1e-2), Trace_ELBO()), "
            f"{args.svi_steps} steps, rng_key 2",
            "elbo": rounded(elbos[2]),
            "gap": rounded(elbo - elbos[2]),
            "loc": rounded(autonormal.loc),
            "log_scale": rounded(autonormal.log_scale),
        },
        "elbo_draws": {"num_draws": args.elbo_draws, "rng_key": 3},
        "commit": record.git_commit(),
        "versions": {
            p: importlib.metadata.version(p) for p in ("jax", "jaxlib", "numpyro", "numpy")
        },
        "date": datetime.datetime.now(datetime.UTC).strftime(record.DATE_FORMAT),
        "seconds": {
            "optimum": round(fit_seconds, 1),
            "nuts": round(nuts_seconds, 1),
            "autonormal": round(svi_seconds, 1),
        },
    }


def record_json(result: dict) -> str:
    """The reference as JSON: one key per line at the top, lists of numbers on one line."""
    lines = ["{"]
    items = list(result.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        lines.append(f" {json.dumps(key)}: {text}{comma}")
    return "\n".join([*lines, "}"]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(CORPUS), help="a model")
    parser.add_argument("--num-draws", type=int, default=4096)
    parser.add_argument("--max-steps", type=int, default=20_000)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--num-warmup", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--svi-steps", type=int, default=10_000)
    parser.add_argument("--elbo-draws", type=int, default=8192)
    parser.add_argument("--output-dir", type=pathlib.Path, default=scoring.REFERENCES)
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for name in args.only or CORPUS:
        result = reference(name, CORPUS[name], args)
        path = args.output_dir / f"{name}.json"
        path.write_text(record_json(result))


if __name__ == "__main__":
    main()
