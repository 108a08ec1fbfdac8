"""A run killed with SIGKILL mid-level resumes from its last finished level and loses nothing finished."""

import os
import signal
import subprocess
import sys
import time

import torch
import yaml

from ticketlab.config.spec import ExperimentSpec
from ticketlab.experiment.run import run_experiment
from ticketlab.store import RunDir

SPEC = dict(
    model="mlp:784-32-16-10",
    dataset="synthetic",
    val_size=200,
    densities=(0.5,),
    recipe={"steps": "300it", "eval_every": "100it"},
    method={"name": "lottery", "K": 0.8},
)


def _cli(spec_file, out):
    cmd = [
        sys.executable,
        "-m",
        "ticketlab.cli",
        "run",
        str(spec_file),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "200"}
    )


def _files(run: RunDir, level: int) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in run.level(level).path.iterdir()}


def test_sigkill_mid_level_then_rerun_matches_an_uninterrupted_run(tmp_path):
    spec = ExperimentSpec.model_validate(SPEC)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    run = RunDir(tmp_path / "cut" / spec.run_id())

    proc = _cli(path, tmp_path / "cut")
    deadline = time.time() + 120
    while not run.level(0).done and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # still running: killed mid-run
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not run.finished
    done = [lvl for lvl in range(10) if run.level(lvl).done]
    assert done and done == list(range(len(done)))
    stamps = {lvl: _files(run, lvl) for lvl in done}

    proc = _cli(path, tmp_path / "cut")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert run.finished
    for lvl in done:  # finished levels were read back, not recomputed
        assert _files(run, lvl) == stamps[lvl]

    torch.set_num_threads(1)
    ref = RunDir(run_experiment(spec, tmp_path / "ref", device="cpu").path)
    levels = [lvl for lvl in range(10) if ref.level(lvl).done]
    assert levels == [lvl for lvl in range(10) if run.level(lvl).done] and len(levels) > len(done)
    for lvl in levels:
        assert run.level(lvl).mask() == ref.level(lvl).mask()
        a, b = run.level(lvl).weights("final"), ref.level(lvl).weights("final")
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert run.level(lvl).metrics()["test_acc"] == ref.level(lvl).metrics()["test_acc"]
