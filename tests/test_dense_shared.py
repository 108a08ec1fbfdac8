"""The dense baseline (level 0) is trained once per key and shared by every run that needs it, with the
same integrity checks as the shared initial weights."""

import json
from pathlib import Path

import pytest
import torch

import ticketlab.experiment.lockstep as lockstep
import ticketlab.methods.context as context
from ticketlab.config import ExperimentSpec
from ticketlab.experiment.dense import dense_key, dense_store
from ticketlab.experiment.lockstep import run_experiments
from ticketlab.experiment.run import run_experiment
from ticketlab.files import load_tensors
from ticketlab.methods import METHODS
from ticketlab.store import RunDir

BASE = dict(
    model="mlp:784-16-10",
    dataset="synthetic",
    val_size=200,
    recipe={"steps": "20it", "eval_every": "10it"},
    densities=(0.5,),
)
UPFRONT = [
    {"name": "oneshot", "criterion": "magnitude"},
    {"name": "oneshot", "criterion": "snip"},
    {"name": "oneshot", "criterion": "random"},
    {"name": "multishot", "criterion": "synflow", "rounds": 3},
]


def spec(method, **kw) -> ExperimentSpec:
    return ExperimentSpec.model_validate({**BASE, "method": method, **kw})


@pytest.fixture
def trained(monkeypatch):
    """Counts the networks trained: ``[(start_step, density of the mask), ...]`` per model trained."""
    seen: list[tuple[int, float]] = []

    def count_one(real):
        def wrapper(model, data, recipe, *, mask, **kw):
            seen.append((kw.get("start_step", 0), mask.density()))
            return real(model, data, recipe, mask=mask, **kw)

        return wrapper

    def count_many(real):
        def wrapper(models, data, recipe, *, masks, **kw):
            seen.extend((kw.get("start_step", 0), m.density()) for m in masks)
            return real(models, data, recipe, masks=masks, **kw)

        return wrapper

    monkeypatch.setattr(lockstep, "train", count_one(lockstep.train))
    monkeypatch.setattr(lockstep, "train_many", count_many(lockstep.train_many))
    monkeypatch.setattr(context, "train", count_one(context.train))
    return seen


def dense(seen):
    return [s for s in seen if s == (0, 1.0)]


RUN_OWN = {"method_key", "criterion", "rounds"}


def same_files(a: Path, b: Path) -> None:
    """Same files with the same content (tensor files compared by tensors: their metadata order varies)."""
    names = sorted(p.name for p in a.iterdir() if p.name != "key.txt")
    assert names == sorted(p.name for p in b.iterdir() if p.name != "key.txt")
    for name in names:
        if name.endswith(".safetensors"):
            x, y = load_tensors(a / name), load_tensors(b / name)
            assert x[1] == y[1] and sorted(x[0]) == sorted(y[0]) and all(torch.equal(x[0][k], y[0][k]) for k in x[0])
        else:  # what ran (method, criterion, rounds) is each run's own; the measured level is shared
            x, y = json.loads((a / name).read_text()), json.loads((b / name).read_text())
            if name == "metrics.json":
                x, y = ({k: v for k, v in d.items() if k not in RUN_OWN} for d in (x, y))
                for d in (x, y):  # so is the time its own files took to write
                    d.get("time_s", {}).pop("write", None)
            assert x == y, name


def test_a_grid_of_4_upfront_methods_x_3_seeds_trains_3_dense_networks(tmp_path, trained):
    specs = [spec(m, seed=s) for s in range(3) for m in UPFRONT]
    results = run_experiments(specs, tmp_path, device="cpu")
    assert len(dense(trained)) == 3 and len(trained) == 3 + 12  # one dense per seed, then one level each
    for s, result in zip(specs, results):
        shared = dense_store(tmp_path, s)
        assert shared is not None and shared.done
        assert (shared.path / "key.txt").read_text() == dense_key(s)
        same_files(RunDir(result.path).level(0).path, shared.path)
    assert len(list((tmp_path / "dense").iterdir())) == 3
    # the shared level is the one a run computes alone (stacked vs single: equal to float tolerance)
    alone = RunDir(run_experiment(specs[5], tmp_path / "alone", device="cpu").path)
    a, b = RunDir(results[5].path).level(0).weights("final"), alone.level(0).weights("final")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_a_later_run_copies_the_stored_dense_level_instead_of_training(tmp_path, trained):
    first = run_experiment(spec(UPFRONT[0]), tmp_path, device="cpu")
    assert len(dense(trained)) == 1
    second = run_experiment(spec({"name": "supermask", "options": {"thresholds": [0.0]}}), tmp_path, device="cpu")
    assert len(dense(trained)) == 1  # supermask's level 0 is the upfront one: copied
    same_files(RunDir(first.path).level(0).path, RunDir(second.path).level(0).path)
    run_experiment(spec(UPFRONT[0], seed=1), tmp_path, device="cpu")
    run_experiment(spec(UPFRONT[0], recipe={"steps": "20it", "eval_every": "10it", "lr": 0.05}), tmp_path, device="cpu")
    assert len(dense(trained)) == 3  # another seed, another recipe: their own dense networks


