"""Tune: Optuna over any spec field (templates included), successive-halving pruning, trials in the run store."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from ticketlab.cli import app
from ticketlab.cli import common as cli_common
from ticketlab.store import RunDir
from ticketlab.sweep.tune import Distribution, TuneSpec, tune

cli_common.console.width = cli_common.err.width = 200

# the layer-size search baseline of 004 §3.6: dense MLPs 784-h-10, h searched
BASE = {
    "model": "mlp:784-{h}-10",
    "dataset": "synthetic",
    "val_size": 200,
    "recipe": {"steps": "60it", "eval_every": "10it", "lr": "{lr}"},
    "densities": [1.0],
}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"int": [8, 64], "choice": [1]}, "exactly one"),
        ({"float": [1.0, 0.1]}, "above high"),
        ({"float": [0.0, 1.0], "log": True}, "log needs"),
        ({"choice": []}, "at least one"),
    ],
)
def test_bad_distributions_are_rejected(data, message):
    with pytest.raises(ValueError, match=message):
        Distribution.model_validate(data)


def test_bad_search_field_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="recipe.lrr"):
        tune(
            TuneSpec(
                base={**BASE, "recipe": {"steps": "60it"}}, search={"recipe.lrr": {"float": [0.1, 0.2]}}, trials=1
            ),
            out=tmp_path,
        )


def test_layer_size_search_prunes_weak_trials_and_reuses_finished_ones(tmp_path):
    spec = TuneSpec(
        base=BASE,
        search={"h": {"int": [8, 64]}, "lr": {"choice": [0.3, 0.0001]}},
        trials=8,
        seed=1,
    )
    result = tune(spec, out=tmp_path)
    assert len(result.trials) == 8
    states = {t.state for t in result.trials}
    assert states <= {"complete", "pruned"} and "pruned" in states and "complete" in states
    full = 60 // 10 + 1  # evaluations of a whole run (step 0 included)
    for t in result.trials:
        saved = json.loads((tmp_path / t.run_id / "spec.json").read_text())
        assert saved["model"] == f"mlp:784-{t.params['h']}-10" and saved["recipe"]["lr"] == t.params["lr"]
        run = RunDir(tmp_path / t.run_id)
        if t.state == "complete":
            assert run.finished and t.evaluations == full
            assert t.value == pytest.approx(run.level(0).metrics()["val_acc"])  # objective = last level's val acc
        else:
            assert not run.finished and t.evaluations < full
    # the tiny learning rate cannot learn in 60 steps: it is what the pruner stopped, and never the best
    assert result.best.params["lr"] == 0.3
    assert result.best.value == max(t.value for t in result.trials if t.state == "complete")
    weak = [t for t in result.trials if t.params["lr"] == 0.0001]
    assert weak and all(t.state == "pruned" for t in weak[1:])  # the first has nothing to be compared with

    # rerun: same sampler seed, same trials; finished ones are read back, not trained again
    stamps = {
        t.run_id: (tmp_path / t.run_id / "level_00" / "metrics.json").stat().st_mtime_ns
        for t in result.trials
        if t.state == "complete"
    }
    again = tune(spec, out=tmp_path)
    for t in again.trials:
        if t.run_id in stamps:
            assert (tmp_path / t.run_id / "level_00" / "metrics.json").stat().st_mtime_ns == stamps[t.run_id]
            assert t.evaluations == full  # read back: its levels' evaluations, as when it trained
    assert again.best.value == result.best.value


def test_cli_tune_prints_trials_and_best(tmp_path):
    path = tmp_path / "tune.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": {**BASE, "recipe": {"steps": "20it", "eval_every": "10it"}},
                "search": {"h": {"choice": [8, 16]}},
                "trials": 3,
                "pruner": "none",
                "out": str(tmp_path / "runs"),
            }
        )
    )
    result = CliRunner().invoke(app, ["tune", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "best: trial" in result.output and "val_acc" in result.output
    assert "stopped after 2 of 3 trials: every one of the 2 points of the search space was tried" in result.output


def test_distribution_sizes():
    assert Distribution.model_validate({"int": [8, 64]}).size() == 57
    assert Distribution.model_validate({"int": [8, 64], "step": 8}).size() == 8
    assert Distribution.model_validate({"float": [0.1, 0.5], "step": 0.1}).size() == 5
    assert Distribution.model_validate({"float": [0.1, 0.5]}).size() == float("inf")
    assert Distribution.model_validate({"choice": ["a", "b", "a"]}).size() == 2


def test_a_small_space_is_tried_once_per_point_and_the_study_stops_when_it_is_exhausted(tmp_path):
    # 2 x 2 points, 10 trials asked: every point trained once, repeats answered from the earlier trial
    spec = TuneSpec(
        base={**BASE, "recipe": {"steps": "10it", "eval_every": "10it", "lr": "{lr}"}},
        search={"h": {"choice": [8, 16]}, "lr": {"choice": [0.3, 0.1]}},
        trials=10,
        pruner="none",
    )
    result = tune(spec, out=tmp_path)
    points = [(t.params["h"], t.params["lr"]) for t in result.trials]
    assert sorted(points) == [(8, 0.1), (8, 0.3), (16, 0.1), (16, 0.3)]
    assert all(t.state == "complete" for t in result.trials)
    assert "every one of the 4 points" in result.stopped
    runs = sorted(p.name for p in tmp_path.iterdir() if (p / "spec.json").exists())
    assert runs == sorted(t.run_id for t in result.trials)  # one run per point: no repeat was trained


def test_a_sampler_stuck_on_tried_points_stops_the_study(tmp_path, monkeypatch):
    import ticketlab.sweep.tune as tune_module

    monkeypatch.setattr(tune_module, "REPEAT_LIMIT", 3)
    monkeypatch.setattr(Distribution, "suggest", lambda self, trial, name: trial.suggest_float(name, 0.2, 0.2))
    spec = TuneSpec(
        base={**BASE, "model": "mlp:784-8-10", "recipe": {"steps": "10it", "eval_every": "10it", "lr": "{lr}"}},
        search={"lr": {"float": [0.1, 0.3]}},
        trials=5,
        pruner="none",
    )
    result = tune(spec, out=tmp_path)
    assert [t.params for t in result.trials] == [{"lr": 0.2}]
    assert result.repeats == 3 and "3 times in a row" in result.stopped
