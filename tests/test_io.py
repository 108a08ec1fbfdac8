"""Tensor files: checksummed round trip for every state a model can have, damaged files rejected."""

import pytest
import torch

from ticketlab.config.recipe import Recipe
from ticketlab.config.spec import ExperimentSpec, MethodSpec
from ticketlab.experiment.run import run_experiment
from ticketlab.files import CorruptFileError, load_tensors, save_tensors


def states():
    return {
        "w": torch.randn(3, 4),
        "num_batches_tracked": torch.tensor(7),  # 0-dim long: BatchNorm's counter
        "half": torch.randn(5).to(torch.bfloat16),
        "mask": torch.rand(2, 2) > 0.5,
        "empty": torch.zeros(0, 3),
    }


def test_round_trip_keeps_values_dtypes_and_metadata(tmp_path):
    tensors = states()
    save_tensors(tmp_path / "s.safetensors", tensors, {"kind": "test"})
    loaded, meta = load_tensors(tmp_path / "s.safetensors")
    assert meta == {"kind": "test"}
    assert loaded.keys() == tensors.keys()
    for k in tensors:
        assert loaded[k].dtype == tensors[k].dtype and torch.equal(loaded[k], tensors[k]), k


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_file_is_rejected(tmp_path, damage):
    path = save_tensors(tmp_path / "s.safetensors", states())
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-3] ^= 0xFF  # inside the last tensor's bytes: still parses, checksum differs
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError):
        load_tensors(path)


def test_a_batchnorm_model_runs_through_the_experiment_store(tmp_path):
    """ResNet-20 (BatchNorm counters are 0-dim tensors) initialised, pruned, trained and stored."""
    spec = ExperimentSpec(
        model="resnet20",
        dataset="synthetic",
        val_size=100,
        recipe=Recipe(steps="4it", batch_size=16, lr=0.05, momentum=0.9, eval_every="4it"),
        method=MethodSpec(name="lottery", K=0.5),
        densities=(0.5,),
    )
    result = run_experiment(spec, tmp_path, device="cpu")
    assert [r["level"] for r in result.rows] == [0, 1]
    again = run_experiment(spec, tmp_path, device="cpu")  # read back from the checksummed files
    assert again.rows[1]["test_acc"] == result.rows[1]["test_acc"]


def _strict(text: str):
    import json

    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=reject)


def test_json_files_are_strict_json_with_nan_as_null(tmp_path):
    from ticketlab.files import atomic_write_json

    path = atomic_write_json(
        tmp_path / "m.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": (2, -float("inf"))}
    )
    assert _strict(path.read_text()) == {"a": None, "b": [1.0, None], "c": [2, None]}


def test_every_json_a_run_writes_parses_strictly(tmp_path):
    # the first evaluation of a level has no training loss yet (NaN in memory)
    spec = ExperimentSpec(
        model="mlp:784-16-10",
        dataset="synthetic",
        val_size=200,
        densities=(0.8,),
        recipe=Recipe(steps="10it", batch_size=50, eval_every="5it"),
        method=MethodSpec(name="lottery"),
    )
    run = run_experiment(spec, tmp_path, device="cpu")
    files = list(run.path.rglob("*.json"))
    assert files
    for f in files:
        _strict(f.read_text())
