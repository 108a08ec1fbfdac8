"""benchmarks/reproduce/budget.sh on tiny settings: it runs a suite, writes its page, logs each session, and a
session that was killed before it could log itself is logged when the next one starts (issue 23: the
compute of a suite is stated, resumed and killed sessions included)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = "dataset=synthetic recipe.steps=2it recipe.early_stop=null densities=[0.5] method.rounds=2"


def budget(tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RUNS": str(tmp_path / "runs"), "PAGES": str(tmp_path / "pages"), "SET": TINY}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        ["bash", str(ROOT / "benchmarks/reproduce/budget.sh"), "000_saw_vs_bimodal"],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip


@pytest.mark.slow
def test_sessions_are_logged_and_a_killed_one_is_logged_by_the_next(tmp_path):
    first = budget(tmp_path)
    assert first.returncode == 0, first.stderr
    log = tmp_path / "runs" / "000_saw_vs_bimodal.sessions.tsv"
    assert len(log.read_text().splitlines()) == 1
    assert not (tmp_path / "runs" / "000_saw_vs_bimodal.session.open").exists()
    # a session that started 100 s ago, wrote a file and was killed: it left only its marker
    started = int(time.time()) - 100
    marker = tmp_path / "runs" / "000_saw_vs_bimodal.session.open"
    marker.write_text(f"2026-01-01T00:00:00Z\t{started}\t1.00 1.00 1.00\tSome CPU\n")
    for path in (tmp_path / "runs" / "000_saw_vs_bimodal").rglob("*"):  # what the first session wrote
        os.utime(path, (started - 10, started - 10))
    written = tmp_path / "runs" / "000_saw_vs_bimodal" / "late.txt"
    written.write_text("x")
    os.utime(marker, (started, started))
    os.utime(written, (started + 40, started + 40))
    second = budget(tmp_path)
    assert second.returncode == 0, second.stderr
    rows = [line.split("\t") for line in log.read_text().splitlines()]
    assert len(rows) == 3 and rows[1][0] == "2026-01-01T00:00:00Z" and rows[1][1] == "40"
    assert rows[1][2].startswith("killed") and rows[1][4] == "Some CPU"
    # a marker left by a session that did log itself (e.g. written by hand) adds no second row
    marker.write_text(f"{rows[2][0]}\t{started}\t1.00 1.00 1.00\tSome CPU\n")
    assert budget(tmp_path).returncode == 0
    assert [line.split("\t")[0] for line in log.read_text().splitlines()].count(rows[2][0]) == 1
    compute = (tmp_path / "pages" / "000_saw_vs_bimodal" / "compute.md").read_text()
    assert "in 4 session(s)" in compute and "| 2026-01-01T00:00:00Z | 40 | killed" in compute
