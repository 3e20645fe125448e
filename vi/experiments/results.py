"""Results on disk: run ids, the output layout, atomic writes, metrics tables, provenance.

Layout of ``<output>/<config name>/``::

    config.yaml          the resolved config (defaults filled in)
    provenance.json      versions, device, git commit, config hash, seeds, timestamp
    metrics.csv          one row per run of the current config
    table/part-<id>.npz  the runs, a chunk of them per file, column by column: each run's
                         id, config (JSON), fitted parameters, fit info, diagnostics and
                         trace (the objective after each step)
    runs/, traces/       one JSON and one .npy per run, as results of earlier versions
                         stored them (still read; new runs go to the table)
    reference/<id>.npy   cached NUTS draws of a target (per seed)
    figures/*.png        the plots
    report.md            the metrics table and figures, written at the end of a run

A run's id is a hash of everything that decides its numbers, so a run whose id is
in the table is done. A part holds the runs one ``fit_batch`` finished, named by a hash
of their ids: an interrupted sweep loses only the chunk it was fitting, and a chunk fitted
again (``--force``) replaces its part. Every file is written to a temporary
file in the same directory, flushed to disk and renamed over the final name: a killed
run leaves either the whole file or none. Files that must be byte-identical across
repeated runs (table/, metrics.csv, config.yaml) hold no times or paths of the
machine; floats are written as the shortest repr that reads back exactly.
"""

import contextlib
import csv
import datetime
import fcntl
import hashlib
import io
import json
import math
import os
import subprocess
import tempfile
import zipfile
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

    @property
    def table(self) -> Path:
        return self.root / "table"

    def run(self, run_id: str) -> Path:
        return self.runs / f"{run_id}.json"

    def trace(self, run_id: str) -> Path:
        return self.traces / f"{run_id}.npy"


class ResultsBusy(RuntimeError):
    """Another process is writing to the same results directory."""


