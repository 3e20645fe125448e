"""Draws the alpha-family study's metrics against the objective's order.

Reads ``metrics.csv`` of a ``configs/alpha_family/default.yaml`` run and draws, for each
target, the mean over seeds (± sd) of the mass of p's modes inside q's 95 % region, the
mean log variance ratio and both KLs, with the objectives on the x axis from the most
mode-seeking (α = 2) to α = −1. Given two runs (the mean-field ``default.yaml`` and the
full-rank ``full_rank.yaml``), it draws the first solid and the second dashed, a target in
one colour.

  python experiments/alpha_family/plot_against_alpha.py results/alpha_family
  python experiments/alpha_family/plot_against_alpha.py results/alpha_family \
      results/alpha_family_full_rank --labels mean-field full-rank --out against_families.png
"""

import argparse
import csv
import math
import pathlib
from collections import defaultdict

PANELS = (
    ("diagnostics.covered_weight", "mass of p's modes in q's 95% region"),
    ("diagnostics.log_variance_ratio", "mean log(var q / var p)"),
    ("diagnostics.kl_qp", "KL(q ‖ p)"),
    ("diagnostics.kl_pq", "KL(p ‖ q)"),
)


def _read(path: pathlib.Path):
    with open(path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    objectives = list(dict.fromkeys(row["objective"] for row in rows))
    targets = list(dict.fromkeys(row["point"] for row in rows))
    values = defaultdict(list)
    for row in rows:
        for column, _ in PANELS:
            value = float(row[column]) if row[column] not in ("", "nan") else math.nan
            values[(row["point"], row["objective"], column)].append(value)
    return objectives, targets, values


def _mean_sd(xs):
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return math.nan, math.nan
    mean = sum(xs) / len(xs)
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / max(len(xs) - 1, 1))


def plot(runs: list[pathlib.Path], out: pathlib.Path, labels: list[str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    studies = [_read(path) for path in runs]
    objectives, targets, _ = studies[0]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4.6), layout="constrained")
    xs = range(len(objectives))
    colours = {t: f"C{i}" for i, t in enumerate(targets)}
    styles = ("-", "--", ":")
    for ax, (column, title) in zip(axes, PANELS, strict=True):
        for style, (_, study_targets, values) in zip(styles, studies, strict=False):
            for target in study_targets:
                stats = [_mean_sd(values[(target, o, column)]) for o in objectives]
                if all(math.isnan(m) for m, _ in stats):
                    continue
                ax.errorbar(
                    xs,
                    [m for m, _ in stats],
                    yerr=[s for _, s in stats],
                    marker="o",
                    capsize=3,
                    linestyle=style,
                    color=colours.get(target),
                    label=target if style == "-" else None,
                )
        if column.endswith("kl_qp") or column.endswith("kl_pq"):
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xticks(list(xs), objectives, rotation=35, ha="right", fontsize=8)
        ax.grid(alpha=0.3)
    handles, names = axes[1].get_legend_handles_labels()
    if len(studies) > 1:
        labels = labels or [path.name for path in runs]
        handles += [Line2D([], [], color="k", linestyle=s) for s in styles[: len(studies)]]
        names += labels
    axes[1].legend(handles, names, fontsize=8)  # the first panel has no line for the funnel
    fig.suptitle("From mode-seeking (left) to mass-covering (right): mean ± sd over seeds")
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "results", type=pathlib.Path, nargs="+", help="the runs' folders (with metrics.csv)"
    )
    parser.add_argument("--labels", nargs="+", default=None, help="a name for each run")
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=None,
        help="the PNG to write (default: <results>/figures/against_alpha.png)",
    )
    args = parser.parse_args()
    out = args.out or args.results[0] / "figures" / "against_alpha.png"
    plot(args.results, out, args.labels)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
