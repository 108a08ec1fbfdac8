"""What a person watching a run sees: level k/N with N the levels the method runs, the steps of the current
training, elapsed time that advances and an estimate of the time left in a terminal; one line per finished
level without one; how to resume after Ctrl-C; the Python API's default lines on stderr."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_method_contract import CASES, spec_of

from ticketlab.experiment.progress import RunStatus, clock, level_plan
from ticketlab.experiment.run import run_experiment

SRC = str(Path(__file__).resolve().parents[1] / "src")
PRUNE = [
    "-m",
    "ticketlab.cli",
    "prune",
    "--model",
    "mlp:784-16-10",
    "--dataset",
    "synthetic",
    "--val-size",
    "100",
    "--device",
    "cpu",
]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC, **extra}


class Checked(RunStatus):
    """A status that checks, for every trained level, that what it showed during the training (level,
    control) is what was then recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.shown: tuple[int, str] | None = None
        self.mismatches: list[tuple] = []

    def step(self, step, total, row):
        if self.shown is None:
            self.shown = self.current()
        super().step(step, total, row)

    def finished(self, row, resumed):
        if self.shown is not None and self.shown != (row["level"], row["control"]):
            self.mismatches.append((self.shown, (row["level"], row["control"])))
        self.shown = None
        super().finished(row, resumed)


@pytest.mark.parametrize("name", CASES)
def test_plan_and_current_level_match_what_every_method_runs(name, tmp_path):
    spec = spec_of(name).model_copy(update={"controls": ("reinit",)})
    status = Checked()
    result = run_experiment(spec, tmp_path, device="cpu", status=status)
    trained = [r for r in result.rows if r["control"] != "untrained"]
    assert status.plan.last == max(r["level"] for r in result.rows)
    assert status.plan.trainings == len(trained)
    assert status.mismatches == []
    assert status.done and status.label() == f"level {status.plan.last}/{status.plan.last}"


def test_plan_by_hand():
    from ticketlab.config import ExperimentSpec, MethodSpec

    # K = 0.8 from 1.0 to 0.5: 0.8, 0.64, 0.512, then 0.5 (within 1% of 0.512 * 0.8 = 0.4096? no: the target)
    lottery = ExperimentSpec(densities=(0.5,), controls=("reinit", "shuffle_mask"))
    assert level_plan(lottery).last == 4 and level_plan(lottery).trainings == 1 + 4 * 3
    snip = ExperimentSpec(densities=(0.1, 0.01), method=MethodSpec(name="snip"))
    assert level_plan(snip).last == 2 and level_plan(snip).trainings == 3
    thresholds = ExperimentSpec(method=MethodSpec(name="supermask", options={"thresholds": [0.1, 0.2, 0.3]}))
    assert level_plan(thresholds).last == 3 and level_plan(thresholds).trainings == 2
    assert clock(3725.9) == "1:02:05" and clock(-1) == "0:00:00"


def test_unknown_method_shows_the_level_alone():
    from ticketlab.config import ExperimentSpec, MethodSpec
    from ticketlab.methods import METHODS

    METHODS.register("test_progress_plugin")(lambda job: None)
    try:
        status = RunStatus()
        status.begin(ExperimentSpec(method=MethodSpec(name="test_progress_plugin")), Path("x"))
        assert status.plan.last is None and status.label() == "level 0"
    finally:
        METHODS._entries.pop("test_progress_plugin")


def run_in_terminal(args: list[str]) -> tuple[int, str]:
    """Run ``python args`` with a pseudo-terminal as its stdin/stdout/stderr; (exit code, all it drew)."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
        env=env(TERM="xterm-256color", COLUMNS="180", LINES="40"),
    )
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif process.poll() is not None:
            break
    os.close(master)
    return process.wait(), out.decode(errors="replace")


def test_terminal_shows_level_of_n_steps_advancing_elapsed_and_time_left(tmp_path):
    code, drawn = run_in_terminal(
        # levels of a few seconds each even on a quiet machine, so the clock has time to move
        [*PRUNE, "--density", "0.8", "--steps", "4000it", "--eval-every", "1000it", "--out", str(tmp_path)]
    )
    assert code == 0, drawn[-3000:]
    assert {"level 0/1", "level 1/1"} <= set(re.findall(r"level \d+/\d+", drawn))
    elapsed = set(re.findall(r"(\d:\d\d:\d\d) elapsed", drawn))
    assert len(elapsed) >= 2, elapsed  # the clock moved while the run went on
    assert re.search(r"~\d:\d\d:\d\d left", drawn)
    assert re.search(r"step \d+/4000", drawn) and "evaluating" in drawn
    assert "after 1 trainings" not in drawn and "0:00:00 0:00:00" not in drawn


def test_without_a_terminal_one_line_per_finished_level(tmp_path):
    done = subprocess.run(
        [sys.executable, *PRUNE, "--density", "0.64", "--steps", "10it", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env(),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("level ")]
    assert [line.split(":")[0] for line in lines] == ["level 0/2", "level 1/2", "level 2/2"]
    assert all(re.search(r"\d:\d\d:\d\d elapsed", line) for line in lines)
    assert "\x1b[" not in done.stdout  # no redrawn bar in a pipe


def test_ctrl_c_says_how_to_resume(tmp_path):
    process = subprocess.Popen(
        # 14 levels after level 0 (IMP, K = 0.8, to 5%): the run cannot finish before the signal lands, even on a
        # loaded machine where this process waits a while after reading the line (one level after it could)
        [
            sys.executable,
            *PRUNE,
            *("--method", "lottery", "--K", "0.8", "--density", "0.05", "--steps", "2000it", "--out", str(tmp_path)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        # Ctrl-C as a terminal delivers it: a test run started in the background by a shell without job
        # control inherits SIGINT ignored, and the child would then never see it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("level 0/"):
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 130, err
    assert (
        "interrupted after level 0/" in err
        and "run the same command again to resume from the last finished level" in err
    )
    assert "Traceback" not in err


def test_api_prints_a_line_per_level_to_stderr_unless_quiet(tmp_path, capsys, monkeypatch):
    import ticketlab
    from ticketlab.config import Recipe

    recipe = Recipe(steps="5it", batch_size=50)
    monkeypatch.delenv("TICKETLAB_QUIET", raising=False)
    ticketlab.prune("mlp:784-16-10", "synthetic", "snip", 0.1, val_size=100, recipe=recipe, out=tmp_path, device="cpu")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in lines] == ["level 0/1", "level 1/1"]
    ticketlab.prune(
        "mlp:784-16-10", "synthetic", "snip", 0.1, val_size=100, recipe=recipe, out=tmp_path, device="cpu", log=None
    )
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("TICKETLAB_QUIET", "1")
    ticketlab.prune("mlp:784-16-10", "synthetic", "snip", 0.2, val_size=100, recipe=recipe, out=tmp_path, device="cpu")
    assert capsys.readouterr().err == ""
