"""Figures of an experiment, drawn with matplotlib's Agg canvas into PNG bytes.

Functions take plain NumPy data (``vi.experiments.figures`` assembles it) and
return PNG bytes; they never touch pyplot's global state. This is the only
module that imports matplotlib.
"""

import io
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse

_PALETTE = (
    *("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"),
    *("#17becf", "#bcbd22", "#7f7f7f"),  # eight objectives and more (tab10)
)


class FitSummary(NamedTuple):
    """One fitted Gaussian, as drawn: ``loc`` and marginal ``scale`` (D,), and the
    correlation of its first two coordinates (0 for a mean-field fit)."""

    objective: str
    seed: int
    loc: np.ndarray
    scale: np.ndarray
    correlation: float = 0.0


def _ellipse_axes(fit: FitSummary) -> tuple[float, float, float]:
    """The half-axes of a fit's 1-sd ellipse in its first two coordinates, and its angle
    in degrees."""
    if fit.correlation == 0.0:
        return fit.scale[0], fit.scale[1], 0.0
    s0, s1 = fit.scale[0], fit.scale[1]
    covariance = np.array([[s0**2, fit.correlation * s0 * s1], [fit.correlation * s0 * s1, s1**2]])
    values, vectors = np.linalg.eigh(covariance)
    angle = math.degrees(math.atan2(vectors[1, 1], vectors[0, 1]))
    return math.sqrt(values[1]), math.sqrt(max(values[0], 0.0)), angle


class ContourPanel(NamedTuple):
    """A 2-D target on a grid with the fits drawn over it.

    Attributes:
      title: the panel's title (the sweep point).
      x: (nx,) grid abscissae.
      y: (ny,) grid ordinates.
      log_density: (ny, nx) the target's log density on the grid.
      fits: the fits to draw as ellipses.
    """

    title: str
    x: np.ndarray
    y: np.ndarray
    log_density: np.ndarray
    fits: Sequence[FitSummary]


class TracePanel(NamedTuple):
    """The objective after each step of every seed's fit of one objective at one point."""

    title: str
    objective: str
    ylabel: str
    traces: Sequence[np.ndarray]


class MarginalPanel(NamedTuple):
    """One coordinate's marginal: target draws (or None) and the fitted Gaussians."""

    title: str
    coordinate: int
    draws: np.ndarray | None
    draws_label: str
    fits: Sequence[FitSummary]


def colours(objectives: Sequence[str]) -> dict[str, str]:
    """A fixed colour per objective label, in the order given."""
    return {label: _PALETTE[i % len(_PALETTE)] for i, label in enumerate(objectives)}


def contour_figure(panels: Sequence[ContourPanel], colour: dict[str, str]) -> bytes:
    """Target density contours, one panel per target, with each fit's 1- and 2-sd ellipses."""
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(max(4.6 * columns, 7.0), 4.4 * rows + 1.0), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, panel in zip(axes, panels, strict=False):
        density = np.exp(panel.log_density - np.nanmax(panel.log_density))
        ax.contourf(panel.x, panel.y, density, levels=10, cmap="Greys", alpha=0.85)
        for fit in panel.fits:
            width, height, angle = _ellipse_axes(fit)
            for k, style in ((1, "-"), (2, "--")):
                ax.add_patch(
                    Ellipse(
                        tuple(fit.loc[:2]),
                        2 * k * width,
                        2 * k * height,
                        angle=angle,
                        fill=False,
                        edgecolor=colour[fit.objective],
                        linestyle=style,
                        linewidth=1.6,
                    )
                )
            ax.plot(*fit.loc[:2], marker="x", color=colour[fit.objective], markersize=7)
        ax.set_xlim(panel.x[0], panel.x[-1])
        ax.set_ylim(panel.y[0], panel.y[-1])
        ax.set_aspect("equal", adjustable="box")
        ax.set_title(panel.title)
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=c, linewidth=2, label=label) for label, c in colour.items()]
    handles += [
        Line2D([], [], color="black", linestyle="-", label="1 sd of q"),
        Line2D([], [], color="black", linestyle="--", label="2 sd of q"),
        Line2D([], [], color="black", marker="x", linestyle="none", label="mean of q"),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3))
    figure.suptitle("Target density (grey) and the fitted Gaussians q (one per seed)")
    return _png(figure)