@contextlib.contextmanager
def locked(layout: Layout):
    """Holds ``<root>/.lock`` (an exclusive ``flock``) while a run writes the directory, so
    that a second run on the same output stops at once, with a message, instead of
    deleting the first one's temporary files or racing it for a part. The kernel lets go
    of the lock when the process ends, however it ends; the file stays."""
    layout.root.mkdir(parents=True, exist_ok=True)
    path = layout.root / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise ResultsBusy(
                f"{layout.root}: another vifit run (pid {holder}) is writing these results; "
                "wait for it to finish, or give another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def prepare(layout: Layout) -> None:
    """Creates the output directories and removes temporary files left by a killed run."""
    for directory in (layout.root, layout.table, layout.reference, layout.figures):
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


class Table:
    """The runs stored under a results directory: the table's parts, and legacy run files.

    ``Table(layout)`` indexes the parts (their ``run_id`` columns only); ``in`` says whether
    a run is done, ``record`` and ``trace`` read it back. Parts are read whole when first
    needed, and kept.
    """

    def __init__(self, layout: Layout):
        self.layout = layout
        self._where: dict[str, tuple[Path, int]] = {}
        self._parts: dict[Path, dict[str, Any]] = {}
        self._records: dict[str, dict] = {}
        paths = sorted(layout.table.glob("part-*.npz")) if layout.table.is_dir() else []
        for path in paths:  # a run in two parts was fitted alike in both: either will do
            with np.load(path, allow_pickle=False) as part:
                for row, run_id in enumerate(part["run_id"].tolist()):
                    self._where[run_id] = (path, row)

    def __contains__(self, run_id: str) -> bool:
        return run_id in self._where or self.layout.run(run_id).is_file()

    def _row(self, run_id: str) -> tuple[dict[str, Any], int] | None:
        """The part holding a run, its columns as lists of plain cells, and the run's row."""
        if run_id not in self._where:
            return None
        path, row = self._where[run_id]
        if path not in self._parts:
            with np.load(path, allow_pickle=False) as part:
                self._parts[path] = {
                    key: part[key] if key in ("trace", "trace_end") else _plain_cells(part[key])
                    for key in part.files
                }
        return self._parts[path], row

    def record(self, run_id: str) -> dict | None:
        """A run's record (``config``, ``params``, ``fit``, ``diagnostics``, ``run_id``), as
        JSON would give it back (non-finite floats as None), or None when not run."""
        if run_id in self._records:
            return self._records[run_id]
        found = self._row(run_id)
        if found is None:
            path = self.layout.run(run_id)
            return json.loads(path.read_text()) if path.is_file() else None
        columns, row = found
        record: dict[str, Any] = {}
        for key, column in columns.items():
            if key in ("trace", "trace_end"):
                continue
            value = column[row]
            if key.startswith(_JSON):
                value = json.loads(value)
                key = key[len(_JSON) :]
            section, _, name = key.partition(".")
            if name:
                record.setdefault(section, {})[name] = value
            else:
                record[section] = value
        self._records[run_id] = record
        return record

    def trace(self, run_id: str) -> np.ndarray:
        """A run's objective after each step."""
        found = self._row(run_id)
        if found is None:
            return load_array(self.layout.trace(run_id))
        columns, row = found
        end = columns["trace_end"]
        return columns["trace"][(end[row - 1] if row else 0) : end[row]]


_JSON = "json:"
"""The prefix of a column whose cells are JSON text: values that make no array."""


def _plain_cells(column: np.ndarray) -> list:
    """A column's cells as JSON would give them back: Python scalars and lists, non-finite
    floats as None."""
    cells = column.tolist()
    if not np.issubdtype(column.dtype, np.floating) or np.isfinite(column).all():
        return cells
    if column.ndim == 1:
        return [v if math.isfinite(v) else None for v in cells]
    return jsonable(cells)


def _column(values: list) -> tuple[str, np.ndarray]:
    """How a column of cells is stored: an array of strings, booleans, integers or floats
    (a None among floats as NaN) where the cells make one, else JSON text. Returns the
    key's prefix and the array."""
    if all(isinstance(v, str) for v in values):
        return "", np.array(values, dtype=str)
    for cells in (values, [np.nan if v is None else v for v in values]):
        try:
            array = np.array(cells)
        except ValueError:  # ragged
            continue
        if array.dtype.kind in "biuf" and array.shape[:1] == (len(values),):
            return "", array
    return _JSON, np.array([json.dumps(jsonable(v), sort_keys=True) for v in values], dtype=str)


def _flat(record: Mapping) -> dict[str, Any]:
    """``section.name`` keys for the record's sections (``config``, a mapping of any shape,
    stays whole: ``_column`` stores it as JSON text)."""
    flat: dict[str, Any] = {}
    for section, value in record.items():
        if isinstance(value, Mapping) and section != "config":
            for name, item in value.items():
                flat[f"{section}.{name}"] = item
        else:
            flat[section] = value
    return flat


def write_part(layout: Layout, records: Sequence[Mapping], traces) -> Path:
    """Stores finished runs as one part of the table, atomically: the chunk is there whole
    or not at all. The part is named by a hash of its run ids, so the same runs stored
    again replace it.

    Args:
      layout: the output directory.
      records: each run's record, with its ``run_id``.
      traces: each run's trace, (L_i,).
    """
    flats = [_flat(record) for record in records]
    traces = [np.asarray(trace) for trace in traces]  # each as long as its run went
    columns = {
        "trace": np.concatenate(traces) if traces else np.zeros(0),
        "trace_end": np.cumsum([len(trace) for trace in traces], dtype=np.int64),
    }
    for key in dict.fromkeys(key for flat in flats for key in flat):
        prefix, columns[prefix + key] = _column([flat.get(key) for flat in flats])
    path = layout.table / f"part-{content_hash([r['run_id'] for r in records])}.npz"
    atomic_write(path, _npz_bytes(columns))
    return path


def _npz_bytes(columns: Mapping[str, np.ndarray]) -> bytes:
    """An ``.npz`` archive (``np.load`` reads it) with a fixed date on every entry, where
    ``np.savez`` stamps the time: the same columns give the same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for key, array in columns.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


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
