"""Where a level's seconds go (``time_s`` in each level's metrics.json: train, evaluate, score, write), checked
with a fake clock and as invariants between the recorded fields; no timing is asserted."""

import json

import pytest

from ticketlab.config import ExperimentSpec, MethodSpec, Recipe
from ticketlab.experiment import run_experiment
from ticketlab.experiment.lockstep import run_experiments
from ticketlab.masks import Mask
from ticketlab.models import build_model
from ticketlab.store import LevelDir
from ticketlab.training import core
from ticketlab.training.loop import train

RECIPE = Recipe(steps="20it", batch_size=50, lr=0.05, eval_every="10it")


class Clock:
    """``time.perf_counter`` that advances by 1 at each call."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 1.0
        return self.now


def test_fit_splits_its_wall_time_into_training_and_evaluation(monkeypatch, synthetic):
    # one clock read at the start and the end, two around each of the 3 evaluations (steps 0, 10, 20):
    # wall = 8 - 1 = 7, of which 3 evaluating
    monkeypatch.setattr(core, "time", Clock())
    model = build_model("mlp:784-16-10")
    result = train(model, synthetic, RECIPE, seed=0)
    assert len(result.history) == 3
    assert result.wall_time == 7.0 and result.eval_time == 3.0 and result.stacked == 1


def test_each_level_records_its_phases(tmp_path, synthetic):
    spec = ExperimentSpec(
        model="mlp:784-16-10",
        dataset="synthetic",
        val_size=200,
        recipe=RECIPE,
        densities=(0.5,),
        controls=("reinit",),
        method=MethodSpec(name="lottery", K=0.5),
    )
    run_experiment(spec, tmp_path)
    files = sorted((tmp_path / spec.run_id()).glob("level_*/**/metrics.json"))
    assert len(files) == 3  # dense, the ticket, its control
    for path in files:
        row = json.loads(path.read_text())
        phases = row["time_s"]
        assert set(phases) == {"train", "evaluate", "score", "write"}
        assert all(v >= 0 for v in phases.values())
        assert phases["train"] + phases["evaluate"] == pytest.approx(row["train_time"])
        assert phases["score"] == row["score_time"] and phases["write"] > 0
        assert row["stacked"] == 1
    ticket = json.loads((tmp_path / spec.run_id() / "level_01" / "metrics.json").read_text())
    assert ticket["time_s"]["score"] > 0  # IMP scored the dense weights to find this mask


def test_stacked_levels_record_the_stack_and_share_its_time(tmp_path):
    specs = [
        ExperimentSpec(
            model="mlp:784-16-10",
            dataset="synthetic",
            val_size=200,
            recipe=RECIPE,
            densities=(0.5,),
            method=MethodSpec(name="lottery", K=0.5),
            seed=s,
        )
        for s in (0, 1)
    ]
    run_experiments(specs, tmp_path)
    rows = [json.loads((tmp_path / s.run_id() / "level_01" / "metrics.json").read_text()) for s in specs]
    assert [r["stacked"] for r in rows] == [2, 2]
    assert rows[0]["time_s"]["train"] == rows[1]["time_s"]["train"]  # the stack's time, split evenly


def test_level_write_times_itself_only_when_asked(tmp_path):
    model = build_model("mlp:784-16-10")
    mask = Mask.ones(model)
    weights = {"final": {k: v.clone() for k, v in model.state_dict().items()}}
    plain = {"level": 0, "time_s": {"write": 0.0}}
    LevelDir(tmp_path / "a").write(mask, weights, plain)
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["time_s"]["write"] == 0.0
    import time

    timed = {"level": 0, "time_s": {"write": 0.0}}
    LevelDir(tmp_path / "b").write(mask, weights, timed, timed_from=time.perf_counter())
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["time_s"]["write"] > 0
