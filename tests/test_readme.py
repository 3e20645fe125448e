"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, capsys):
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {})
    assert capsys.readouterr().out.strip()


def test_the_readme_test_command_is_what_ci_runs():
    command = re.findall(r"```bash\n(python3 -m venv .*?pytest)\n```", README.read_text())
    ci = (README.parent / ".ci" / "run").read_text()
    assert len(command) == 1 and command[0] in ci
