"""The parametrisations moved to ``-m heavy`` for CI's budget still name real tests."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HEAVY_PARAMETRISATIONS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_heavy_parametrisation_names_a_collected_test():
    """A renamed test or parameter would otherwise slip back into CI's run unnoticed."""
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-n", "0", "-m", "heavy"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout.splitlines()
    assert HEAVY_PARAMETRISATIONS - set(listed) == set()
