"""Sweeps: grid expansion (dotted paths, templates, dedupe, errors), local and Ray executors, skip-if-done."""

import json
import re

import pytest
import torch
import yaml
from typer.testing import CliRunner

from ticketlab.cli import app
from ticketlab.cli import common as cli_common
from ticketlab.config.duration import Duration
from ticketlab.experiment.run import run_experiment
from ticketlab.store import RunDir
from ticketlab.sweep import (
    MAX_STACK,
    SweepSpec,
    batches,
    expand,
    grid_points,
    instantiate,
    load_sweep,
    run_batch,
    run_sweep,
)

cli_common.console.width = cli_common.err.width = 200

BASE = {
    "model": "mlp:784-{h}-10",
    "dataset": "synthetic",
    "val_size": 200,
    "recipe": {"steps": "30it", "eval_every": "15it"},
    "method": {"name": "oneshot", "criterion": "magnitude"},
    "densities": [0.5],
}


def test_grid_is_the_cartesian_product_of_dotted_paths_and_templates():
    sweep = SweepSpec(base=BASE, grid={"h": [16, 32], "method.criterion": ["magnitude", "snip"], "seed": [0, 1, 2]})
    points = grid_points(sweep)
    assert len(points) == 2 * 2 * 3
    seen = {(s.model, s.method.criterion, s.seed) for _, s in points}
    assert seen == {(f"mlp:784-{h}-10", c, seed) for h in (16, 32) for c in ("magnitude", "snip") for seed in (0, 1, 2)}
    for point, spec in points:
        assert spec.model == f"mlp:784-{point['h']}-10" and spec.seed == point["seed"]
        assert str(spec.recipe.steps) == "30it" and spec.densities == (0.5,)  # base kept
    assert BASE["model"] == "mlp:784-{h}-10"  # base not mutated


def test_template_alone_keeps_the_value_type_and_nested_paths_are_created():
    base = {**BASE, "model": "mlp:784-16-10", "recipe": {"steps": "30it", "lr": "{lr}"}}
    spec = instantiate(base, {"lr": 0.05, "method.options": {}, "recipe.batch_size": 20})
    assert spec.recipe.lr == 0.05 and spec.recipe.batch_size == 20


def test_duplicate_points_are_run_once():
    # seed 0 is the default: listing it twice, or a density equal to the base's, gives the same run id
    sweep = SweepSpec(
        base={**BASE, "model": "mlp:784-16-10"}, grid={"seed": [0, 0, 1], "densities": [[0.5], [0.5, 0.5]]}
    )
    specs = expand(sweep)
    assert len(specs) == 2 and len({s.run_id() for s in specs}) == 2


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"method.name": ["lottery", "lotery"]}, "method.name='lotery'"),
        ({"recipe.lrr": [0.1]}, "recipe.lrr"),
        ({"densities": [[1.5]]}, "densities"),
    ],
)
def test_bad_grid_values_name_the_grid_key(grid, message):
    with pytest.raises(ValueError, match="grid point") as info:
        expand(SweepSpec(base={**BASE, "model": "mlp:784-16-10"}, grid=grid))
    assert message in str(info.value)


def test_batches_group_runs_sharing_an_architecture():
    sweep = SweepSpec(base=BASE, grid={"h": [16, 32], "seed": [0, 1, 2]})
    groups = batches(expand(sweep), 2)
    assert sorted(len(g) for g in groups) == [1, 1, 2, 2]
    for group in groups:
        assert len({s.model for s in group}) == 1
    # default: each architecture's runs shared evenly among the workers, at most MAX_STACK per task
    assert sorted(len(g) for g in batches(expand(sweep), None, workers=2)) == [1, 1, 2, 2]
    assert sorted(len(g) for g in batches(expand(sweep), None, workers=1)) == [3, 3]
    many = SweepSpec(base=BASE, grid={"seed": list(range(MAX_STACK + 4))})
    assert sorted(len(g) for g in batches(expand(many), None, workers=1)) == [4, MAX_STACK]
    per_model = batches(expand(SweepSpec(base=BASE, grid={"h": [16], "seed": [0, 1, 2]})), lambda spec: 1, workers=1)
    assert [len(g) for g in per_model] == [1, 1, 1]


