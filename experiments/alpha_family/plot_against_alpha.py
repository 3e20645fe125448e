"""Draws the alpha-family study's metrics against the objective's order.

Reads ``metrics.csv`` of a ``configs/alpha_family/default.yaml`` run and draws, for each
target, the mean over seeds (± sd) of the mass of p's modes inside q's 95 % region, the
mean log variance ratio and both KLs, with the objectives on the x axis from the most
mode-seeking (α = 2) to forward KL.

  python experiments/alpha_family/plot_against_alpha.py results/alpha_family
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


def plot(results: pathlib.Path, out: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives, targets, values = _read(results)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4.6), layout="constrained")
    xs = range(len(objectives))
    for ax, (column, title) in zip(axes, PANELS, strict=True):
        for target in targets:
            stats = [_mean_sd(values[(target, o, column)]) for o in objectives]
            if all(math.isnan(m) for m, _ in stats):
                continue
            ax.errorbar(
                xs,
                [m for m, _ in stats],
                yerr=[s for _, s in stats],
                marker="o",
                capsize=3,
                label=target,
            )
        if column.endswith("kl_qp") or column.endswith("kl_pq"):
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xticks(list(xs), objectives, rotation=35, ha="right", fontsize=8)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)  # the first panel has no line for a target without modes
    fig.suptitle("From mode-seeking (left) to mass-covering (right): mean ± sd over seeds")
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=pathlib.Path, help="the run's folder (with metrics.csv)")
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=None,
        help="the PNG to write (default: <results>/figures/against_alpha.png)",
    )
    args = parser.parse_args()
    out = args.out or args.results / "figures" / "against_alpha.png"
    plot(args.results, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
