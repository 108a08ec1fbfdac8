"""The code examples of the docs run as written: each page's Python blocks in order, in a fresh process; and
extending.md's plugin files with its commands, through the real command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
SRC = Path(__file__).resolve().parents[1] / "src"
PAGES = ["architecture.md"]


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


@pytest.mark.parametrize("page", PAGES)
def test_examples_run(page, tmp_path):
    blocks = python_blocks(DOCS / page)
    assert blocks, f"{page} has no Python examples"
    script = tmp_path / "examples.py"
    script.write_text("\n\n".join(blocks))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def named_files(page: Path) -> dict[str, str]:
    """The blocks of ``page`` whose first line is ``# <file name>`` (plugins, sweep files), by file name."""
    out = {}
    for body in re.findall(r"```(?:python|yaml)\n(.*?)```", page.read_text(), flags=re.S):
        first = body.splitlines()[0]
        if re.fullmatch(r"# [\w.-]+\.(py|yaml)", first):
            out[first[2:]] = body
    return out


def commands(page: Path) -> list[list[str]]:
    """The ``ticketlab ...`` commands of the page's bash blocks, continued lines joined, as argument lists
    (those with ``...`` left out)."""
    import shlex

    out = []
    for body in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
        for command in body.replace("\\\n", " ").splitlines():
            words = shlex.split(command, comments=True)
            if words[:1] == ["ticketlab"] and "..." not in words:
                out.append(words[1:])
    return out


def test_extending_plugins_run_through_the_command_line(tmp_path):
    page = DOCS / "extending.md"
    files = named_files(page)
    assert {"blobs.py", "twolayer.py", "balanced.py", "one_shot_lth.py", "blobs_sweep.yaml"} <= set(files)
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    runs = [words for words in commands(page) if all(w in files for w in words[1::2][: words.count("--plugin")])]
    assert [words[8] for words in runs] == ["prune", "sweep"]  # each after the four plugins
    outputs = []
    for words in runs:
        done = subprocess.run(
            [sys.executable, "-m", "ticketlab.cli", *words],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        outputs.append(done.stdout)
    prune, sweep = outputs
    assert "level 2/2: density 0.2" in prune and "one_shot_lth · twolayer:32 · blobs" in prune
    assert "2 runs finished, 0 failed" in sweep  # the workers imported the plugins too