def test_a_batch_holds_only_runs_that_can_train_stacked():
    """Runs differing in seed, criterion or density stack; a different dropout, end_on_best or learning rate
    cannot (``train_many`` shares them), so those runs go to separate batches."""
    sweep = SweepSpec(
        base={**BASE, "model": "mlp:784-16-10"},
        grid={
            "seed": [0, 1],
            "method.criterion": ["magnitude", "snip"],
            "dropout": [0.0, 0.5],
            "end_on_best": [False, True],
            "recipe.lr": [0.1, 0.05],
        },
    )
    groups = batches(expand(sweep), None, workers=1)
    assert sorted(len(g) for g in groups) == [4] * 8
    for group in groups:
        assert len({(s.dropout, s.end_on_best, s.recipe.lr) for s in group}) == 1


def _mask(root, spec, level):
    return RunDir(root / spec.run_id()).level(level).mask()


def test_local_sweep_runs_every_point_in_worker_processes_and_skips_finished(tmp_path):
    sweep = SweepSpec(
        base=BASE, grid={"h": [16], "method.criterion": ["magnitude", "snip"], "seed": [1]}, workers=2, tensorboard=True
    )
    finished = []
    report = run_sweep(sweep, out=tmp_path, on_done=finished.append)
    assert report.total == 2 and report.skipped == 0 and not report.failed and len(finished) == 2
    specs = expand(sweep)
    for spec in specs:
        assert RunDir(tmp_path / spec.run_id()).finished
        assert list((tmp_path / spec.run_id() / "tensorboard" / "level_01").glob("events.out.tfevents.*"))
    # a worker ran exactly the spec it was given: same masks as running that spec here
    ref = run_experiment(specs[1], tmp_path / "ref", device="cpu")
    assert specs[1].method.criterion == "snip" and specs[1].seed == 1
    assert _mask(tmp_path, specs[1], 1) == RunDir(ref.path).level(1).mask()
    again = run_sweep(sweep, out=tmp_path)
    assert again.outcomes == [] and again.skipped == 2


