"""Results on disk: run ids, the output layout, atomic writes, metrics tables, provenance.

Layout of ``<output>/<config name>/``::

    config.yaml          the resolved config (defaults filled in)
    provenance.json      versions, device, git commit, config hash, seeds, timestamp
    metrics.csv          one row per run of the current config
    runs/<run_id>.json   one run's config, fitted parameters, fit info and diagnostics
    traces/<run_id>.npy  the objective after each step of that run
    reference/<id>.npy   cached NUTS draws of a target (per seed)
    figures/*.png        the plots
    report.md            the metrics table and figures, written at the end of a run

A run's id is a hash of everything that decides its numbers, so a run whose
file exists is done. Every file is written to a temporary file in the same
directory, flushed to disk and renamed over the final name: a killed run
leaves either the whole file or none. Files that must be byte-identical across
repeated runs (runs/, metrics.csv, config.yaml) hold no times or paths of the
machine; floats are written as the shortest repr that reads back exactly.
"""

import csv
import datetime
import hashlib
import io
import json
import math
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

_TEMP_PREFIX, _TEMP_SUFFIX = ".", ".partial"


class Layout(NamedTuple):
    """The paths of one experiment's output directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def provenance(self) -> Path:
        return self.root / "provenance.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def traces(self) -> Path:
        return self.root / "traces"

    @property
    def reference(self) -> Path:
        return self.root / "reference"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def run(self, run_id: str) -> Path:
        return self.runs / f"{run_id}.json"

    def trace(self, run_id: str) -> Path:
        return self.traces / f"{run_id}.npy"


def prepare(layout: Layout) -> None:
    """Creates the output directories and removes temporary files left by a killed run."""
    for directory in (layout.root, layout.runs, layout.traces, layout.reference, layout.figures):
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob(f"{_TEMP_PREFIX}*{_TEMP_SUFFIX}"):
            stale.unlink(missing_ok=True)


def content_hash(value: Any, length: int = 16) -> str:
    """A hex SHA-256 prefix of a JSON-able value, independent of dict order."""
    text = json.dumps(jsonable(value), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_hash(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def jsonable(value: Any) -> Any:
    """Plain JSON values from NumPy/JAX arrays and NamedTuples; non-finite floats become None."""
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return jsonable(value._asdict())
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return jsonable(np.asarray(value).tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any) -> str:
    """Deterministic JSON: sorted keys, fixed indentation, floats by repr."""
    return json.dumps(jsonable(value), sort_keys=True, indent=1, allow_nan=False) + "\n"


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see the old file or the whole new one.

    The bytes go to a temporary file in the same directory, are flushed and
    fsynced, and the file is renamed over ``path`` (``os.replace`` is atomic on
    POSIX and Windows); on any error the temporary file is removed. The file gets
    the mode a plain ``open`` would give it (0o666 less the umask), not the
    temporary file's private 0o600.
    """
    path = Path(path)
    data = data.encode() if isinstance(data, str) else data
    handle = tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f"{_TEMP_PREFIX}{path.name}.", suffix=_TEMP_SUFFIX, delete=False
    )
    try:
        with handle:
            handle.write(data)
            handle.flush()
            # mkstemp creates the file 0600; give it the mode open() would have.
            os.chmod(handle.name, 0o666 & ~_umask())
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _umask() -> int:
    """The process's file-mode creation mask, without changing it where it can be read.

    Linux shows it in ``/proc/self/status``; elsewhere it can only be read by
    setting it and setting it back, which another thread creating a file in
    between would see (the runner writes from one thread).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_array(path: str | os.PathLike, array) -> None:
    """Writes an array as ``.npy``, atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    atomic_write(path, buffer.getvalue())


def load_array(path: str | os.PathLike) -> np.ndarray:
    """Reads a ``.npy`` array."""
    return np.load(path, allow_pickle=False)


def read_run(layout: Layout, run_id: str) -> dict | None:
    """The stored record of a run, or None when it has not been run."""
    path = layout.run(run_id)
    return json.loads(path.read_text()) if path.is_file() else None


def write_run(layout: Layout, run_id: str, record: Mapping, trace) -> None:
    """Stores a run: its trace first, then its record (whose presence marks the run done)."""
    save_array(layout.trace(run_id), trace)
    atomic_write(layout.run(run_id), dumps({**record, "run_id": run_id}))


def metric_columns(record: Mapping) -> dict[str, Any]:
    """The scalar results of a run record as ``section.name`` columns (fit info, diagnostics)."""
    columns = {}
    for section in ("fit", "diagnostics"):
        for name, value in record.get(section, {}).items():
            if value is None or isinstance(value, bool | int | float | str):
                columns[f"{section}.{name}"] = value
    return columns


def write_metrics(
    path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], leading: Sequence[str]
) -> None:
    """Writes rows as CSV: the ``leading`` columns in order, then the rest sorted.

    Floats are written by ``repr`` (exact and deterministic), None as an empty field.
    """
    rest = sorted({key for row in rows for key in row} - set(leading))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*leading, *rest])
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in [*leading, *rest]])
    atomic_write(path, buffer.getvalue())


def read_metrics(path: str | os.PathLike) -> list[dict[str, str]]:
    """Reads ``metrics.csv`` back as a list of rows of strings."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def provenance(config_hash: str, seeds: Sequence[int]) -> dict[str, Any]:
    """Where and with what the results were computed (the one file with a timestamp)."""
    import jax

    versions = {}
    for package in ("vi", "jax", "jaxlib", "numpyro", "optax", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    device = jax.devices()[0]
    return {
        "versions": versions,
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "git_commit": _git_commit(),
        "config_hash": config_hash,
        "seeds": list(seeds),
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _git_commit() -> str | None:
    """The commit of the checkout ``vi`` is imported from (``+dirty`` when modified)."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if status else commit
