"""Atomic writes, deterministic JSON and CSV, hashes."""

import json
import math
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest

from vi.experiments import results


def _leftovers(directory):
    return sorted(path.name for path in directory.iterdir() if path.name.startswith("."))


def test_atomic_write_replaces_the_whole_file(tmp_path):
    path = tmp_path / "a.json"
    results.atomic_write(path, "old\n")
    results.atomic_write(path, b"new\n")
    assert path.read_text() == "new\n"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_a_crash_mid_write_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch, failing):
    path = tmp_path / "run.json"
    results.atomic_write(path, "complete\n")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    if failing == "write":
        real = results.tempfile.NamedTemporaryFile

        def half_written(*args, **kwargs):
            handle = real(*args, **kwargs)
            handle.write(b"par")
            handle.write = crash
            return handle

        monkeypatch.setattr(results.tempfile, "NamedTemporaryFile", half_written)
    else:
        monkeypatch.setattr(results.os, failing, crash)

    with pytest.raises(KeyboardInterrupt):
        results.atomic_write(path, "a much longer replacement\n")
    assert path.read_text() == "complete\n"
    assert _leftovers(tmp_path) == []


@pytest.fixture(params=[0o022, 0o002])
def umask(request):
    """Runs a test under a given umask, and restores the process's own after it."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_files_of_a_run_get_the_umask_s_mode_not_a_private_one(tmp_path, umask):
    layout = results.Layout(tmp_path / "exp")
    results.prepare(layout)
    part = results.write_part(layout, [{"run_id": "abc", "fit": {"elbo": 1.0}}], np.zeros((1, 3)))
    results.write_metrics(layout.metrics, [{"run_id": "abc"}], ["run_id"])
    results.atomic_write(layout.metrics, "replaced\n")
    expected = {0o022: 0o644, 0o002: 0o664}[umask]
    for path in (part, layout.metrics):
        assert _mode(path) == expected, path


def test_the_umask_is_read_without_proc_too(tmp_path, umask, monkeypatch):
    def no_proc(*args, **kwargs):
        raise FileNotFoundError("/proc/self/status")

    monkeypatch.setattr(results, "open", no_proc, raising=False)
    results.atomic_write(tmp_path / "a.txt", "a\n")
    assert _mode(tmp_path / "a.txt") == 0o666 & ~umask
    assert os.umask(umask) == umask


def test_a_new_file_is_absent_after_a_crash(tmp_path, monkeypatch):
    monkeypatch.setattr(results.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError):
        results.atomic_write(tmp_path / "new.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_prepare_removes_temporary_files_of_a_killed_process(tmp_path):
    layout = results.Layout(tmp_path / "exp")
    results.prepare(layout)
    stale = layout.table / ".part-abc.npz.x1y2.partial"
    stale.write_text("{")
    kept = results.write_part(layout, [{"run_id": "abc"}], np.zeros((1, 2)))
    results.prepare(layout)
    assert not stale.exists()
    assert kept.exists()
    table = results.Table(layout)
    assert "abc" in table and "missing" not in table
    assert table.record("missing") is None


RECORDS = [
    {
        "run_id": "a",
        "config": {"seed": 0, "target": {"name": "banana"}},
        "params": {"loc": np.array([1.0, 2.0], np.float32)},
        "fit": {"elbo": math.nan, "status": 3, "stop_reason": "converged"},
        "diagnostics": {"covered": [True, False], "k": None, "ragged": [1.0, None], "m": "x"},
    },
    {
        "run_id": "b",
        "config": {"seed": 1, "target": {"name": "banana"}},
        "params": {"loc": np.array([3.0, 4.5], np.float32)},
        "fit": {"elbo": 1.5, "status": 1, "stop_reason": "stalled"},
        "diagnostics": {"covered": [False, False], "k": 0.5, "ragged": [2.0, 3.0], "m": None},
    },
]


def test_a_part_of_the_table_reads_back_each_run_as_json_would():
    """Columns where the cells make an array (strings, booleans, integers, floats with None
    as NaN), JSON text where they do not; every record reads back as the same record sent
    through JSON (non-finite floats as None), and its trace (as long as its run) exactly."""
    with tempfile.TemporaryDirectory() as root:
        layout = results.Layout(Path(root))
        results.prepare(layout)
        traces = [np.arange(3, dtype=np.float32), np.arange(5, dtype=np.float32)]
        path = results.write_part(layout, RECORDS, traces)
        with np.load(path) as part:
            assert part["diagnostics.covered"].dtype == bool
            assert part["fit.status"].dtype == np.int64
            assert "json:diagnostics.ragged" in part.files and "json:config" in part.files
        table = results.Table(layout)
        for record, trace in zip(RECORDS, traces, strict=True):
            assert table.record(record["run_id"]) == json.loads(results.dumps(record))
            np.testing.assert_array_equal(table.trace(record["run_id"]), trace)
        # The same columns, the same bytes (no time is stamped in the archive), the same name.
        first = path.read_bytes()
        assert results.write_part(layout, RECORDS, traces) == path
        assert path.read_bytes() == first


def test_runs_stored_again_replace_their_part_and_legacy_run_files_still_read(tmp_path):
    layout = results.Layout(tmp_path / "exp")
    results.prepare(layout)
    results.write_part(layout, RECORDS[:1], np.zeros((1, 2)))
    changed = {**RECORDS[0], "fit": {**RECORDS[0]["fit"], "elbo": 2.0}}
    results.write_part(layout, [changed], np.ones((1, 2)))
    assert len(list(layout.table.glob("part-*.npz"))) == 1
    layout.runs.mkdir()
    layout.traces.mkdir()
    results.atomic_write(layout.run("old"), results.dumps({"run_id": "old", "fit": {}}))
    results.save_array(layout.trace("old"), np.ones(4))
    table = results.Table(layout)
    assert table.record("a")["fit"]["elbo"] == 2.0
    np.testing.assert_array_equal(table.trace("a"), np.ones(2))
    assert "old" in table and table.record("old") == {"run_id": "old", "fit": {}}
    np.testing.assert_array_equal(table.trace("old"), np.ones(4))


def test_json_is_deterministic_and_exact():
    value = {"b": np.float32(0.1), "a": [np.float64(1 / 3), math.nan, np.inf], "c": np.arange(2)}
    text = results.dumps(value)
    assert text == results.dumps(dict(reversed(list(value.items()))))
    loaded = json.loads(text)
    assert list(loaded) == ["a", "b", "c"]
    assert loaded["b"] == float(np.float32(0.1))
    assert loaded["a"] == [1 / 3, None, None]
    assert loaded["c"] == [0, 1]


def test_content_hash_ignores_key_order():
    assert results.content_hash({"a": 1, "b": [1.5]}) == results.content_hash({"b": [1.5], "a": 1})
    assert results.content_hash({"a": 1}) != results.content_hash({"a": 2})


def test_metrics_csv(tmp_path):
    path = tmp_path / "metrics.csv"
    rows = [
        {"run_id": "x", "seed": 0, "fit.elbo": 0.1 + 0.2, "diagnostics.k": None},
        {"run_id": "y", "seed": 1, "fit.elbo": -1.0, "extra": "s"},
    ]
    results.write_metrics(path, rows, ["run_id", "seed"])
    assert path.read_text() == (
        "run_id,seed,diagnostics.k,extra,fit.elbo\nx,0,,,0.30000000000000004\ny,1,,s,-1.0\n"
    )
    assert results.read_metrics(path)[1]["extra"] == "s"


def test_save_array_round_trips(tmp_path):
    array = np.linspace(0.0, 1.0, 5, dtype=np.float32)
    results.save_array(tmp_path / "t.npy", array)
    np.testing.assert_array_equal(results.load_array(tmp_path / "t.npy"), array)
    assert _leftovers(tmp_path) == []


def test_provenance_has_versions_device_and_no_secrets():
    info = results.provenance("abc", [0, 1])
    assert {"vi", "jax", "jaxlib", "numpyro", "optax"} <= set(info["versions"])
    assert isinstance(info["backend"], str) and isinstance(info["device_kind"], str)
    assert info["config_hash"] == "abc"
    assert info["seeds"] == [0, 1]
    assert "timestamp" in info


def test_the_stored_config_names_a_data_file_without_a_machine_path(tmp_path, monkeypatch):
    from vi.experiments import config as config_io
    from vi.experiments.validation import parse_config

    data = tmp_path / "study" / "data.json"
    data.parent.mkdir()
    data.write_text(json.dumps({"sigma": [1.0, 2.0], "y": [0.5, -0.5]}))
    raw = {
        "name": "m",
        "target": {"model": "eight_schools", "data": "data.json", "args": ["sigma"]},
    }
    config = parse_config(raw, base_dir=data.parent, build=False)
    assert config.target.data == str(data)  # the runs read it from there

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    stored = config_io.dump_config(config, output=False)
    assert "data: data.json" in stored and str(tmp_path) not in stored
    monkeypatch.chdir(tmp_path)  # run from above the data: its path from here
    stored = config_io.dump_config(config, output=False)
    assert "data: study/data.json" in stored and str(tmp_path) not in stored
    assert str(data) in config_io.dump_config(config)  # the full form keeps the path
