"""Fixtures for the experiment tests: tiny configs written to temporary files."""

import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

TINY = """\
name: tiny
target:
  name: bimodal_2d
  params: {separation: 3.0}
objectives:
  - {name: reverse_kl, method: stochastic}
optimizer: {name: adam, learning_rate: 0.05}
stopping: {max_steps: 30}
num_samples: 4
seeds: [0, 1]
diagnostics: {num_samples: 64}
"""
"""A config that runs in well under a second once compiled (shared with configs/smoke.yaml)."""


@pytest.fixture
def write_config(tmp_path):
    """Writes YAML text (dedented) to a file in a temporary directory and returns its path."""

    def write(text: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def out_dir(tmp_path) -> Path:
    """An output directory that does not exist yet."""
    return tmp_path / "out"
