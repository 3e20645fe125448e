"""Records a benchmark's tables with the command, machine, load and commit they came from.

Every benchmark in this folder uses it the same way::

    record.add_arguments(parser)                 # adds --force
    session = record.start(args)                 # refuses a busy machine before timing
    ...                                          # measure, build record.table(...)s
    record.finish(session, "bench_x", tables)    # refuses a busy machine, then writes

``finish`` writes ``results/<name>.json``, from which ``make_results.py`` regenerates
RESULTS.md. A machine is busy when its 1-minute load average exceeds its core count, at the
start or at the end of the run: timings taken then say more about the other processes than
about the code. ``--force`` writes them anyway, marked as taken on a busy machine. A smoke
run (``--quick``) prints its tables and writes nothing, so it never replaces real results
and may run on a busy machine.
"""

import datetime
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import shlex
import subprocess
import sys
import tempfile
from typing import Any, NamedTuple

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S UTC"


class Session(NamedTuple):
    """What ``start`` saw: the time and load at the start, and how results are to be written."""

    started: datetime.datetime
    load_start: list[float]
    busy_start: bool
    force: bool
    smoke: bool


def add_arguments(parser) -> None:
    """Adds ``--force`` (write results even when the machine is busy) to an argparse parser."""
    parser.add_argument(
        "--force",
        action="store_true",
        help="write results even when the 1-minute load exceeds the core count (marked busy)",
    )


def rss_mib() -> float:
    """This process's resident memory, MiB (Linux: ``/proc/self/status``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages, rounded to 0.01."""
    return [round(x, 2) for x in os.getloadavg()]


def check_load(load: list[float], *, force: bool, when: str) -> bool:
    """Whether the machine is busy (1-minute load above the core count); exits unless forced.

    Raises:
        SystemExit: with a message saying why and how to override, when busy and not forced.
    """
    cores = os.cpu_count() or 1
    busy = load[0] > cores
    if busy and not force:
        raise SystemExit(
            f"Refusing to record: the 1-minute load average was {load[0]:.2f} at the {when} "
            f"of the run, above the {cores} cores of this machine, so timings would measure "
            "other processes. Rerun on a quiet machine, or pass --force to record them marked "
            "as taken on a busy machine."
        )
    return busy


def start(args) -> Session:
    """Checks the load before a benchmark measures anything (``args``: parsed arguments)."""
    smoke = bool(getattr(args, "quick", False))
    load = load_average()
    busy = False if smoke else check_load(load, force=args.force, when="start")
    return Session(datetime.datetime.now(datetime.UTC), load, busy, args.force, smoke)


def table(
    title: str, columns: list[str], rows: list[list[Any]], note: str = "", *, detail: bool = False
) -> dict:
    """One result table: cells are str, int, float, bool or None (rendered empty).

    Args:
        title: what the table shows, in a line.
        columns: the column names.
        rows: one list of cells per row, as many as columns.
        note: how to read it: units, what a ratio is to, the target.
        detail: RESULTS.md folds the table away (the per-case tables behind a summary).
    """
    rows = [[_plain(x) for x in r] for r in rows]
    if any(len(r) != len(columns) for r in rows):
        raise ValueError(f"table {title!r}: every row needs {len(columns)} cells")
    return dict(title=title, columns=list(columns), rows=rows, note=note, detail=detail)


def _plain(value: Any) -> Any:
    """A cell as JSON takes it: numpy and JAX scalars as Python's, NaN and infinities as text."""
    if getattr(value, "shape", None) == () and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a" if math.isnan(value) else str(value)
    return value


