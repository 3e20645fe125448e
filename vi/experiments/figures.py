"""Gathers what the plots show from the stored runs, and writes ``figures/*.png``.

The numbers come from the run files on disk, so figures are the same whether a
run was computed now or skipped as done; only target densities on a grid and
reference draws for marginals are recomputed (from the same keys).
"""

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vi.experiments import plots, results
from vi.experiments.config import Experiment, SweepPoint
from vi.families import family
from vi.families.full_rank import FullRankParams
from vi.families.low_rank import LowRankParams
from vi.targets import Target

GRID_SIZE = 160
METRICS = (
    ("diagnostics.kl_qp", "KL(q ‖ p)  (reverse)"),
    ("diagnostics.kl_pq", "KL(p ‖ q)  (forward)"),
    ("diagnostics.mean_error", "largest |mean error| / sd of p"),
    ("diagnostics.log_variance_ratio", "mean log(var q / var p)"),
    ("diagnostics.covered_weight", "mass of p's modes inside q's 95% region"),
    ("diagnostics.pareto_k", "PSIS k-hat (reliable below 0.7)"),
)
"""Metric columns drawn as bars, with their panel titles (absent or all-NaN ones are left out)."""


def write_figures(
    experiment: Experiment,
    runs: list,
    layout: results.Layout,
    table: results.Table,
    target_of: Callable[[int], Target],
    reference: Callable[[SweepPoint, Target], np.ndarray | None],
) -> list[Path]:
    """Writes the contour, trace, metric and marginal figures of an experiment.

    Args:
      experiment: the experiment.
      runs: its planned runs (``experiment.plan``), all done.
      layout: the output directory.
      table: its runs.
      target_of: the built target of the point with a given index.
      reference: target draws of a point for its marginal plots, or None.

    Returns:
      The paths written.
    """
    records = {run.run_id: table.record(run.run_id) for run in runs}
    labels = list(dict.fromkeys(run.objective.label for run in runs))
    colour = plots.colours(labels)
    contours, traces, written = [], [], []
    by_point: dict[int, list] = {}
    for run in runs:
        by_point.setdefault(run.point, []).append(run)
    for index, point in enumerate(experiment.points):
        # Every seed enters the metrics figure; the per-fit drawings take the first few.
        drawn_seeds = set(point.config.seeds[:MAX_DRAWN_SEEDS])
        point_runs = [run for run in by_point.get(index, []) if run.seed in drawn_seeds]
        fits = [_fit_summary(run, records[run.run_id]) for run in point_runs]
        with jax.enable_x64(point.config.precision == "float64"):
            target = target_of(index)
            if target.dim == 2:
                contours.append(_contour_panel(point.label, target, fits))
            else:
                path = layout.figures / f"marginals_{index:02d}_{_slug(point.label)}.png"
                draws = reference(point, target)
                panels = _marginal_panels(point, target, fits, draws)
                title = f"Marginals of {point.label} (D = {target.dim}) and of each fitted q"
                results.atomic_write(path, plots.marginal_figure(panels, colour, title))
                written.append(path)
        for objective in point.config.objectives:
            chosen = [run for run in point_runs if run.objective == objective]
            ylabel = _trace_label(objective)
            series = [table.trace(run.run_id) for run in chosen]
            traces.append(plots.TracePanel(point.label, objective.label, ylabel, series))
    if contours:
        written.append(_write(layout, "contours.png", plots.contour_figure(contours, colour)))
    written.append(_write(layout, "traces.png", plots.trace_figure(traces, colour)))
    metrics, values = _metric_values(experiment, runs, records)
    if metrics:
        points = [point.label for point in experiment.points]
        figure = plots.metrics_figure(metrics, values, points, colour)
        written.append(_write(layout, "metrics.png", figure))
    _remove_stale(layout, written)
    return written


def _remove_stale(layout: results.Layout, written: list[Path]) -> None:
    """Removes figures of ours that this call did not write (from an older config or version),
    so that the directory, and the report made from it, shows only the current ones."""
    for pattern in ("contours.png", "traces.png", "metrics.png", "marginals_*.png"):
        for path in layout.figures.glob(pattern):
            if path not in written:
                path.unlink(missing_ok=True)


def _slug(text: str) -> str:
    return re.sub(r"[\W_]+", "_", text).strip("_")[:40] or "point"


