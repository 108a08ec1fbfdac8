"""Results table (load_results, `ticketlab results` CSV/parquet) and TensorBoard curves."""

import json

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import ticketlab
from ticketlab.analysis.tensorboard import export_tensorboard
from ticketlab.cli import app
from ticketlab.cli import common as cli_common
from ticketlab.config.spec import ExperimentSpec
from ticketlab.experiment.run import run_experiment
from ticketlab.store import RunDir

cli_common.console.width = cli_common.err.width = 200
runner = CliRunner()


def spec(**kw):
    base = dict(
        model="mlp:784-16-10",
        dataset="synthetic",
        val_size=200,
        densities=(0.5,),
        recipe={"steps": "30it", "eval_every": "10it"},
        method={"name": "oneshot", "criterion": "magnitude"},
    )
    return ExperimentSpec.model_validate({**base, **kw})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    a = run_experiment(spec(controls=("reinit",)), root, device="cpu")
    b = run_experiment(
        spec(seed=1, method={"name": "oneshot", "criterion": "snip", "scope": "layerwise"}), root, device="cpu"
    )
    return root, a, b


def test_load_results_is_one_row_per_run_level_control_with_flat_spec_fields(runs):
    root, a, b = runs
    frame = ticketlab.load_results(root)
    assert len(frame) == len(a.rows) + len(b.rows) == 3 + 2  # levels 0, 1 (+ reinit of level 1) and 0, 1
    assert frame["run_id"].nunique() == 2 and frame["run_finished"].all()
    for col in (
        "method.name",
        "method.criterion",
        "method.scope",
        "recipe.lr",
        "recipe.steps",
        "seed",
        "model",
        "method",
    ):
        assert col in frame
    row = frame[(frame.run_id == b.path.name) & (frame.level == 1)].iloc[0]
    assert (row["method.criterion"], row["method.scope"], row["seed"], row["recipe.steps"]) == (
        "snip",
        "layerwise",
        1,
        "30it",
    )
    metrics = RunDir(b.path).level(1).metrics()
    for key in ("density", "test_acc", "val_acc", "test_loss", "val_loss", "early_stop_step", "winning"):
        assert row[key] == metrics[key]
    assert row["wall_time"] == pytest.approx(metrics["train_time"] + metrics["score_time"])
    assert row["layer_densities"] == RunDir(b.path).level(1).mask().layer_densities()
    assert set(frame[frame.run_id == a.path.name]["control"]) == {"ticket", "reinit"}


def test_cli_results_writes_csv_and_parquet_that_read_back(runs, tmp_path):
    root, _a, _b = runs
    args = ["results", str(root), "--csv", str(tmp_path / "r.csv")]
    has_parquet = True
    try:
        import pyarrow  # noqa: F401

        args += ["--parquet", str(tmp_path / "r.parquet")]
    except ImportError:
        has_parquet = False
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "2 runs, 5 levels" in result.output and "snip" in result.output
    frame = ticketlab.load_results(root)
    csv = pd.read_csv(tmp_path / "r.csv")
    assert len(csv) == len(frame) and list(csv.columns) == list(frame.columns)
    assert [json.loads(v) for v in csv["layer_densities"]] == list(frame["layer_densities"])
    assert list(csv["test_acc"]) == list(frame["test_acc"])
    if has_parquet:
        parquet = pd.read_parquet(tmp_path / "r.parquet")
        assert list(parquet["run_id"]) == list(frame["run_id"]) and list(parquet["val_loss"]) == list(frame["val_loss"])


def test_cli_results_on_an_empty_folder_is_one_line(tmp_path):
    result = runner.invoke(app, ["results", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 2 and "no finished level" in result.output


def _scalars(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_curves_equal_the_stored_history(runs):
    _root, a, _ = runs
    written = export_tensorboard(a.path)
    assert {p.name for p in written} == {"level_00", "level_01", "level_01_reinit"}
    assert export_tensorboard(a.path) == []  # exported once
    for name, level, control in (("level_01", 1, None), ("level_01_reinit", 1, "reinit")):
        history = RunDir(a.path).level(level, control).metrics()["history"]
        curves = _scalars(a.path / "tensorboard" / name)
        assert [s for s, _ in curves["val/acc"]] == [h["step"] for h in history] == [0, 10, 20, 30]
        assert [v for _, v in curves["test/loss"]] == pytest.approx([h["test_loss"] for h in history])
        assert len(curves["train/loss"]) == len(history) - 1  # no training loss before the first step
    summary = _scalars(a.path / "tensorboard" / "levels")
    assert [s for s, _ in summary["ticket/test_acc"]] == [0, 1]


def test_cli_run_with_tensorboard_flag(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec().model_dump(mode="json")))
    result = runner.invoke(
        app,
        ["run", str(path), "--out", str(tmp_path / "runs"), "--device", "cpu", "--tensorboard"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    run_path = tmp_path / "runs" / spec().run_id()
    assert _scalars(run_path / "tensorboard" / "level_01")["val/acc"]
