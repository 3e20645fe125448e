"""A run killed mid-sweep resumes where it stopped and ends with the uninterrupted results."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.experiments.conftest import REPO, TINY
from vi.cli import main
from vi.experiments import experiment

SWEEP = TINY + "sweep:\n  target: [{name: bimodal_2d, params: {separation: 3.0}}, {name: banana}]\n"


def _files(directory, pattern):
    return sorted(path for path in directory.glob(pattern) if not path.name.startswith("."))


def _wait_for_first_part(process, table_dir, timeout=300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _files(table_dir, "part-*.npz"):
            return
        if process.poll() is not None:
            raise AssertionError(f"vifit run exited early:\n{process.stderr.read().decode()}")
        time.sleep(0.02)
    process.kill()
    raise AssertionError("no run finished in time")


@pytest.mark.heavy
def test_killed_sweep_resumes_and_matches_an_uninterrupted_run(write_config, tmp_path, monkeypatch):
    path = write_config(SWEEP)
    killed_out = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "vi.cli", "run", str(path), "--out", str(killed_out)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    results_dir = killed_out / "tiny"
    try:
        _wait_for_first_part(process, results_dir / "table")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL

    # Two groups (points) of two seeds: one part each, whole or absent.
    finished = _files(results_dir / "table", "part-*.npz")
    assert len(finished) == 1
    with np.load(finished[0]) as part:
        assert len(part["run_id"]) == 2 and part["trace_end"].shape == (2,)
    assert not (results_dir / "metrics.csv").exists()

    # The finished part is kept: not written again.
    mtimes = {part: part.stat().st_mtime_ns for part in finished}
    assert main(["run", str(path), "--out", str(killed_out)]) == 0
    assert {part: part.stat().st_mtime_ns for part in finished} == mtimes
    assert len(_files(results_dir / "table", "part-*.npz")) == 2
    leftovers = [p for p in results_dir.rglob(".*") if p.is_file() and p.name != ".lock"]
    assert not leftovers

    assert main(["run", str(path), "--out", str(tmp_path / "whole")]) == 0
    for pattern in ("metrics.csv", "table/part-*.npz"):
        resumed = _files(results_dir, pattern)
        whole = _files(tmp_path / "whole" / "tiny", pattern)
        assert [p.name for p in resumed] == [p.name for p in whole]
        assert [p.read_bytes() for p in resumed] == [p.read_bytes() for p in whole]


def test_interrupt_keeps_finished_runs_and_exits_130(write_config, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "run_experiment", interrupted)
    status = main(["run", str(write_config(TINY)), "--out", str(tmp_path / "out")])
    assert status == 130
    assert "interrupted" in capsys.readouterr().err


@pytest.mark.heavy
def test_ctrl_c_at_random_moments_exits_130_and_keeps_the_results_whole(write_config, tmp_path):
    """SIGINT 20 times, at moments spread over a small sweep's start, compilations, fits and
    writes (after the interpreter has started): every time the process exits 130 (or 0 when
    it had finished), with no crash, and whatever it left reads back whole; a last run
    then completes the sweep with the uninterrupted run's metrics."""
    path = write_config(SWEEP)
    out = tmp_path / "interrupted"
    rng = np.random.default_rng(0)
    codes = []
    for delay in rng.uniform(3.0, 12.0, size=20):
        process = subprocess.Popen(
            [sys.executable, "-m", "vi", "run", str(path), "--out", str(out)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
        codes.append(process.returncode)
        assert process.returncode in (130, 0), (delay, process.returncode, err.decode()[-2000:])
        for part in _files(out / "tiny" / "table", "part-*.npz"):
            with np.load(part) as columns:
                assert len(columns["run_id"]) == 2
    assert codes.count(130) >= 10  # most landed before the end, as meant
    assert main(["run", str(path), "--out", str(out)]) == 0
    assert main(["run", str(path), "--out", str(tmp_path / "whole")]) == 0
    resumed = (out / "tiny" / "metrics.csv").read_bytes()
    assert resumed == (tmp_path / "whole" / "tiny" / "metrics.csv").read_bytes()
