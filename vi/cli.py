"""The ``vifit`` command line (also ``python -m vi``): run, validate and report experiments
from YAML configs.

The script is not called ``vi``, which would shadow the system's editor.
"""

import argparse
import errno
import os
import sys
from collections.abc import Sequence

from vi.devices import set_cpu_devices

PROGRAM = "vifit"
"""The console script's name (``[project.scripts]`` in pyproject.toml)."""

# "{cmd}" becomes the command as this process was started, so examples run as printed.
_EPILOG = """\
examples:
  {cmd} validate configs/forward_vs_reverse/default.yaml
  {cmd} run configs/forward_vs_reverse/default.yaml --set seeds='{start: 0, stop: 4}'
  {cmd} report results/forward_vs_reverse

The config schema is documented in vi/experiments/schema.py.
"""

_RUN = """\
Run every fit of a config (each sweep point x objective x seed), skipping runs
whose results exist already, and write metrics, the results table (runs,
traces), figures and report.md to <output>/<name>/ (output and name from the
config). A model given as 'package.module:function' is code: it is imported
only with --trust-code.

example:
  {cmd} run configs/smoke.yaml --out /tmp/results --set optimizer.learning_rate=0.003
"""

_VALIDATE = """\
Check a config (and any --set overrides) without running anything: keys,
types, ranges, target/model/optimizer names and data files. A model given as
an import path is code: its form is checked, and it is never imported here.
Prints the number of runs it would make.

example:
  {cmd} validate configs/forward_vs_reverse/banana.yaml --set seeds=[0,1]
"""

_REPORT = """\
Write DIR/report.md again: a table of the metrics (mean ± sd across seeds) and
the figures of a results directory. `run` writes it at the end of every run;
this regenerates it, e.g. for results copied from elsewhere.

example:
  {cmd} report results/forward_vs_reverse
"""


def _parser(invocation: str = PROGRAM) -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter

    def text(template: str) -> str:
        return template.replace("{cmd}", invocation)

    parser = argparse.ArgumentParser(
        prog=invocation,
        description="Reproducible variational-inference experiments from YAML configs.",
        epilog=text(_EPILOG),
        formatter_class=raw,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name, description, help_text):
        return commands.add_parser(
            name, help=help_text, description=text(description), formatter_class=raw
        )

    run = add("run", _RUN, "run the fits of a config and store the results")
    validate = add("validate", _VALIDATE, "check a config without running it")
    for command in (run, validate):
        command.add_argument("config", metavar="CONFIG", help="a YAML config file")
        command.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config key by its dotted path; VALUE is read as YAML "
            "(repeatable), e.g. --set stopping.max_steps=500",
        )
    run.add_argument("--out", metavar="DIR", help="the output directory (replaces `output`)")
    run.add_argument("--force", action="store_true", help="re-run runs whose results exist")
    run.add_argument(
        "--trust-code",
        action="store_true",
        help="import a model given as 'package.module:function' (a config that names code "
        "is code; registered model names need no flag)",
    )
    run.add_argument(
        "--devices",
        choices=("auto", "cpu", "gpu"),
        help="where the fits run (replaces `devices`): auto = every GPU, else every CPU core",
    )
    report = add("report", _REPORT, "write report.md for a results directory")
    report.add_argument("directory", metavar="DIR", help="a results directory of `run`")
    return parser


def _invocation() -> str:
    """How this process was started, as a command that starts it again from the same directory."""
    program = sys.argv[0] if sys.argv and sys.argv[0] else PROGRAM
    name = os.path.basename(program)
    if name in ("__main__.py", "cli.py"):
        return f"{_typeable(sys.executable)} -m vi"
    return _typeable(program) if name == PROGRAM else PROGRAM


