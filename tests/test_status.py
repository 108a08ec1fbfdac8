"""``ticketlab status`` and the sweep's progress bar: what a run folder holds, and what a sweep shows."""

import io
import json
import os
import re
import shutil
import time

import pytest
from rich.console import Console
from rich.progress import Progress
from typer.testing import CliRunner

from ticketlab.cli import app
from ticketlab.cli import common as cli_common
from ticketlab.experiment.run import run_experiment
from ticketlab.store import RunDir
from ticketlab.sweep import Outcome, SweepSpec, expand
from ticketlab.sweep.claims import ClaimKeeper
from ticketlab.sweep.status import folder_status

cli_common.console.width = cli_common.err.width = 200
BASE = {
    "model": "mlp:784-16-10",
    "dataset": "synthetic",
    "val_size": 200,
    "recipe": {"steps": "20it", "eval_every": "10it"},
    "method": {"name": "lottery", "K": 0.5},
    "densities": [0.25],
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Four runs: finished, in progress (claimed by this process), failed, interrupted after level 0."""
    root = tmp_path_factory.mktemp("status")
    specs = expand(SweepSpec(base=BASE, grid={"seed": [0, 1, 2, 3]}))
    for spec in specs:
        run_experiment(spec, root, device="cpu")
    _, running, failed, interrupted = (RunDir(root / s.run_id()) for s in specs)
    for run in (running, failed, interrupted):
        (run.path / "done.json").unlink()
        shutil.rmtree(run.level(2).path)
    (failed.path / "failed.json").write_text(
        json.dumps({"error": "ValueError: boom", "host": "h1", "time": time.time()})
    )
    return root, specs


def test_status_tells_finished_in_progress_failed_interrupted_and_damaged_apart(folder):
    root, specs = folder
    keeper = ClaimKeeper(ttl=30)
    try:
        keeper.claim(root / specs[1].run_id())
        found = folder_status(root)
    finally:
        keeper.close()
    states = {r.run_id: r for r in found.runs}
    assert [states[s.run_id()].state for s in specs] == ["finished", "in progress", "failed", "interrupted"]
    assert states[specs[1].run_id()].detail.startswith(f"{os.uname().nodename}:{os.getpid()} since ")
    assert states[specs[2].run_id()].detail.startswith("ValueError: boom (h1, ")
    assert [(states[s.run_id()].levels, states[s.run_id()].expected) for s in specs] == [(3, 3), (2, 3), (2, 3), (2, 3)]
    assert found.shared == {"inits": 4, "dense": 4} and found.damaged == []


def test_status_command_summarises_and_names_damaged_files(folder, tmp_path):
    root, specs = folder
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    result = CliRunner().invoke(app, ["status", str(copy)])
    assert result.exit_code == 0, result.output
    assert "4 runs: 1 finished, 0 in progress, 1 failed, 2 interrupted, 4 inits, 4 dense" in result.output
    assert specs[0].run_id() not in result.output and "ValueError: boom" in result.output
    assert specs[0].run_id() in CliRunner().invoke(app, ["status", str(copy), "--all"]).output
    final = copy / specs[0].run_id() / "level_01" / "final.safetensors"
    data = bytearray(final.read_bytes())
    data[-1] ^= 0xFF
    final.write_bytes(bytes(data))
    (copy / specs[3].run_id() / "level_00" / "metrics.json").write_text("{trunc")
    result = CliRunner().invoke(app, ["status", str(copy)])
    assert result.exit_code == 1
    assert (
        "2 damaged files" in result.output
        and f"{specs[0].run_id()}/level_01/final.safetensors: checksum mismatch" in result.output
    )
    assert f"{specs[3].run_id()}/level_00/metrics.json" in result.output
    assert CliRunner().invoke(app, ["status", str(copy), "--no-verify"]).exit_code == 0
    assert CliRunner().invoke(app, ["status", str(tmp_path / "none")]).exit_code == 2


def test_the_sweep_bar_counts_levels_runs_in_flight_and_failures(tmp_path, monkeypatch):
    from ticketlab.cli.sweep import _run_with_progress

    spec = SweepSpec(base=BASE, grid={"seed": [0, 1, 2]}, out=str(tmp_path))
    a, b, c = expand(spec)
    run_experiment(a, tmp_path, device="cpu")  # finished before: its 3 levels count, not towards the pace
    output = io.StringIO()
    bars = []
    columns = cli_common.progress_bar().columns

    def bar():
        bars.append(Progress(*columns, console=Console(file=output, force_terminal=True, width=200)))
        return bars[-1]

    monkeypatch.setattr(cli_common, "progress_bar", bar)
    seen = []

    def fake_sweep(sweep, *, on_start, on_done, on_submit, on_wait, data_root, log):
        log("lenet300 (synthetic, batch 60): layout 1x1x3 for 3 runs (measured)")  # the layout line, on stderr
        on_start(2, 3)
        on_submit([b.run_id(), c.run_id()])
        run_experiment(b, tmp_path, device="cpu")  # b done on disk, reported later
        shutil.rmtree(tmp_path / b.run_id() / "level_02")
        time.sleep(1.5)  # the bar polls the disk every second: b's two levels show while in flight
        task = bars[0].tasks[0]
        seen.append((task.completed, task.total, task.fields["info"]))
        on_wait({c.run_id(): None})
        on_done(Outcome(c.run_id(), {}, False, "ValueError: bad"))
        on_done(Outcome(b.run_id(), {}, True))
        task = bars[0].tasks[0]
        seen.append((task.completed, task.total, task.fields["info"]))
        return "report"

    err = io.StringIO()
    monkeypatch.setattr(cli_common, "err", Console(file=err, width=200))
    assert _run_with_progress(spec, fake_sweep, None) == "report"
    assert seen[0] == (3 + 2, 9, "runs 1/3, 2 in flight")
    assert seen[1] == (3 + 3, 9, "runs 2/3, 0 in flight, 1 failed")
    # one line per ended run, numbered among this sweep's runs and named by its grid point
    assert f"run 1/2 {c.run_id()} failed: ValueError: bad (seed=2)" in err.getvalue()
    assert re.search(rf"run 2/2 {b.run_id()} finished \(0\.0 s\) seed=1 · \d:\d\d:\d\d elapsed", output.getvalue())
    assert f"{c.run_id()} is being computed by another sweep (?): skipped, waited for at the end" in err.getvalue()
