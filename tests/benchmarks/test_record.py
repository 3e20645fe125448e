"""The benchmarks' records: what a result file holds, the busy-machine check, RESULTS.md."""

import argparse
import json
import os
import re
import sys

import pytest

from experiments.benchmarks import make_results, record

CORES = 4


@pytest.fixture
def loads(monkeypatch):
    """Sets the 1-minute load that ``os.getloadavg`` reports next, on a 4-core machine."""
    values = [1.0]
    monkeypatch.setattr(os, "cpu_count", lambda: CORES)
    monkeypatch.setattr(os, "getloadavg", lambda: (values[0], 0.5, 0.25))
    return values


@pytest.fixture
def argv(monkeypatch):
    script = record.ROOT / "experiments" / "benchmarks" / "bench_x.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--repeats", "3"])


def args(force=False, quick=False):
    return argparse.Namespace(force=force, quick=quick)


def a_table(detail=False):
    rows = [["vi", 1.0, 2, True], ["peer", float("nan"), None, False]]
    return record.table("times", ["name", "ms", "n", "met"], rows, "a note", detail=detail)


def test_write_records_command_date_commit_machine_load_and_tables(tmp_path, argv):
    payload = {"load": {"start": [1.0], "end": [2.0], "busy": False}, "tables": [a_table()]}
    path = record.write("bench_x", payload, results_dir=tmp_path)
    result = json.loads(path.read_text())
    assert path == tmp_path / "bench_x.json"
    assert [p.name for p in tmp_path.iterdir()] == ["bench_x.json"]  # no temporary file left
    assert result["name"] == "bench_x"
    assert result["script"] == "experiments/benchmarks/bench_x.py"
    assert result["command"] == "python experiments/benchmarks/bench_x.py --repeats 3"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", result["date"])
    assert re.fullmatch(r"[0-9a-f]{4,}(\+dirty)?|unknown", result["commit"])
    machine = {"cpu", "cores", "memory_gib", "python", "jax", "jaxlib", "backend", "devices"}
    assert machine <= result["machine"].keys()
    assert result["load"] == payload["load"]
    assert result["tables"] == [a_table()]
    assert result["tables"][0]["rows"][1] == ["peer", "n/a", None, False]  # JSON has no NaN


def test_write_needs_load_and_tables(tmp_path):
    with pytest.raises(ValueError, match="load"):
        record.write("bench_x", {"tables": []}, results_dir=tmp_path)


def test_table_rows_need_a_cell_per_column():
    with pytest.raises(ValueError, match="2 cells"):
        record.table("t", ["a", "b"], [[1]])


def test_refuses_a_busy_machine_at_the_start(loads):
    loads[0] = CORES + 0.5
    with pytest.raises(SystemExit) as refusal:
        record.start(args())
    assert "4.50" in str(refusal.value.code) and "--force" in str(refusal.value.code)


def test_refuses_a_machine_that_got_busy_by_the_end(loads, tmp_path, argv):
    session = record.start(args())
    loads[0] = CORES + 0.5
    with pytest.raises(SystemExit, match="at the end"):
        record.finish(session, "bench_x", [a_table()], results_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_force_records_a_busy_run_marked_busy(loads, tmp_path, argv):
    loads[0] = CORES + 0.5
    session = record.start(args(force=True))
    loads[0] = 1.0
    path = record.finish(session, "bench_x", [a_table()], results_dir=tmp_path)
    load = json.loads(path.read_text())["load"]
    assert load == {"start": [4.5, 0.5, 0.25], "end": [1.0, 0.5, 0.25], "busy": True}


def test_a_quiet_run_is_recorded_not_busy(loads, tmp_path, argv):
    session = record.start(args())
    path = record.finish(session, "bench_x", [a_table()], results_dir=tmp_path)
    assert json.loads(path.read_text())["load"]["busy"] is False


def test_a_smoke_run_records_nothing_even_when_busy(loads, tmp_path):
    loads[0] = CORES + 0.5
    session = record.start(args(quick=True))
    assert record.finish(session, "bench_x", [a_table()], results_dir=tmp_path) is None
    assert not list(tmp_path.iterdir())


def test_cells():
    cells = [531.0, 39.94, 1.0, 0.593, 0.0593, 3.4e-7, 12, "a|b", None, True, "n/a"]
    expected = ["531", "39.9", "1.00", "0.59", "0.0593", "3.4e-07", "12", "a\\|b", "", "yes", "n/a"]
    assert [record.cell(x) for x in cells] == expected


@pytest.fixture
def benchmarks(tmp_path):
    """A folder of two benchmark scripts, one with a recorded result, and its results folder."""
    scripts, results = tmp_path / "scripts", tmp_path / "results"
    scripts.mkdir()
    results.mkdir()
    (scripts / "bench_x.py").write_text('"""Times x against its peers."""\n')
    (scripts / "bench_y.py").write_text('"""Times y."""\n')
    result = {
        "name": "bench_x",
        "script": f"{scripts}/bench_x.py",
        "command": f"python {scripts}/bench_x.py --repeats 3",
        "date": "2026-01-02 03:04:05 UTC",
        "seconds": 42,
        "commit": "abc1234+dirty",
        "machine": {
            **dict(cpu="AMD EPYC (x86_64)", cores=2, memory_gib=23.5, python="3.11.7"),
            **dict(jax="0.10.2", jaxlib="0.10.2", backend="cpu", devices="2 × cpu"),
        },
        "load": {"start": [1.25, 1.0, 0.5], "end": [3.5, 2.0, 1.0], "busy": True},
        "tables": [a_table(), a_table(detail=True)],
    }
    (results / "bench_x.json").write_text(json.dumps(result))
    return scripts, results


def test_make_results_renders_a_result_and_a_benchmark_not_run(benchmarks):
    scripts, results = benchmarks
    text = make_results.render(results, scripts)
    assert f"- command: `python {scripts}/bench_x.py --repeats 3`" in text
    assert "1.25 / 1.00 / 0.50 at the start, 3.50 / 2.00 / 1.00 at the end" in text
    assert "taken on a busy machine" in text
    assert "commit `abc1234+dirty`" in text
    assert "Times x against its peers." in text
    assert "| name | ms | n | met |\n|---|---:|---:|---|\n" in text
    assert "| vi | 1.00 | 2 | yes |\n| peer | n/a |  | no |\n" in text
    assert "<details><summary>times</summary>" in text
    assert f"Not run yet: `python {scripts}/bench_y.py`." in text
    assert text.index("## bench_x.py") < text.index("## bench_y.py")


def test_make_results_is_deterministic(benchmarks, tmp_path):
    scripts, results = benchmarks
    first = make_results.render(results, scripts)
    (results / "bench_x.json").touch()  # a newer file changes nothing
    assert make_results.render(results, scripts) == first
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "bench_x.json").write_text((results / "bench_x.json").read_text())
    assert make_results.render(copy, scripts) == first


def test_results_md_is_the_rendered_results():
    """RESULTS.md is regenerated, never edited: rerun make_results.py after a benchmark."""
    written = (make_results.HERE / "RESULTS.md").read_text()
    assert written == make_results.render(), "run python experiments/benchmarks/make_results.py"