def test_a_run_from_before_sharing_publishes_its_dense_level_on_resume(tmp_path, trained):
    first = run_experiment(spec(UPFRONT[0]), tmp_path, device="cpu")
    shared = dense_store(tmp_path, spec(UPFRONT[0]))
    import shutil

    shutil.rmtree(shared.path)
    (first.path / "done.json").unlink()
    run_experiment(spec(UPFRONT[0]), tmp_path, device="cpu")  # resumes: level 0 read back and published
    assert shared.done and len(dense(trained)) == 1


def test_iterative_rewind_points_are_part_of_the_key(tmp_path, trained):
    lottery = spec({"name": "lottery", "K": 0.5})
    assert dense_key(lottery) == dense_key(spec({"name": "lottery", "K": 0.8, "criterion": "snip"}))
    assert dense_key(lottery) == dense_key(spec({"name": "gimp"}))
    assert dense_key(lottery) == dense_key(spec({"name": "double_pruning", "options": {"regrow": 0.1}}))
    keys = {
        dense_key(s)
        for s in (
            lottery,
            spec({"name": "finetune"}),
            spec({"name": "sgimp:50%"}),
            spec({"name": "late_rewind:5it"}),
            spec({"name": "lottery", "rewind_params": "5it"}),
            spec({"name": "lottery", "train": "10it"}),
            spec(UPFRONT[0]),
            spec({"name": "tom"}),
            spec({"name": "tom", "options": {"pretrain": 0.2}}),
            spec({"name": "scored_pruning", "options": {"base": "finetune"}}),
        )
    }
    assert len(keys) == 9  # scored_pruning on finetune = finetune; all others differ
    # every field that changes the dense network changes the key; densities and controls do not
    for change in (
        {"seed": 1},
        {"init": "xavier"},
        {"val_size": 100},
        {"split_seed": 1},
        {"dropout": 0.1},
        {"end_on_best": True},
        {"exempt": ("0.weight",)},
        {"model": "mlp:784-8-10"},
        {"init": "saw:snip"},
    ):
        assert dense_key(spec(UPFRONT[0], **change)) != dense_key(spec(UPFRONT[0])), change
    assert dense_key(spec(UPFRONT[0], densities=(0.1, 0.2), controls=("reinit",))) == dense_key(spec(UPFRONT[0]))
    saw = spec({"name": "multishot", "criterion": "synflow", "rounds": 3}, init="saw:snip")
    assert dense_key(saw) != dense_key(
        spec({"name": "multishot", "criterion": "synflow", "rounds": 3, "pruning_batches": 2}, init="saw:snip")
    )

    # lottery keeps its rewind snapshot at step 0 (the init), finetune at the end: never mixed up
    fine = RunDir(run_experiment(spec({"name": "finetune", "K": 0.5}), tmp_path, device="cpu").path)
    lot = RunDir(run_experiment(lottery, tmp_path, device="cpu").path)
    assert len(dense(trained)) == 2
    init = lot.level(0).weights("start")
    assert all(torch.equal(lot.level(0).weights("rewind")[k], init[k]) for k in init)
    fin = fine.level(0).weights("final")
    assert all(torch.equal(fine.level(0).weights("rewind")[k], fin[k]) for k in fin)


def test_a_method_not_known_to_share_keeps_its_own_dense_level(tmp_path):
    METHODS.register("private_test_method")(lambda job: None)
    try:
        s = spec({"name": "private_test_method"})
        assert dense_key(s) is None and dense_store(tmp_path, s) is None
    finally:
        METHODS._entries.pop("private_test_method", None)


def test_a_damaged_shared_entry_is_not_used(tmp_path, trained):
    run_experiment(spec(UPFRONT[0]), tmp_path, device="cpu")
    shared = dense_store(tmp_path, spec(UPFRONT[0]))
    data = bytearray((shared.path / "final.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (shared.path / "final.safetensors").write_bytes(bytes(data))
    other = run_experiment(spec(UPFRONT[1]), tmp_path, device="cpu")
    assert len(dense(trained)) == 2  # trained again, not copied
    RunDir(other.path).level(0).weights("final")  # and its own copy is sound
    (shared.path / "key.txt").write_text("another key")
    run_experiment(spec(UPFRONT[2]), tmp_path, device="cpu")
    assert len(dense(trained)) == 3