def trace_figure(panels: Sequence[TracePanel], colour: dict[str, str]) -> bytes:
    """The objective against the optimisation step, one panel per point and objective.

    Each point is a row with one column per objective; with one objective per
    point, the panels fill rows of up to three.
    """
    grid = _trace_grid(panels)
    rows, columns = len(grid), len(grid[0])
    figure = Figure(figsize=(4.6 * columns, 3.3 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax, panel in zip(axes.ravel(), [panel for row in grid for panel in row], strict=True):
        if panel is None:
            ax.set_visible(False)
            continue
        finite = []
        for trace in panel.traces:
            steps = np.arange(1, trace.shape[0] + 1)
            ax.plot(steps, trace, color=colour[panel.objective], alpha=0.7, linewidth=1)
            finite.append(trace[np.isfinite(trace)])
        values = np.concatenate(finite) if finite else np.array([])
        if values.size > 1:
            low, high = float(values.min()), float(values.max())
            pad = 0.05 * (high - low) or 1.0
            settled = np.concatenate([t[t.size // 2 :] for t in finite])
            bulk = float(np.max(np.abs(settled))) if settled.size else 0.0
            if bulk > 0 and high - low > 20 * (np.ptp(settled) + 1e-12) and high - low > 10 * bulk:
                # A start orders of magnitude away would flatten the rest of the path:
                # linear where the path settles, logarithmic beyond, the whole path in view.
                ax.set_yscale("symlog", linthresh=bulk)
                pad = 0.1 * bulk
            ax.set_ylim(low - pad, high + pad)
        ax.set_xscale("log")
        ax.set_title(f"{panel.title}\n{panel.objective}", fontsize=10)
        ax.set_xlabel("optimisation step")
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
    figure.suptitle("Objective during optimisation (one line per seed)")
    return _png(figure)


def _trace_grid(panels: Sequence[TracePanel]) -> list[list[TracePanel | None]]:
    by_point: dict[str, list[TracePanel]] = {}
    for panel in panels:
        by_point.setdefault(panel.title, []).append(panel)
    columns = max(len(row) for row in by_point.values())
    if columns > 1:
        return [row + [None] * (columns - len(row)) for row in by_point.values()]
    columns = min(3, len(panels))
    flat = [*panels, *[None] * (-len(panels) % columns)]
    return [flat[i : i + columns] for i in range(0, len(flat), columns)]


def metrics_figure(
    metrics: Sequence[tuple[str, str]],
    values: dict[tuple[str, str, str], np.ndarray],
    points: Sequence[str],
    colour: dict[str, str],
) -> bytes:
    """Bars of metrics across seeds (mean ± sd), grouped by point, one bar per objective.

    Args:
      metrics: ``(column, title)`` of each metric panel.
      values: ``(column, point, objective)`` -> the metric of every seed (S,).
      points: the point labels, in order.
      colour: the colour of each objective.
    """
    columns = min(3, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    width = max(4.6, 0.9 * len(points) * max(1, len(colour)) * 0.6 + 1.5)
    figure = Figure(figsize=(width * columns, 3.6 * rows + 0.8), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    bar = 0.8 / max(2, len(colour))
    for ax, (column, title) in zip(axes, metrics, strict=False):
        for j, objective in enumerate(colour):
            offset = (j - (len(colour) - 1) / 2) * bar
            for i, point in enumerate(points):
                seeds = values.get((column, point, objective))
                if seeds is None:
                    continue
                seeds = seeds[np.isfinite(seeds)]
                if seeds.size == 0:
                    # Fitted, but the metric does not apply (a funnel has no modes to cover).
                    ax.text(
                        i + offset,
                        0.0,
                        "n/a",
                        ha="center",
                        va="bottom",
                        fontsize=9,
                        color=colour[objective],
                    )
                    continue
                sd = float(np.std(seeds, ddof=1)) if seeds.size > 1 else 0.0
                ax.bar(
                    i + offset,
                    float(np.mean(seeds)),
                    bar,
                    yerr=sd,
                    capsize=3,
                    color=colour[objective],
                    alpha=0.85,
                )
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_xlim(-0.5, len(points) - 0.5)
        ax.set_xticks(range(len(points)), points, rotation=20, ha="right", fontsize=8)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=c, linewidth=6, label=label) for label, c in colour.items()]
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4))
    figure.suptitle("Diagnostics of the fits: mean ± sd across seeds")
    return _png(figure)


def marginal_figure(panels: Sequence[MarginalPanel], colour: dict[str, str], title: str) -> bytes:
    """Selected marginals of a D > 2 target (histogram of its draws) and of each fitted q."""
    columns = min(4, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(3.8 * columns, 3.2 * rows + 0.9), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    draws_label = None
    for ax, panel in zip(axes, panels, strict=False):
        low, high = _marginal_range(panel)
        if panel.draws is not None:
            draws_label = panel.draws_label
            inside = panel.draws[(panel.draws >= low) & (panel.draws <= high)]
            ax.hist(inside, bins=60, range=(low, high), density=True, color="0.75")
        grid = np.linspace(low, high, 400)
        for fit in panel.fits:
            loc, scale = fit.loc[panel.coordinate], fit.scale[panel.coordinate]
            pdf = np.exp(-0.5 * ((grid - loc) / scale) ** 2) / (scale * math.sqrt(2 * math.pi))
            ax.plot(grid, pdf, color=colour[fit.objective], linewidth=1.3, alpha=0.8)
        ax.set_xlim(low, high)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(f"$x_{{{panel.coordinate + 1}}}$")
        ax.set_ylabel("density")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    handles = [
        Line2D([], [], color=c, linewidth=2, label=f"q: {label}") for label, c in colour.items()
    ]
    if draws_label is not None:
        handles.insert(0, Line2D([], [], color="0.75", linewidth=6, label=draws_label))
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3))
    figure.suptitle(title)
    return _png(figure)


def _marginal_range(panel: MarginalPanel) -> tuple[float, float]:
    ends = []
    if panel.draws is not None and panel.draws.size:
        ends += list(np.nanpercentile(panel.draws, [0.5, 99.5]))
    for fit in panel.fits:
        loc, scale = fit.loc[panel.coordinate], fit.scale[panel.coordinate]
        ends += [loc - 3.5 * scale, loc + 3.5 * scale]
    ends = [e for e in ends if np.isfinite(e)] or [-1.0, 1.0]
    low, high = float(min(ends)), float(max(ends))
    return (low - 0.5, high + 0.5) if high - low < 1e-9 else (low, high)


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()