def _write(layout: results.Layout, name: str, png: bytes) -> Path:
    path = layout.figures / name
    results.atomic_write(path, png)
    return path


MAX_DRAWN_SEEDS = 16
"""Seeds of a point drawn fit by fit (contours, marginals, traces); a sweep of thousands of
seeds would draw thousands of ellipses and lines. The metrics figure takes every seed."""


def _trace_label(objective) -> str:
    """What a trace holds: the library records what it maximises (minus the loss)."""
    if objective.name == "reverse_kl":
        return "ELBO"
    if objective.name == "forward_kl":
        return "$E_p[\\log q]$ (− cross-entropy)"
    if objective.name == "importance_weighted":
        return "IW bound"
    if objective.alpha < 0:  # the bound below 0 is minimised: log Z + D_{1-α}(p || q)
        return f"$-\\log Z - D_{{{1 - objective.alpha:g}}}(p \\| q)$"
    return f"Rényi bound $L_{{{objective.alpha:g}}}$"


def _fit_summary(run, record: dict[str, Any]) -> plots.FitSummary:
    params = record["params"]
    loc = np.asarray(params["loc"], dtype=float)
    if set(params) == {"loc", "log_scale"}:  # mean-field
        scale = np.exp(np.asarray(params["log_scale"], dtype=float))
        return plots.FitSummary(run.objective.label, run.seed, loc, scale)
    kind = FullRankParams if "off_diag" in params else LowRankParams
    q = kind(**{name: jnp.asarray(value, float) for name, value in params.items()})
    covariance = np.asarray(family.covariance(q), dtype=float)
    scale = np.sqrt(np.diagonal(covariance))
    correlation = covariance[0, 1] / (scale[0] * scale[1]) if loc.size > 1 else 0.0
    return plots.FitSummary(run.objective.label, run.seed, loc, scale, float(correlation))


def _contour_panel(title: str, target: Target, fits) -> plots.ContourPanel:
    centres, spreads = [], []
    if target.truth is not None:
        centres.append(np.asarray(target.truth.mean))
        spreads.append(3.0 * np.sqrt(np.asarray(target.truth.variance)))
    for fit in fits:
        if np.all(np.isfinite(fit.loc)) and np.all(np.isfinite(fit.scale)):
            centres.append(fit.loc)
            spreads.append(2.5 * fit.scale)
    if not centres:
        centres, spreads = [np.zeros(2)], [np.full(2, 3.0)]
    low = np.min([c - s for c, s in zip(centres, spreads, strict=True)], axis=0)
    high = np.max([c + s for c, s in zip(centres, spreads, strict=True)], axis=0)
    x = np.linspace(low[0], high[0], GRID_SIZE)
    y = np.linspace(low[1], high[1], GRID_SIZE)
    grid = jnp.stack(jnp.meshgrid(jnp.asarray(x), jnp.asarray(y)), axis=-1).reshape(-1, 2)
    grid = grid.astype(target.init_position.dtype)
    log_density = jax.jit(jax.vmap(target.logdensity_fn))(grid)
    return plots.ContourPanel(
        title, x, y, np.asarray(log_density).reshape(GRID_SIZE, GRID_SIZE), fits
    )


def _marginal_panels(point: SweepPoint, target: Target, fits, draws) -> list[plots.MarginalPanel]:
    coordinates = point.config.plots.coordinates
    if coordinates is None:
        coordinates = tuple(range(min(4, target.dim)))
    coordinates = [c for c in coordinates if c < target.dim]
    label = "p (exact draws)" if target.sample_fn is not None else "p (NUTS draws)"
    return [
        plots.MarginalPanel(
            f"coordinate {c + 1}",
            c,
            None if draws is None else np.asarray(draws)[:, c],
            label,
            fits,
        )
        for c in coordinates
    ]


def _metric_values(experiment: Experiment, runs, records):
    values: dict[tuple[str, str, str], list[float]] = {}
    for run in runs:
        columns = results.metric_columns(records[run.run_id])
        point = experiment.points[run.point].label
        for column, _ in METRICS:
            value = columns.get(column)
            value = np.nan if value is None else float(value)
            values.setdefault((column, point, run.objective.label), []).append(value)
    arrays = {key: np.asarray(seeds) for key, seeds in values.items()}
    present = [
        (column, title)
        for column, title in METRICS
        if any(np.isfinite(a).any() for key, a in arrays.items() if key[0] == column)
    ]
    return present, arrays
