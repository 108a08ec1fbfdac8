"""Several sweeps on one folder: each run is computed by one of them; runs held by another sweep are
skipped, reported and waited for; a killed sweep's runs are taken over and nothing finished is lost."""

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

import ticketlab.sweep.executors as executors
from ticketlab.experiment.run import run_experiment
from ticketlab.store import RunDir
from ticketlab.sweep import SweepSpec, expand, run_batch, run_sweep
from ticketlab.sweep.claims import CLAIM_FILE, ClaimKeeper, read_claim

SRC = Path(__file__).resolve().parents[1] / "src"
BASE = {
    "model": "mlp:784-32-10",
    "dataset": "synthetic",
    "val_size": 200,
    "recipe": {"steps": "200it", "eval_every": "100it"},
    "method": {"name": "lottery", "K": 0.5},
    "densities": [0.25],
}
# Counts level writes in every process of a sweep (its spawned workers too): a line per finished level.
COUNTER = """
import os
if os.environ.get("TICKETLAB_TEST_COUNT"):
    import ticketlab.store as _store
    _write = _store.LevelDir.write
    def _counted(self, *args, **kwargs):
        _write(self, *args, **kwargs)
        with open(os.environ["TICKETLAB_TEST_COUNT"], "a") as handle:
            handle.write(f"{os.getpid()} {self.path}\\n")
    _store.LevelDir.write = _counted
"""


class InlinePool:
    """The local pool's interface, running each batch in this process (no worker start-up)."""

    capacity = 1

    def __init__(self, workers, root, kwargs):
        self.root, self.kwargs, self.results = root, kwargs, {}

    def submit(self, batch):
        handle = object()
        self.results[handle] = run_batch(batch, self.root, **self.kwargs)
        return handle

    def next_done(self, handles):
        return handles[0], self.results.pop(handles[0])

    def close(self):
        pass


def test_runs_another_sweep_holds_are_skipped_reported_and_waited_for(tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "LocalPool", InlinePool)
    sweep = SweepSpec(base={**BASE, "recipe": {"steps": "20it", "eval_every": "10it"}}, grid={"seed": [0, 1]})
    held, free = expand(sweep)
    keeper = ClaimKeeper(ttl=30)  # "another sweep": this test holds seed 0's run
    assert keeper.claim(tmp_path / held.run_id())
    waits, report = [], {}
    thread = threading.Thread(
        target=lambda: report.update(r=run_sweep(sweep, out=tmp_path, on_wait=waits.append, poll=0.1))
    )
    thread.start()
    deadline = time.time() + 120
    while not (waits and RunDir(tmp_path / free.run_id()).finished) and time.time() < deadline:
        time.sleep(0.05)
    assert list(waits[0]) == [held.run_id()] and waits[0][held.run_id()].pid == os.getpid()
    time.sleep(0.5)
    assert thread.is_alive() and not RunDir(tmp_path / held.run_id()).finished  # computed its own, now waits
    run_experiment(held, tmp_path, device="cpu")  # the other sweep finishes its run
    keeper.close()
    thread.join(120)
    outcomes = {o.run_id: o for o in report["r"].outcomes}
    assert outcomes[free.run_id()].ok and not outcomes[free.run_id()].elsewhere
    assert outcomes[held.run_id()].ok and outcomes[held.run_id()].elsewhere and len(report["r"].elsewhere) == 1
    assert len(waits) == 1 and not (tmp_path / held.run_id() / CLAIM_FILE).exists()


def test_a_dead_owners_run_is_taken_over_and_a_failure_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "LocalPool", InlinePool)
    sweep = SweepSpec(
        base={**BASE, "recipe": {"steps": "20it", "eval_every": "10it"}}, grid={"recipe.batch_size": [60, 5000]}
    )  # 5000 > the training split: fails
    good, bad = expand(sweep)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for spec in (good, bad):
        (tmp_path / spec.run_id()).mkdir(parents=True)
        (tmp_path / spec.run_id() / CLAIM_FILE).write_text(
            json.dumps(
                {
                    "host": socket.gethostname(),
                    "pid": dead.pid,
                    "started": 0,
                    "expires": time.time() + 600,
                    "token": "x",
                }
            )
        )
    waits = []
    report = run_sweep(sweep, out=tmp_path, on_wait=waits.append)
    assert not waits and [o.ok for o in report.outcomes if o.run_id == good.run_id()] == [True]
    assert RunDir(tmp_path / good.run_id()).finished and read_claim(tmp_path / good.run_id()) is None
    failure = json.loads((tmp_path / bad.run_id() / "failed.json").read_text())
    assert (
        "batch_size 5000 is larger than the training split" in failure["error"]
        and failure["host"] == socket.gethostname()
    )
    # the failure is forgotten once the run succeeds
    executors._record_failure(tmp_path / bad.run_id(), report.outcomes[0].__class__(bad.run_id(), {}, True))
    assert not (tmp_path / bad.run_id() / "failed.json").exists()


