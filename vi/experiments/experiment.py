"""Running a validated experiment: plan the runs, skip the done ones, store, plot and report.

A *run* is one sweep point x one objective x one seed. Runs of one point and
objective form a *group*; its seeds are cut, in order, into *chunks* of at most
``CHUNK_RUNS``, each fitted by one ``runner.run_group`` call and stored as one part of
the results table. The cut depends on the config alone, so a rerun fits a chunk with the
same seeds beside it and gets the same numbers.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from vi.experiments import config as config_io
from vi.experiments import figures, registry, results, runner, schema
from vi.experiments.checks import ConfigError
from vi.experiments.config import Experiment, SweepPoint
from vi.experiments.report import write_report
from vi.experiments.schema import Config, ObjectiveSpec
from vi.experiments.sweep import value_label
from vi.targets import Target

RESULTS_FORMAT = 1
"""Part of every run id: bump it when the content of a run record changes."""

CHUNK_RUNS = 1000
"""Seeds of a group fitted (and stored) together: what an interrupted sweep can lose."""


class Run(NamedTuple):
    """One planned run.

    Attributes:
      run_id: hash of ``config``.
      point: index of its sweep point in ``Experiment.points``.
      objective: which fit.
      seed: its seed.
      config: everything that decides its numbers (what the id hashes).
    """

    run_id: str
    point: int
    objective: ObjectiveSpec
    seed: int
    config: dict[str, Any]


class Progress(NamedTuple):
    """A progress event: ``done`` of ``total`` runs finished (or skipped), and what happened
    or is about to start."""

    done: int
    total: int
    message: str


class Summary(NamedTuple):
    """What ``run_experiment`` did.

    Attributes:
      layout: where the results are.
      num_runs: runs in the plan.
      num_skipped: runs whose results existed already.
    """

    layout: results.Layout
    num_runs: int
    num_skipped: int


def run_config(config: Config, objective: ObjectiveSpec, seed: int) -> dict[str, Any]:
    """The part of a point's config that decides one run's numbers (labels and paths left out).

    The runs of one point and objective differ only in ``seed``: ``plan`` builds the rest
    once per group.
    """
    plain = schema.to_plain(config)
    for key in ("name", "output", "devices", "max_runs", "sweep", "seeds", "plots", "objectives"):
        plain.pop(key)
    plain["target"].pop("label", None)
    if config.target.data is not None:
        plain["target"]["data"] = {"sha256": results.file_hash(config.target.data)}
    fixed_draws = objective.name == "reverse_kl" and objective.method == "fixed_draws"
    if fixed_draws:
        plain.pop("optimizer")
    else:
        plain["stopping"].pop("tol")
    plain["objective"] = {
        key: value for key, value in schema.to_plain(objective).items() if key != "label"
    }
    plain["seed"] = seed
    plain["format"] = RESULTS_FORMAT
    return plain


def plan(experiment: Experiment) -> list[Run]:
    """Every run of an experiment, point by point, objective by objective, seed by seed."""
    runs = []
    for index, point in enumerate(experiment.points):
        for objective in point.config.objectives:
            shared = run_config(point.config, objective, point.config.seeds[0])
            for seed in point.config.seeds:
                run = {**shared, "seed": seed}
                runs.append(Run(results.content_hash(run), index, objective, seed, run))
    return runs


def run_experiment(
    experiment: Experiment,
    *,
    force: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> Summary:
    """Runs every run of ``experiment`` that has no result yet, then writes metrics, figures
    and ``report.md`` (rewritten on every call, so it always covers every run).

    Args:
      experiment: a validated experiment (``config.load_experiment``).
      force: re-run runs whose results exist.
      on_progress: called before each long step (a group's fits, NUTS reference
        draws, the figures) and after each finished or skipped run.

    Returns:
      A ``Summary``.
    """
    config = experiment.config
    devices = runner.chosen_devices(config.devices)  # before anything is written
    layout = results.Layout(Path(config.output) / config.name)
    with results.locked(layout):  # a second run on the same output stops here
        results.prepare(layout)
        # Without output: the results directory is where this file is, and no machine path
        # goes into results that promise none.
        results.atomic_write(layout.config, config_io.dump_config(config, output=False))
        config_hash = results.content_hash(schema.to_plain(config))
        results.atomic_write(
            layout.provenance, results.dumps(results.provenance(config_hash, config.seeds))
        )
        runs = plan(experiment)
        report = on_progress or (lambda progress: None)
        report(Progress(0, len(runs), f"on {len(devices)} {devices[0].platform} device(s)"))
        with jax.default_device(devices[0]):
            return _run_all(experiment, layout, runs, devices, force, report)


def _run_all(experiment, layout, runs, devices, force, report) -> Summary:
    config = experiment.config
    targets: dict[int, Target] = {}

    def say(message: str) -> None:
        report(Progress(done, len(runs), message))

    def target_of(index: int) -> Target:
        # Built once per point: a NumPyro model's set-up costs seconds.
        if index not in targets:
            point = experiment.points[index]
            with _precision(point.config):
                try:
                    targets[index] = registry.build_target(point.config.target)
                except (TypeError, ValueError) as error:  # e.g. NaN in a model's data
                    message = str(error).strip().splitlines()[0]
                    raise ConfigError(f"{point.label}: {message}", ("target",)) from None
        return targets[index]

    table = results.Table(layout)
    done = skipped = 0
    caches: dict[int, runner.DrawsFn] = {}
    groups: dict[tuple[int, ObjectiveSpec], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.point, run.objective), []).append(run)
    for (index, objective), group in groups.items():
        point = experiment.points[index]
        where = f"{point.label} / {objective.label}"
        todo = {run.run_id for run in group if force or run.run_id not in table}
        skipped += len(group) - len(todo)
        done += len(group) - len(todo)
        if not todo:
            report(Progress(done, len(runs), f"{where}: {len(group)} done already, skipped"))
            continue
        with _precision(point.config):
            target = target_of(index)
            if index not in caches:  # one per point, shared by its objectives
                caches[index] = _reference_cache(layout, point, target, say)
            for start in range(0, len(group), CHUNK_RUNS):
                chunk = group[start : start + CHUNK_RUNS]
                wanted = [run for run in chunk if run.run_id in todo]
                if not wanted:
                    continue
                say(f"{where}: fitting {_count(len(wanted), 'seed')}…")
                outputs = runner.run_group(
                    target,
                    point.config,
                    objective,
                    [run.seed for run in chunk],
                    caches[index],
                    [run.seed for run in wanted],
                    devices,
                )
                records, traces = [], []
                for run, (seed, output) in zip(wanted, outputs, strict=True):
                    assert seed == run.seed
                    records.append({**_record(run, output), "run_id": run.run_id})
                    traces.append(output.trace)
                results.write_part(layout, records, traces)
                done += len(wanted)
                report(Progress(done, len(runs), f"{where}: {_count(len(wanted), 'seed')} done"))
    table = results.Table(layout)
    rows = [_row(experiment, run, table.record(run.run_id)) for run in runs]
    sweep_keys = list(config.sweep)
    results.write_metrics(
        layout.metrics, rows, ["run_id", "point", *sweep_keys, "objective", "seed"]
    )
    say(f"drawing the figures and writing {layout.report}…")
    draws = _reference_for_plots(layout, experiment)
    figures.write_figures(experiment, runs, layout, table, target_of, draws)
    write_report(layout.root)
    return Summary(layout, len(runs), skipped)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _precision(config: Config):
    return jax.enable_x64(config.precision == "float64")


def _record(run: Run, output: runner.RunOutput) -> dict[str, Any]:
    return {
        "config": run.config,
        "params": output.params,
        "fit": output.info,
        "diagnostics": output.diagnostics,
    }


def _row(experiment: Experiment, run: Run, record: dict) -> dict[str, Any]:
    point = experiment.points[run.point]
    swept = {key: value_label(value) for key, value in point.assignments}
    return {
        "run_id": run.run_id,
        "point": point.label,
        **swept,
        "objective": run.objective.label,
        "seed": run.seed,
        **results.metric_columns(record),
    }


def _reference_key(config: Config, kind: str, seed: int) -> str:
    plain = schema.to_plain(config)
    target = dict(plain["target"])
    target.pop("label", None)
    if config.target.data is not None:
        target["data"] = {"sha256": results.file_hash(config.target.data)}
    identity = {
        "target": target,
        "precision": config.precision,
        "reference": plain["reference"],
        "kind": kind,
        "seed": seed,
        "format": RESULTS_FORMAT,
    }
    return results.content_hash(identity)


def _reference_cache(
    layout: results.Layout, point: SweepPoint, target: Target, say: Callable[[str], None]
) -> runner.DrawsFn:
    """Reference draws per (kind, seed): exact ones in memory, NUTS ones cached on disk.

    NUTS takes seconds to minutes, so ``say`` tells before each run of it.
    """
    config = point.config
    cache: dict[tuple[str, int], Any] = {}

    def draws_for(kind: str, seed: int):
        if (kind, seed) not in cache:
            path = layout.reference / f"{_reference_key(config, kind, seed)}.npy"
            if kind == "nuts" and path.is_file():
                draws = jax.numpy.asarray(results.load_array(path))
            else:
                key = runner.run_keys(seed).reference
                if kind == "nuts":
                    spec = config.reference
                    say(
                        f"{point.label}: drawing {spec.num_draws} NUTS reference draws "
                        f"(seed {seed}, after {spec.num_warmup} warm-up steps)…"
                    )
                draws = runner.reference_draws(key, target, kind, config.reference)
                if kind == "nuts":
                    results.save_array(path, draws)
            cache[(kind, seed)] = draws
        return cache[(kind, seed)]

    return draws_for


def _reference_for_plots(
    layout: results.Layout, experiment: Experiment
) -> Callable[[SweepPoint, Target], np.ndarray | None]:
    """Draws of a point's target for marginal plots: exact, or cached NUTS, or None."""

    def draws(point: SweepPoint, target: Target) -> np.ndarray | None:
        seed = point.config.seeds[0]
        if target.sample_fn is not None:
            key = runner.run_keys(seed).reference
            return np.asarray(runner.reference_draws(key, target, "exact", point.config.reference))
        path = layout.reference / f"{_reference_key(point.config, 'nuts', seed)}.npy"
        return results.load_array(path) if path.is_file() else None

    return draws
