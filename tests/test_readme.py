"""The README's Python examples run as written."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
@pytest.mark.slow
def test_readme_example_runs(index, capsys):
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {})
    assert capsys.readouterr().out.strip()


def test_the_readme_test_command_is_what_ci_runs():
    command = re.findall(r"```bash\n(python3 -m venv .*?pytest)\n```", README.read_text())
    ci = (README.parent / ".ci" / "run").read_text()
    assert len(command) == 1 and command[0] in ci


SWEEP = re.findall(r"```py\n(# sweep.py.*?)```", README.read_text(), flags=re.S)


def _sweep_script(tmp_path) -> Path:
    assert len(SWEEP) == 1
    path = tmp_path / "sweep.py"
    path.write_text(SWEEP[0])
    return path


def _sweep_env() -> dict:
    """The environment of a fresh shell in the checkout: vi importable, JAX's defaults."""
    ours = ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES", "JAX_ENABLE_X64")
    env = {k: v for k, v in os.environ.items() if k not in ours}
    return {**env, "PYTHONPATH": str(README.parent), "JAX_PLATFORMS": "cpu"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_multi_host_sweep_says_when_no_coordinator_answers(tmp_path):
    """Process 1 alone, its coordinator's port closed: one line naming the address, exit 1."""
    script, port = _sweep_script(tmp_path), _free_port()
    result = subprocess.run(
        [sys.executable, str(script), "1", f"127.0.0.1:{port}", "2"],
        env=_sweep_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"no answer at 127.0.0.1:{port} in 2 s: is process 0 running there?"
    )


@pytest.mark.heavy
def test_the_multi_host_sweep_runs_on_loopback(tmp_path):
    """The README's script as written, two processes on one machine."""
    script, port = _sweep_script(tmp_path), _free_port()
    argv = lambda i: [sys.executable, str(script), str(i), f"127.0.0.1:{port}", "60"]
    procs = [
        subprocess.Popen(
            argv(i), env=_sweep_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "BatchFitResult(15 fits of dim 3: 15 converged)" in outs[0][0]
    assert "BatchFitResult" not in outs[1][0]  # only process 0 prints