def test_cli_sweep_reports_failures_and_goes_on(tmp_path):
    sweep = {
        "base": {**BASE, "model": "mlp:784-16-10"},
        "grid": {"recipe.batch_size": [60, 5000]},  # 5000 > the 1800 training examples: fails at run time
        "workers": 2,
        "out": str(tmp_path / "runs"),
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    runner = CliRunner()
    result = runner.invoke(app, ["sweep", str(path)], catch_exceptions=False)
    assert result.exit_code == 1
    assert "failed" in result.output and "batch_size 5000 is larger than the training split" in result.output
    assert "1 runs finished, 1 failed" in result.output
    # one line per finished run (what a log file of the sweep keeps): which grid point, its time, the sweep's
    lines = [line for line in result.output.splitlines() if line.startswith("run ")]
    assert len(lines) == 2, result.output
    assert any(
        re.fullmatch(r"run [12]/2 \w{12} finished \(\d+\.\d s\) recipe\.batch_size=60 · \d:\d\d:\d\d elapsed.*", line)
        for line in lines
    )
    assert any(re.match(r"run [12]/2 \w{12} failed: .*\(recipe\.batch_size=5000\)", line) for line in lines)
    good, bad = expand(SweepSpec.model_validate(sweep))
    assert RunDir(tmp_path / "runs" / good.run_id()).finished and not RunDir(tmp_path / "runs" / bad.run_id()).finished

    sweep["grid"] = {"recipe.batch_size": [60]}
    path.write_text(yaml.safe_dump(sweep))
    result = runner.invoke(app, ["sweep", str(path)], catch_exceptions=False)
    assert result.exit_code == 0 and "nothing to do: all 1 runs" in result.output


def _cli_lottery_sweep(tmp_path, layout, density):
    """``ticketlab sweep`` of 3 lottery seeds (K = 0.5 down to ``density``) in ``layout``; the CLI's result."""
    sweep = {
        "base": {**BASE, "model": "mlp:784-16-10", "method": {"name": "lottery", "K": 0.5}, "densities": [density]},
        "grid": {"seed": [0, 1, 2]},
        "layout": layout,
        "out": str(tmp_path / "runs"),
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return CliRunner().invoke(app, ["sweep", str(path)], catch_exceptions=False)


def test_cli_sweep_time_left_follows_the_levels_on_disk(tmp_path):
    # 3 lottery runs trained in lock-step in one worker (1x1x3) end together: when the first one's line is
    # printed, every level of the sweep is on disk, so nothing is left (the runs' pace would say 2 x elapsed)
    result = _cli_lottery_sweep(tmp_path, "1x1x3", 0.25)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("run ")]
    assert len(lines) == 3, result.output
    assert all(line.endswith("elapsed, ~0:00:00 left") for line in lines[:2]), lines
    assert lines[2].endswith("elapsed"), lines


def test_cli_sweep_rejects_a_bad_grid_in_one_line(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": BASE, "grid": {"h": [16], "method.name": ["snipp"]}}))
    result = CliRunner().invoke(app, ["sweep", str(path), "--out", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 2 and "method.name='snipp'" in result.output and "Traceback" not in result.output


@pytest.mark.slow  # starting Ray takes 15-40 s on two shared cores
def test_ray_sweep_on_a_local_instance(tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # 3 runs on 2 task slots: one is cut at a level boundary, its levels travel home and back out
        sweep = SweepSpec(
            base={**BASE, "densities": [0.5, 0.25]}, grid={"h": [16], "seed": [0, 1, 2]}, executor="ray", workers=2
        )
        lines: list[str] = []
        report = run_sweep(sweep, out=tmp_path, log=lines.append)
    finally:
        ray.shutdown()
    assert len(report.outcomes) == 3 and not report.failed, report.outcomes
    assert any(re.search(r"pauses after [12] of 3 levels", line) for line in lines), lines
    for spec in expand(sweep):
        local = run_experiment(spec, tmp_path / "local", device="cpu")
        assert RunDir(tmp_path / spec.run_id()).finished
        assert _mask(tmp_path, spec, 1) == RunDir(local.path).level(1).mask()
        a = RunDir(tmp_path / spec.run_id()).level(1).weights("final")
        b = RunDir(local.path).level(1).weights("final")
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert json.loads((tmp_path / spec.run_id() / "spec.json").read_text())["seed"] == spec.seed


@pytest.mark.parametrize("command", ["sweep", "tune", "results"])
def test_help(command):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_example_sweep_and_tune_files_load():
    from pathlib import Path

    from ticketlab.sweep.tune import load_tune

    folder = Path(__file__).resolve().parents[1] / "examples" / "sweeps"
    sweep = load_sweep(folder / "methods_lenet300.yaml")
    assert len(expand(sweep)) == 5 * 3 * 3
    study = load_tune(folder / "tune_layer_size_mlp.yaml")
    assert set(study.search) == {"h", "lr"} and study.direction == "maximize"


def test_a_workers_runs_train_stacked_and_equal_runs_made_alone(tmp_path, monkeypatch):
    import ticketlab.experiment.lockstep as batched

    stacked = []
    real = batched.train_many
    monkeypatch.setattr(
        batched, "train_many", lambda models, *a, **k: stacked.append(len(models)) or real(models, *a, **k)
    )
    sweep = SweepSpec(base=BASE, grid={"h": [16], "seed": [0, 1, 2]}, workers=1)
    specs = expand(sweep)
    (work,) = batches(specs, sweep.batch, workers=1)
    outcomes = run_batch([s.model_dump(mode="json") for s in work], str(tmp_path))
    assert all(o.ok for o in outcomes) and [o.run_id for o in outcomes] == [s.run_id() for s in specs]
    assert stacked and set(stacked) == {3}
    for spec in specs:
        alone = run_experiment(spec, tmp_path / "alone", device="cpu")
        assert _mask(tmp_path, spec, 1) == RunDir(alone.path).level(1).mask()


def test_set_base_overrides_dotted_fields_for_a_reduced_run(tmp_path):
    from ticketlab.sweep import set_base

    sweep = SweepSpec(base=BASE, grid={"h": [16], "seed": [0, 1]})
    reduced = set_base(sweep, ["recipe.steps=10it", "method.K=0.5", "recipe.lr=0.05"])
    assert {str(s.recipe.steps) for s in expand(reduced)} == {str(Duration.parse("10it"))} and sweep.base["recipe"][
        "steps"
    ] == "30it"
    assert {s.method.K for s in expand(reduced)} == {0.5} and {s.recipe.lr for s in expand(reduced)} == {0.05}
    with pytest.raises(ValueError, match="grid key"):
        set_base(sweep, ["seed=3"])
    with pytest.raises(ValueError, match="key=value"):
        set_base(sweep, ["recipe.steps"])
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": BASE, "grid": {"h": [16]}}))
    result = CliRunner().invoke(
        app, ["sweep", str(path), "--out", str(tmp_path), "--set", "recipe.steps=10it", "--dry-run"]
    )
    assert result.exit_code == 0, result.output


def test_three_runs_on_two_workers_share_their_levels_and_write_what_whole_runs_write(tmp_path):
    """3 IMP runs on 2 one-thread workers: one run is cut at a level boundary (``sweep.plan.balance``), its
    head pauses and its tail resumes on the worker that frees first. Each run is reported once, finished,
    and writes exactly what the same spec writes run whole in one process."""
    base = {**BASE, "model": "mlp:784-16-10", "method": {"name": "lottery", "K": 0.5}, "densities": [0.125]}
    sweep = SweepSpec(base=base, grid={"seed": [0, 1, 2]}, layout="2x1x1")
    finished, submitted = [], []
    report = run_sweep(sweep, out=tmp_path / "split", on_done=finished.append, on_submit=submitted.append)
    specs = expand(sweep)
    assert not report.failed and len(finished) == 3 and all(o.ok and not o.paused for o in finished)
    assert sorted(o.run_id for o in finished) == sorted(s.run_id() for s in specs)
    pieces = {s.run_id(): sum(s.run_id() in batch for batch in submitted) for s in specs}
    assert sorted(pieces.values()) == [1, 1, 2] and len(submitted) == 4  # 4 levels each: cut 2 | 2
    assert not list((tmp_path / "split").glob("*/claim.json")) and not list((tmp_path / "split").glob("*/failed.json"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers ran
    try:
        for spec in specs:
            split, whole = (
                RunDir(tmp_path / "split" / spec.run_id()),
                RunDir(run_experiment(spec, tmp_path / "whole", device="cpu").path),
            )
            assert split.levels() == whole.levels() == [0, 1, 2, 3]
            for level in whole.levels():
                assert split.level(level).mask() == whole.level(level).mask()
                a, b = split.level(level).weights("final"), whole.level(level).weights("final")
                assert all(torch.equal(a[k], b[k]) for k in a), (spec.seed, level)
    finally:
        torch.set_num_threads(threads)


def test_cli_sweep_says_which_run_it_cuts_and_reports_each_run_once(tmp_path):
    result = _cli_lottery_sweep(tmp_path, "2x1x1", 0.125)
    assert result.exit_code == 0, result.output
    cut = re.search(r"2 workers finish together: run (\w{12}) pauses after 2 of 4 levels, then resumes", result.output)
    assert cut, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("run ")]
    assert len(lines) == 3 and sum(cut.group(1) in line for line in lines) == 1  # reported once, when finished
    assert "3 runs finished, 0 failed" in result.output
