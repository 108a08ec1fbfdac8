"""Run directories as bytes between machines: bundled, verified, installed atomically in order."""

import json

import pytest
import torch

from ticketlab.files import CorruptFileError, atomic_write_json, save_tensors
from ticketlab.store import RunDir
from ticketlab.sweep.transfer import bundle, check, install, sha256


def make_run(root, name="run1"):
    run = root / name
    save_tensors(run / "level_00" / "final.safetensors", {"w": torch.arange(6.0)})
    atomic_write_json(run / "level_00" / "metrics.json", {"level": 0})
    atomic_write_json(run / "spec.json", {"seed": 0})
    atomic_write_json(run / "done.json", {"levels": 1})
    (run / "claim.json").write_text("{}")
    (run / "level_00" / ".final.safetensors.abc.tmp").write_bytes(b"half")
    save_tensors(root / "inits" / "mlp-seed0-aa.safetensors", {"w": torch.ones(3)})
    return run


def test_a_bundle_round_trips_and_leaves_out_claims_and_temporary_files(tmp_path):
    make_run(tmp_path / "a")
    files = bundle(tmp_path / "a", ["run1", "inits/mlp-seed0-aa.safetensors", "missing"])
    assert sorted(files) == [
        "inits/mlp-seed0-aa.safetensors",
        "run1/done.json",
        "run1/level_00/final.safetensors",
        "run1/level_00/metrics.json",
        "run1/spec.json",
    ]
    assert all(digest == sha256(data) for digest, data in files.values())
    written = install(tmp_path / "b", files)
    assert sorted(written) == sorted(files)
    run = RunDir(tmp_path / "b" / "run1")
    assert run.finished and run.level(0).done and torch.equal(run.level(0).weights()["w"], torch.arange(6.0))
    # what the other side has already is not sent again
    assert bundle(tmp_path / "b", ["run1"], unchanged=files) == {}


def test_done_json_is_written_last_and_metrics_after_the_tensors(tmp_path, monkeypatch):
    import ticketlab.sweep.transfer as transfer

    make_run(tmp_path / "a")
    order = []
    real = transfer.atomic_write_bytes
    monkeypatch.setattr(transfer, "atomic_write_bytes", lambda path, data: order.append(path.name) or real(path, data))
    install(tmp_path / "b", bundle(tmp_path / "a", ["run1"]))
    assert order[-1] == "done.json" and order[-2] == "metrics.json"
    assert order.index("final.safetensors") < order.index("metrics.json")


@pytest.mark.parametrize("damage", ["bytes", "tensor", "path"])
def test_damaged_or_unsafe_files_are_refused_before_anything_is_written(tmp_path, damage):
    make_run(tmp_path / "a")
    files = bundle(tmp_path / "a", ["run1"])
    rel = "run1/level_00/final.safetensors"
    digest, data = files[rel]
    broken = bytearray(data)
    broken[-2] ^= 0xFF
    if damage == "bytes":  # altered on the way: no longer its sha256
        files[rel] = (digest, bytes(broken))
    elif damage == "tensor":  # altered before it was sent: the file's own checksum fails
        files[rel] = (sha256(bytes(broken)), bytes(broken))
    else:
        files["../escape.json"] = (sha256(b"{}"), b"{}")
    with pytest.raises(CorruptFileError):
        check(files)
    with pytest.raises(CorruptFileError):
        install(tmp_path / "b", files)
    assert not (tmp_path / "b").exists() and not (tmp_path / "escape.json").exists()


def test_shared_entries_are_never_overwritten_and_run_files_are(tmp_path):
    make_run(tmp_path / "a")
    files = bundle(tmp_path / "a", ["run1", "inits"])
    install(tmp_path / "b", files)
    save_tensors(tmp_path / "a" / "inits" / "mlp-seed0-aa.safetensors", {"w": torch.zeros(3)})
    atomic_write_json(tmp_path / "a" / "run1" / "spec.json", {"seed": 5})
    again = bundle(tmp_path / "a", ["run1", "inits"])
    assert sorted(install(tmp_path / "b", again)) == ["run1/spec.json"]
    assert json.loads((tmp_path / "b" / "run1" / "spec.json").read_text()) == {"seed": 5}
    # a dense entry that is complete on the receiving side is kept as it is, file by file
    dense = tmp_path / "a" / "dense" / "m-seed0-1"
    atomic_write_json(dense / "metrics.json", {"level": 0})
    (dense / "key.txt").write_text("k")
    install(tmp_path / "b", bundle(tmp_path / "a", ["dense"]))
    (dense / "key.txt").write_text("other")
    (dense / "extra.json").write_text("{}")
    assert install(tmp_path / "b", bundle(tmp_path / "a", ["dense"])) == []
    assert (tmp_path / "b" / "dense" / "m-seed0-1" / "key.txt").read_text() == "k"


def test_a_node_without_the_dataset_gets_the_drivers_files_checked(tmp_path, monkeypatch):
    from ticketlab.data import load_dataset
    from ticketlab.sweep.remote import dataset_files, ensure_data

    from data_fixtures import write_mnist

    driver = write_mnist(tmp_path / "driver" / "mnist", n_train=50, n_test=10)
    files = dataset_files("mnist", str(driver))
    assert sorted(files) == sorted(p.name for p in driver.iterdir())
    assert dataset_files("synthetic", None) is None and dataset_files("mnist", str(tmp_path / "nowhere")) is None
    monkeypatch.setenv("TICKETLAB_DATA", str(tmp_path / "node"))  # the node's empty data cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "node-cache"))
    rel = sorted(files)[0]
    damaged = dict(files)
    damaged[rel] = (files[rel][0], files[rel][1][:-1])
    with pytest.raises(CorruptFileError, match=rel):
        ensure_data("mnist", None, lambda: damaged)
    assert not (tmp_path / "node").exists()  # nothing written from a damaged copy
    fetched = []
    assert ensure_data("mnist", None, lambda: fetched.append(1) or files) and fetched == [1]
    assert sorted(p.name for p in (tmp_path / "node" / "mnist").iterdir()) == sorted(files)
    here, there = load_dataset("mnist", val_size=10), load_dataset("mnist", root=driver, val_size=10)
    assert torch.equal(here.x_train, there.x_train) and torch.equal(here.y_test, there.y_test)
    assert not ensure_data("mnist", None, lambda: fetched.append(2) or files) and fetched == [1]  # found: not fetched
