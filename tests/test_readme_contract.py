"""The README's quickstart is exactly two commands, and CI runs the test one verbatim."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "no sh code block after '## Quickstart'"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quickstart_is_two_commands() -> None:
    commands = _quickstart_commands()
    assert len(commands) == 2
    assert "marl-oracle report" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _quickstart_commands()[1] in ci
    assert "mypy --strict reference verify" in "\n".join(ci)
    assert "ruff check ." in "\n".join(ci)


def test_readme_opens_with_the_quickstart() -> None:
    headings = [ln for ln in (ROOT / "README.md").read_text().splitlines() if ln.startswith("#")]
    assert headings[1] == "## Quickstart"


def test_readme_python_examples_run(tmp_path: Path) -> None:
    """The README's Python blocks, run in order as one script (in a scratch directory, as
    they write files), raise nothing.  The script runs in its own interpreter: one block
    imports JAX, whose threads must not live in the test process (later tests fork process
    pools)."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    script = tmp_path / "readme_examples.py"
    script.write_text("\n".join(blocks))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