def cell(value: Any) -> str:
    """A cell as Markdown; a float with 0 to 2 decimals as its size asks (531, 39.9, 1.38),
    below 0.1 to three significant figures (0.0123, 4.5e-07)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        size = abs(value)
        if 0 < size < 0.1:
            return f"{value:.3g}"
        return f"{value:.{0 if size >= 100 else 1 if size >= 10 else 2}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(result_table: dict, *, with_title: bool = True) -> str:
    """A table as Markdown: a bold title, the table (numeric columns right-aligned), the note."""
    columns, rows = result_table["columns"], result_table["rows"]
    is_number = lambda x: isinstance(x, int | float) and not isinstance(x, bool)
    numeric = [
        any(is_number(r[i]) for r in rows)
        and all(is_number(r[i]) for r in rows if r[i] not in (None, "n/a"))
        for i in range(len(columns))
    ]
    lines = [f"**{result_table['title']}**", ""] if with_title else []
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    if result_table.get("note"):
        lines += ["", result_table["note"]]
    return "\n".join(lines) + "\n"


def machine(*, jax_devices: dict[str, str] | None = None) -> dict:
    """The machine a benchmark ran on: CPU, cores, memory, Python, jax, backend and devices.

    Args:
        jax_devices: ``backend`` and ``devices``, for a benchmark that leaves JAX to worker
            processes; by default read from JAX when the benchmark has imported it.
    """
    cpu = platform.processor() or platform.machine()
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [x for x in cpuinfo.read_text().splitlines() if x.startswith("model name")]
        cpu = models[0].split(":", 1)[1].strip() if models else cpu
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = {name: importlib.metadata.version(name) for name in ("jax", "jaxlib")}
    if jax_devices is None and "jax" in sys.modules:
        jax = sys.modules["jax"]
        kinds = [d.device_kind for d in jax.devices()]
        counts = ", ".join(f"{kinds.count(k)} × {k}" for k in sorted(set(kinds)))
        jax_devices = {"backend": jax.default_backend(), "devices": counts}
    return {
        "cpu": f"{cpu} ({platform.machine()})",
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "python": platform.python_version(),
        **versions,
        **(jax_devices or {"backend": "JAX not started", "devices": ""}),
    }


def script() -> str:
    """The path of the script this process runs, from the repository's root when inside it."""
    path = pathlib.Path(sys.argv[0]).resolve()
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def command() -> str:
    """The command line that ran this process: ``python <script> <arguments>``."""
    return shlex.join(["python", script(), *sys.argv[1:]])


def git_commit() -> str:
    """The short hash of HEAD, with ``+dirty`` when tracked files have changed."""
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)
    head = git("rev-parse", "--short", "HEAD")
    if head.returncode:
        return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    return head.stdout.strip() + ("+dirty" if dirty else "")


def write(name: str, payload: dict, *, results_dir: pathlib.Path = RESULTS_DIR) -> pathlib.Path:
    """Writes ``results_dir/<name>.json`` atomically: the command, script, UTC date, git
    commit and machine of this run, then ``payload`` (its ``load`` and ``tables``; a key of
    the payload replaces the default of the same name).

    Returns:
        The path written.
    """
    if missing := {"load", "tables"} - payload.keys():
        raise ValueError(f"a result needs {sorted(missing)} in its payload")
    record = {
        "name": name,
        "script": script(),
        "command": command(),
        "date": datetime.datetime.now(datetime.UTC).strftime(DATE_FORMAT),
        "commit": git_commit(),
        "machine": machine(),
        **payload,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    handle, temporary = tempfile.mkstemp(suffix=".tmp", dir=results_dir)
    try:
        with os.fdopen(handle, "w") as f:
            json.dump(record, f, indent=1, ensure_ascii=False, allow_nan=False)
            f.write("\n")
        os.replace(temporary, path)  # readers see the old file or the new one, never half
    except BaseException:
        os.unlink(temporary)
        raise
    return path


def finish(
    session: Session,
    name: str,
    tables: list[dict],
    *,
    jax_devices: dict[str, str] | None = None,
    results_dir: pathlib.Path = RESULTS_DIR,
) -> pathlib.Path | None:
    """Checks the load at the end of a run and writes its tables (nothing for a smoke run).

    Args:
        session: from ``start``.
        name: the file's name, ``results/<name>.json``: the script's, plus the variant
            when one script measures different things (``bench_time_to_optimum_x32``).
        tables: from ``table``.
        jax_devices: see ``machine``.
        results_dir: where to write.

    Returns:
        The path written, or None for a smoke run.
    """
    if session.smoke:
        print(f"\nsmoke run: {len(tables)} table(s) not recorded", file=sys.stderr)
        return None
    load_end = load_average()
    busy = check_load(load_end, force=session.force, when="end") or session.busy_start
    now = datetime.datetime.now(datetime.UTC)
    payload = {
        "date": session.started.strftime(DATE_FORMAT),
        "seconds": round((now - session.started).total_seconds()),
        "load": {"start": session.load_start, "end": load_end, "busy": busy},
        "tables": tables,
    }
    if jax_devices is not None:
        payload["machine"] = machine(jax_devices=jax_devices)
    path = write(name, payload, results_dir=results_dir)
    print(f"\nrecorded in {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path
