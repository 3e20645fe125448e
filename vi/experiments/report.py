"""``report.md``: a results directory's table of metrics and its figures, in Markdown."""

import json
import math
from collections import Counter
from pathlib import Path

from vi.experiments import results
from vi.experiments.figures import METRICS

SUMMARY_COLUMNS = (*METRICS, ("fit.num_steps", "steps"))


class ReportError(ValueError):
    """A directory that holds no results to report on."""


def write_report(directory: str | Path) -> Path:
    """Writes ``<directory>/report.md`` from its ``metrics.csv``, figures and provenance.

    Args:
      directory: a results directory of ``vifit run`` (``<output>/<config name>``).

    Returns:
      The path of the report.

    Raises:
      ReportError: when ``directory`` has no ``metrics.csv``.
    """
    layout = results.Layout(Path(directory))
    if not layout.metrics.is_file():
        raise ReportError(
            f"{str(layout.root)!r} has no metrics.csv: give the directory `vifit run` wrote "
            "(<output>/<config name>), after a run has finished"
        )
    rows = results.read_metrics(layout.metrics)
    lines = [f"# {layout.root.resolve().name}", ""]
    lines += _provenance_lines(layout)
    lines += ["## Results (mean ± sd across seeds)", ""]
    lines += _summary_table(rows)
    lines += ["", f"One row per run: [metrics.csv](metrics.csv) ({len(rows)} runs).", ""]
    lines += _figure_lines(layout, list(dict.fromkeys(row["point"] for row in rows)))
    if layout.config.is_file():
        lines += [
            "## Config (resolved)",
            "",
            "```yaml",
            layout.config.read_text().rstrip(),
            "```",
            "",
        ]
    results.atomic_write(layout.report, "\n".join(lines))
    return layout.report


def _provenance_lines(layout: results.Layout) -> list[str]:
    if not layout.provenance.is_file():
        return []
    info = json.loads(layout.provenance.read_text())
    versions = ", ".join(f"{name} {version}" for name, version in info["versions"].items())
    return [
        f"Computed {info['timestamp']} on {info['backend']} ({info['device_kind']}), "
        f"git commit `{info['git_commit']}`, config hash `{info['config_hash']}`.",
        f"Versions: {versions}.",
        "",
    ]


def _summary_table(rows: list[dict[str, str]]) -> list[str]:
    present = [
        (column, title) for column, title in SUMMARY_COLUMNS if any(row.get(column) for row in rows)
    ]
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault((row["point"], row["objective"]), []).append(row)
    header = ["target / point", "objective", "seeds", *(title for _, title in present), "stopped"]
    table = [_table_row(header), "|" + "---|" * len(header)]
    for (point, objective), members in groups.items():
        cells = [point, objective, str(len(members))]
        cells += [_mean_sd([row.get(column, "") for row in members]) for column, _ in present]
        reasons = Counter(row.get("fit.stop_reason", "") for row in members)
        cells.append(", ".join(f"{reason} ×{count}" for reason, count in sorted(reasons.items())))
        table.append(_table_row(cells))
    return table


def _table_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _mean_sd(cells: list[str]) -> str:
    values = [float(cell) for cell in cells if cell not in ("", "None")]
    values = [value for value in values if math.isfinite(value)]
    if not values:
        return "–"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return _number(mean)
    sd = math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - 1))
    return f"{_number(mean)} ± {_number(sd, 2)}"


def _number(value: float, digits: int = 3) -> str:
    return f"{value:.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"


def _figure_lines(layout: results.Layout, points: list[str]) -> list[str]:
    order = {"contours.png": 0, "metrics.png": 1, "traces.png": 3}
    figures = sorted(layout.figures.glob("*.png"), key=lambda p: (order.get(p.name, 2), p.name))
    captions = {
        "contours.png": "Target densities with the fitted q of each objective (1- and 2-sd ellipses)",
        "metrics.png": "Diagnostics across seeds",
        "traces.png": "Objective during optimisation",
    }
    lines = ["## Figures", ""] if figures else []
    for path in figures:
        caption = captions.get(path.name) or f"Marginals: {_point_of(path, points)}"
        lines += [f"### {caption}", "", f"![{caption}](figures/{path.name})", ""]
    return lines


def _point_of(path: Path, points: list[str]) -> str:
    """The sweep point of ``marginals_<index>_<slug>.png``: its label from ``metrics.csv``
    (rows come point by point), as the file name's slug has lost its punctuation."""
    _, index, slug = [*path.stem.split("_", 2), "", ""][:3]
    if index.isdigit() and int(index) < len(points):
        return points[int(index)]
    return slug.replace("_", " ")
