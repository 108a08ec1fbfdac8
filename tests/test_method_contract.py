"""The contract every method keeps, parametrized over ``METHODS.names()`` (plus the criterion shorthand), so a
new method is tested for free: its run finishes, every level keeps exactly round(density * N) weights and
reaches the spec's target, pruned weights are zero in every saved ``final.safetensors``, and a second run
of the same spec gives the same masks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ticketlab.config import ExperimentSpec, MethodSpec, Recipe
from ticketlab.experiment import run_experiment
from ticketlab.files import load_tensors
from ticketlab.masks import Mask
from ticketlab.methods import METHODS
from ticketlab.store import RunDir

MODEL = "mlp:784-16-10"
RECIPE = Recipe(steps="6it", batch_size=50, lr=0.05, eval_every="6it")
N = 784 * 16 + 16 * 10  # prunable weights of the model (biases are not pruned)
TARGET = 0.49  # K = 0.7: levels 1.0 -> 0.7 -> 0.49, and 0.49 * N is not a whole number of weights

# The smallest valid MethodSpec fields of every method: an argument or options where it needs them, {}
# where its defaults run. A new method needs an entry here (test_every_method_has_an_entry).
SMALLEST: dict[str, dict] = {
    "double_pruning": {},
    "edge_popup": {"options": {"steps": "4it"}},
    "finetune": {},
    "force": {"options": {"steps": 3}},
    "gem_miner": {"options": {"steps": "4it", "period": "2it"}},
    "gimp": {},
    "iter_snip": {"options": {"steps": 3}},
    "late_rewind": {"name": "late_rewind:2it"},  # the rewind step is required
    "lottery": {},
    "lr_rewind": {},
    "multishot": {"criterion": "magnitude", "rounds": 2},  # upfront methods need a criterion
    "oneshot": {"criterion": "magnitude"},
    "scored_pruning": {"options": {"regrow_every": "3it"}},  # default 1ep: no regrowth inside 6 steps
    "sgimp": {},
    "supermask": {},
    "tom": {"options": {"mask_steps": "4it"}},
}
SHORTHAND = "snip"  # a criterion as the method: one-shot SNIP
CASES = [*METHODS.names(), SHORTHAND]


def spec_of(name: str) -> ExperimentSpec:
    assert name == SHORTHAND or name in SMALLEST, f"add method {name!r} to SMALLEST in {Path(__file__).name}"
    fields = {"name": name, "K": 0.7, **SMALLEST.get(name, {})}
    return ExperimentSpec(
        model=MODEL,
        dataset="synthetic",
        val_size=100,
        recipe=RECIPE,
        densities=(TARGET,),
        method=MethodSpec(**fields),
    )


def level_dirs(run: Path) -> list[Path]:
    """Every level and control directory that holds a mask."""
    return sorted(p.parent for p in run.glob("level_*/**/mask.safetensors"))


def test_every_method_has_an_entry():
    assert sorted(SMALLEST) == METHODS.names()
    assert SHORTHAND not in METHODS


@pytest.mark.parametrize("name", CASES)
def test_method_contract(name, tmp_path):
    spec = spec_of(name)
    result = run_experiment(spec, tmp_path / "a", device="cpu")
    assert result.rows and RunDir(result.path).finished

    # every level and control keeps exactly round(target density * N) weights, and the target is reached
    for row in result.rows:
        where = f"level {row['level']} {row['control'] or 'ticket'}"
        mask = Mask.load(result.path / f"level_{row['level']:02d}" / row["control"] / "mask.safetensors")
        kept = sum(int(m.sum()) for m in mask.values())
        assert row["total"] == N and kept == row["kept"] == round(row["target_density"] * N), where
        assert row["density"] == kept / N, where
    reached = [row for row in result.rows if row["target_density"] == TARGET]
    assert reached and all(row["kept"] == round(TARGET * N) for row in reached)

    # pruned weights are exactly zero in every final.safetensors written beside a mask
    finals = [d for d in level_dirs(result.path) if (d / "final.safetensors").exists()]
    assert finals, "no level saved final weights"
    for level in finals:
        mask = Mask.load(level / "mask.safetensors")
        final, _ = load_tensors(level / "final.safetensors")
        for param, keep in mask.items():
            assert not final[param][~keep].any(), f"{level.relative_to(result.path)}: {param} has pruned weights != 0"

    # determinism: the same spec in a fresh root (initial weights drawn again) gives the same masks
    again = run_experiment(spec, tmp_path / "b", device="cpu")
    first, second = level_dirs(result.path), level_dirs(again.path)
    assert [d.relative_to(result.path) for d in first] == [d.relative_to(again.path) for d in second]
    for a, b in zip(first, second):
        mask_a, mask_b = Mask.load(a / "mask.safetensors"), Mask.load(b / "mask.safetensors")
        assert sorted(mask_a) == sorted(mask_b)
        for param in mask_a:
            assert torch.equal(mask_a[param], mask_b[param]), f"{a.relative_to(result.path)}: {param} differs"


TIMING = {"train_time", "score_time", "time_s", "env", "mask_seconds", "history"}


def _comparable(row: dict) -> dict:
    out = {k: v for k, v in row.items() if k not in TIMING and not k.endswith("_seconds")}
    out["history"] = [{k: v for k, v in h.items() if "time" not in k} for h in row.get("history") or []]
    return out


@pytest.mark.parametrize("name", CASES)
def test_method_pauses_and_resumes_to_the_uninterrupted_run(name, tmp_path):
    """A run paused before every level it would compute (``budget=1``, as a sweep splits a run between
    workers) and resumed each time writes what an uninterrupted run writes: the same levels, masks, final
    weights and metrics (timings aside)."""
    from ticketlab.methods.context import Paused

    spec = spec_of(name)
    whole = run_experiment(spec, tmp_path / "whole", device="cpu")
    pauses = 0
    for _ in range(50):
        try:
            split = run_experiment(spec, tmp_path / "split", device="cpu", budget=1)
            break
        except Paused as paused:
            assert paused.computed == 1
            pauses += 1
    else:
        pytest.fail("the run never finished")
    assert pauses == len(RunDir(split.path).levels()) - 1  # one level per call
    a, b = level_dirs(whole.path), level_dirs(split.path)
    assert [d.relative_to(whole.path) for d in a] == [d.relative_to(split.path) for d in b]
    for x, y in zip(a, b):
        where = str(x.relative_to(whole.path))
        assert Mask.load(x / "mask.safetensors") == Mask.load(y / "mask.safetensors"), where
        if (x / "final.safetensors").exists():
            fx, _ = load_tensors(x / "final.safetensors")
            fy, _ = load_tensors(y / "final.safetensors")
            assert all(torch.equal(fx[k], fy[k]) for k in fx), where
        rows = [_comparable(json.loads((d / "metrics.json").read_text())) for d in (x, y)]
        assert rows[0] == rows[1], where
