"""The GPU check runs its three steps at CPU sizes and writes one JSON that says what it saw."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.heavy
def test_the_gpu_check_runs_its_steps_on_a_cpu_and_writes_one_json(tmp_path):
    out = tmp_path / "check.json"
    command = [
        "bash",
        str(REPO / "experiments/benchmarks/gpu_check.sh"),
        str(out),
        "--small",
        "--tests",
        "tests/kernels/test_gaussian.py::test_diag_kl_matches_numerical_integration",
    ]
    env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["device"]["platform"] == "cpu" and report["size"] == "small"
    assert report["tests"]["exit_code"] == 0 and report["tests"]["counts"]["passed"] >= 1
    assert [row["B"] for row in report["batch"]] == [10, 100, 1000]
    assert all(row["all_finite"] and row["fits_per_s"] > 0 for row in report["batch"])
    (kernel,) = report["kernels"]
    # The floor reads the same bytes with no transcendental, so it is the faster of the two.
    assert 0 < kernel["fraction_of_floor"] < 1.5 and kernel["floor_gb_per_s"] > 0
