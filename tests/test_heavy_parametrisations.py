"""The parametrisations moved to ``-m heavy`` for CI's budget still name real tests."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_heavy_parametrisation_names_a_collected_test(pytestconfig):
    """A renamed test or parameter would otherwise slip back into CI's run unnoticed."""
    conftest = ROOT / "tests" / "conftest.py"  # each tests folder has its own conftest module
    (heavy,) = [
        plugin.HEAVY_PARAMETRISATIONS
        for plugin in pytestconfig.pluginmanager.get_plugins()
        if getattr(plugin, "__file__", None) == str(conftest)
    ]
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-n", "0", "-m", "heavy"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout.splitlines()
    assert len(heavy) == 12 and heavy - set(listed) == set()