def _start(tmp_path: Path, sweep_file: Path, counter: Path) -> subprocess.Popen:
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(COUNTER)
    env = {
        **os.environ,
        "PYTHONPATH": f"{hook}{os.pathsep}{SRC}",
        "TICKETLAB_TEST_COUNT": str(counter),
        "COLUMNS": "200",
    }
    cmd = [sys.executable, "-m", "ticketlab.cli", "sweep", str(sweep_file), "--out", str(tmp_path / "runs")]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _writes(counter: Path) -> collections.Counter:
    lines = counter.read_text().splitlines() if counter.exists() else []
    return collections.Counter(line.split(" ", 1)[1] for line in lines)


def _sweep_file(tmp_path: Path) -> tuple[Path, list]:
    sweep = {"base": BASE, "grid": {"seed": [0, 1, 2, 3]}, "workers": 1, "batch": 1}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path, expand(SweepSpec.model_validate(sweep))


def _all_levels(root: Path, specs) -> list[str]:
    return [str(root / s.run_id() / f"level_{i:02d}") for s in specs for i in range(3)]


@pytest.mark.slow  # two sweeps, each starting a worker process: 30-90 s on two shared cores
def test_two_sweeps_started_together_compute_each_level_once(tmp_path):
    path, specs = _sweep_file(tmp_path)
    counter = tmp_path / "writes.txt"
    procs = [_start(tmp_path, path, counter), _start(tmp_path, path, counter)]
    outputs = [p.communicate(timeout=600)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    writes = _writes(counter)
    assert sorted(writes) == sorted(_all_levels(tmp_path / "runs", specs)) and set(writes.values()) == {1}, writes
    assert all(RunDir(tmp_path / "runs" / s.run_id()).finished for s in specs)
    assert not list((tmp_path / "runs").glob(f"*/{CLAIM_FILE}"))


@pytest.mark.slow  # as above, plus a resumed run to compare with
def test_a_sweep_killed_mid_level_is_taken_over_and_nothing_is_lost(tmp_path):
    path, specs = _sweep_file(tmp_path)
    counter = tmp_path / "writes.txt"
    victim, survivor = _start(tmp_path, path, counter), _start(tmp_path, path, counter)
    deadline = time.time() + 300
    while sum(_writes(counter).values()) < 2 and time.time() < deadline and victim.poll() is None:
        time.sleep(0.02)
    assert victim.poll() is None, victim.stdout.read().decode()
    os.killpg(victim.pid, signal.SIGKILL)  # the sweep and its worker, as a crashed machine
    victim.wait()
    out = survivor.communicate(timeout=600)[0].decode()
    assert survivor.returncode == 0, out
    writes = _writes(counter)
    levels = _all_levels(tmp_path / "runs", specs)
    assert set(writes) <= set(levels) and max(writes.values()) == 1, writes  # no finished level computed twice
    assert all(RunDir(tmp_path / "runs" / s.run_id()).finished for s in specs)
    for level in levels:  # every level complete and sound
        assert (Path(level) / "metrics.json").exists()
        RunDir(Path(level).parent).level(int(level[-2:])).weights("final")
    torch.set_num_threads(1)
    ref = RunDir(run_experiment(specs[0], tmp_path / "ref", device="cpu").path)
    got = RunDir(tmp_path / "runs" / specs[0].run_id())
    for i in range(3):
        assert got.level(i).mask() == ref.level(i).mask()
        a, b = got.level(i).weights("final"), ref.level(i).weights("final")
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
