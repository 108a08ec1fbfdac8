"""A sweep on a two-node Ray cluster whose second node shares no run folder and no dataset with the
driver: every run directory comes home complete, checksummed and resumable, the dataset is shipped to the
node that lacks it, a finished level on the driver is resumed from rather than recomputed, and a shared
dense baseline is trained once.

The second node runs in its own mount namespace with tmpfs over the sweep's folder, over the system's
Fashion-MNIST folder and over its own data cache: a write that bypasses the result path lands there and is
lost, and the node finds the dataset only if it is shipped. The head node has no CPUs, so every task runs
on the second node.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from ray_cluster import SRC, two_nodes, usable

from ticketlab.experiment.dense import dense_store
from ticketlab.experiment.run import run_experiment
from ticketlab.store import RunDir
from ticketlab.sweep import SweepSpec, expand

SYSTEM_DATA = Path("/usr/share/datasets/fashion-mnist")
BASE = {
    "model": "mlp:784-16-10",
    "dataset": "fashion-mnist",
    "val_size": 1000,
    "recipe": {"steps": "30it", "eval_every": "15it"},
    "method": {"name": "oneshot"},
    "densities": [0.5],
}


@pytest.mark.slow  # starting two Ray nodes takes 1-2 minutes on two shared cores
def test_a_sweep_on_nodes_without_a_shared_filesystem_brings_every_run_home(tmp_path):
    if (why := usable()) is not None:
        pytest.skip(why)
    if not SYSTEM_DATA.is_dir():
        pytest.skip("Fashion-MNIST is not installed here (dataset-fashion-mnist)")
    out, node2 = tmp_path / "runs", tmp_path / "node2"
    out.mkdir()
    node2.mkdir()
    sweep = {
        "base": BASE,
        "grid": {"method.criterion": ["magnitude", "random"], "seed": [0, 1]},
        "batch": 1,
        "executor": "ray",
        "out": str(out),
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    specs = expand(SweepSpec.model_validate(sweep))

    # seed 0 / magnitude was started here before: level 0 finished, level 1 not (and its dense level stored)
    torch.set_num_threads(1)
    started = RunDir(run_experiment(specs[0], out, device="cpu").path)
    shutil.rmtree(started.level(1).path)
    (started.path / "done.json").unlink()
    before = (started.level(0).path / "metrics.json").stat()

    node2_env = {"TICKETLAB_DATA": str(node2 / "data"), "XDG_CACHE_HOME": str(node2 / "cache")}
    hidden = f"{sys.executable} -c \"from ticketlab.data.locate import locate; assert locate('fashion-mnist') is None\""
    with two_nodes([out, SYSTEM_DATA, node2], {}, node2_env, check=hidden, head_cpus=0) as address:
        driver = subprocess.run(
            [sys.executable, "-m", "ticketlab.cli", "sweep", str(path), "--address", address],
            capture_output=True,
            env={
                "PATH": "/usr/bin:/bin",
                "PYTHONPATH": str(SRC),
                "RAY_AUTH_MODE": "disabled",
                "COLUMNS": "200",
                "HOME": str(Path.home()),
            },
            timeout=900,
        )
    output = driver.stdout.decode() + driver.stderr.decode()
    assert driver.returncode == 0, output[-4000:]
    assert "4 runs finished, 0 failed" in output

    for spec in specs:  # complete, checksummed, equal to the same run made here
        run = RunDir(out / spec.run_id())
        assert run.finished and json.loads((run.path / "spec.json").read_text())["seed"] == spec.seed
        assert not (run.path / "claim.json").exists() and not (run.path / "failed.json").exists()
        local = RunDir(run_experiment(spec, tmp_path / "local", device="cpu").path)
        for level in (0, 1):
            assert run.level(level).mask() == local.level(level).mask()
            a, b = run.level(level).weights("final"), local.level(level).weights("final")
            assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # the finished level shipped to the task was resumed from: the driver's file was not rewritten
    after = (started.level(0).path / "metrics.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # one dense network per seed, stored on the driver; the run waiting for it copied it (same train_time)
    assert sorted(p.name for p in (out / "dense").iterdir()) == sorted({dense_store(out, s).path.name for s in specs})
    for leader, follower in ((specs[0], specs[2]), (specs[1], specs[3])):  # (magnitude, random) of one seed
        a, b = RunDir(out / leader.run_id()).level(0), RunDir(out / follower.run_id()).level(0)
        own = {"method_key", "criterion", "rounds"}  # what ran is each run's own; the measured level is shared
        assert {k: v for k, v in a.metrics().items() if k not in own} == {
            k: v for k, v in b.metrics().items() if k not in own
        }
        assert all(torch.equal(a.weights("final")[k], b.weights("final")[k]) for k in a.weights("final"))