def _typeable(path: str) -> str:
    """``path`` relative to the working directory where it lies below it, else absolute
    (a bare name, found on the ``PATH``, stays as it is)."""
    if os.sep not in path:
        return path
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive
        return path
    if relative.startswith(os.pardir):
        return os.path.abspath(path)
    return relative if os.sep in relative else os.path.join(os.curdir, relative)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vifit`` console script and of ``python -m vi``.

    Run as a program (``argv`` None: ``vifit``, ``python -m vi``), it owns
    its process and first gives JAX one CPU device per usable core, so that the fits
    of a config are sharded over every core (``vi.set_cpu_devices``; the environment's
    ``JAX_NUM_CPU_DEVICES=N`` or ``XLA_FLAGS`` count wins). Called with ``argv``, from
    a program or a test, it leaves the caller's JAX set-up as it is.

    Args:
      argv: the arguments after the program name; ``sys.argv[1:]`` when None.

    Returns:
      The exit status: 0 on success, 1 for an invalid config or a failed
      command, 2 for a usage error, 130 when interrupted.
    """
    if argv is None:
        set_cpu_devices()
    invocation = _invocation() if argv is None else PROGRAM
    try:
        args = _parser(invocation).parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    from vi.experiments.checks import ConfigError
    from vi.experiments.registry import RegistryError
    from vi.experiments.report import ReportError
    from vi.experiments.results import ResultsBusy

    try:
        if args.command == "report":
            return _report(args)
        return _run(args) if args.command == "run" else _validate(args)
    except (ConfigError, RegistryError, ReportError, ResultsBusy) as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # the file system: a path of the wrong kind, read-only, full
        print(f"{PROGRAM}: error: {_os_error(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"{PROGRAM}: interrupted; finished runs are kept, run again to resume", file=sys.stderr
        )
        if argv is None:
            # This process is ours: end it here. An interrupt that lands inside a JAX
            # compilation can leave jaxlib in a state its teardown at exit crashes on
            # (SIGSEGV after the message); every finished run is already on disk.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130


_OS_HINTS = {
    errno.ENOSPC: "the disk is full; free space and run again (finished runs are kept)",
    errno.EDQUOT: "the disk quota is used up; free space and run again (finished runs are kept)",
    errno.EROFS: "the file system is read-only; give another --out",
    errno.EACCES: "permission denied; give another --out",
    errno.EEXIST: "a file is in the way where a directory is needed; give another --out",
    errno.ENOTDIR: "a file is in the way where a directory is needed; give another --out",
}


def _os_error(error: OSError) -> str:
    """One line for a file-system error: the path, the system's reason and what to do."""
    where = error.filename if error.filename is not None else "a file"
    reason = error.strerror or str(error)
    hint = _OS_HINTS.get(error.errno)
    return f"{where}: {reason}" + (f": {hint}" if hint else "")


def _validate(args) -> int:
    from vi.experiments.config import load_experiment

    experiment = load_experiment(args.config, args.overrides, code="check")
    print(f"{args.config}: valid; {_describe(experiment)}")
    from vi.experiments.registry import is_import_path

    models = {p.config.target.model for p in experiment.points if p.config.target.model}
    for model in sorted(m for m in models if is_import_path(m)):
        print(
            f"{args.config}: note: model {model!r} is code and was not imported; "
            "`run --trust-code` imports it and checks its arguments"
        )
    return 0


def _run(args) -> int:
    from vi.experiments.config import load_experiment
    from vi.experiments.experiment import run_experiment

    overrides = [*args.overrides, *([f"devices={args.devices}"] if args.devices else [])]
    code = "import" if args.trust_code else "refuse"
    experiment = load_experiment(args.config, overrides, output=args.out, code=code)
    print(f"{PROGRAM}: {experiment.config.name}: {_describe(experiment)}", file=sys.stderr)
    with _ProgressPrinter() as progress:
        summary = run_experiment(experiment, force=args.force, on_progress=progress)
    computed = summary.num_runs - summary.num_skipped
    print(
        f"{PROGRAM}: done: {computed} runs computed, {summary.num_skipped} already done; "
        f"results in {summary.layout.root}\n{PROGRAM}: report: {summary.layout.report}",
        file=sys.stderr,
    )
    return 0


def _report(args) -> int:
    from vi.experiments.report import write_report

    path = write_report(args.directory)
    print(f"{PROGRAM}: wrote {path}", file=sys.stderr)
    return 0


def _describe(experiment) -> str:
    from pathlib import Path

    config = experiment.config
    points, seeds = len(experiment.points), len(config.seeds)
    objectives = len(config.objectives)
    runs = sum(len(point.config.objectives) * seeds for point in experiment.points)
    where = Path(config.output) / config.name

    def count(n, noun):
        return f"{n} {noun}{'s' * (n != 1)}"

    return (
        f"{count(points, 'sweep point')} × {count(objectives, 'objective')} × "
        f"{count(seeds, 'seed')} = {count(runs, 'run')} -> {where}"
    )


class _ProgressPrinter:
    """Prints progress events to stderr, with a tqdm bar when tqdm is installed and on a terminal."""

    def __enter__(self):
        self._bar = None
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=0, file=sys.stderr, unit="run", dynamic_ncols=True)
        return self

    def __call__(self, progress) -> None:
        message = f"[{progress.done}/{progress.total}] {progress.message}"
        if self._bar is None:
            print(message, file=sys.stderr, flush=True)
            return
        self._bar.total = progress.total
        self._bar.update(progress.done - self._bar.n)
        self._bar.write(message, file=sys.stderr)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()


if __name__ == "__main__":
    sys.exit(main())
