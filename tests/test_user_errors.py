"""A user's mistake is one line naming the file and the field (exit code 2, nothing written), never a
traceback: missing data offline, no Ray cluster, a failing tune trial, broken or empty YAML files, binary
garbage, a truncated metrics.json. Each case runs the real command."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from ticketlab.cli import app
from ticketlab.cli import common as cli_common
from ticketlab.data import sources

cli_common.console.width = cli_common.err.width = 200  # one line stays one line

SPEC = {
    "model": "mlp:784-16-10",
    "dataset": "synthetic",
    "val_size": 100,
    "densities": [0.5],
    "recipe": {"steps": "5it", "batch_size": 50},
    "method": {"name": "snip"},
}


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_offline_dataset_is_one_line_with_the_data_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TICKETLAB_DATA", raising=False)
    monkeypatch.setitem(sources.MIRRORS, "mnist", ["http://127.0.0.1:9/"])  # nothing listens there: offline
    line = one_error_line(invoke("train", "--dataset", "mnist", "--device", "cpu"))
    assert "dataset 'mnist' is not on this machine and downloading it failed" in line
    assert "$TICKETLAB_DATA/mnist/" in line and "--data-root" in line
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # nothing saved


def test_ray_without_a_cluster_is_one_line(tmp_path):
    pytest.importorskip("ray")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": SPEC, "grid": {"seed": [0]}}))
    line = one_error_line(invoke("sweep", sweep, "--executor", "ray", "--address", "auto", "--out", tmp_path / "runs"))
    assert "executor ray: could not connect to Ray at address 'auto'" in line and "ray start --head" in line
    assert not (tmp_path / "runs").exists()


def test_failed_tune_trial_is_one_line_not_a_traceback(tmp_path):
    tune = tmp_path / "tune.yaml"
    tune.write_text(
        yaml.safe_dump(
            {
                "base": SPEC,
                "trials": 2,
                "pruner": "none",
                "out": str(tmp_path / "runs"),
                "search": {"recipe.batch_size": {"choice": [5000, 6000]}},  # > the training split: fails when run
            }
        )
    )
    result = invoke("tune", tune)
    assert "Traceback" not in result.output, result.output
    failed = [line for line in result.output.splitlines() if line.startswith("trial ")]
    assert len(failed) == 2, result.output  # two distinct points, each failing on its own line
    for line, size in zip(sorted(failed, key=lambda t: "6000" in t), (5000, 6000)):
        assert f': failed {{"recipe.batch_size": {size}}}' in line
        assert f"(ValueError: batch_size {size} is larger than the training split (2000))" in line
    assert result.exit_code == 1 and "no trial completed" in result.output


@pytest.mark.parametrize("command", ["run", "sweep", "tune"])
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: [lenet300\ndensities: [0.1]\n", "not valid YAML at line 2, column 10"),
        ("", "the file is empty"),
        ("# nothing but a comment\n", "the file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "not a text file (byte 0 is not UTF-8)"),
        ("- a\n- b\n", "is a mapping of fields"),
    ],
)
def test_broken_or_empty_files_are_refused_in_one_line(tmp_path, command, text, message):
    path = tmp_path / f"{command}.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    line = one_error_line(invoke(command, path, "--out", tmp_path / "runs"))
    assert line.startswith(f"error: {path}: ") and message in line
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing was written


def test_spec_file_problems_name_the_file_and_field(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "recipe": {"stpes": "5it"}}))
    line = one_error_line(invoke("run", path, "--out", tmp_path / "runs"))
    assert line.startswith(f"error: {path}: recipe.stpes: ")
    path.write_text(yaml.safe_dump({**SPEC, "model": "lenet301"}))
    line = one_error_line(invoke("run", path, "--out", tmp_path / "runs"))
    assert line.startswith(f"error: {path}: model: unknown model 'lenet301'")
    assert not (tmp_path / "runs").exists()


def test_truncated_metrics_json_names_the_file(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    assert invoke("run", spec, "--out", tmp_path / "runs").exit_code == 0
    (metrics,) = (tmp_path / "runs").glob("*/level_01/metrics.json")
    metrics.write_text(metrics.read_text()[:40])
    with pytest.raises(json.JSONDecodeError):
        json.loads(metrics.read_text())
    line = one_error_line(invoke("results", tmp_path / "runs"))
    assert line.startswith(f"error: {metrics}: not valid JSON") and "delete it" in line
    result = invoke("run", spec, "--out", tmp_path / "runs")  # resuming reads the level back
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(errors) == 1 and errors[0].startswith(f"error: {metrics}: not valid JSON"), result.output


# -- messages in the user's terms -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--method", "lotery"],
            "error: --method: unknown method 'lotery'. Did you mean 'lottery'? Allowed: double_pruning,",
        ),
        (["--criterion", "snipp"], "error: --criterion: unknown criterion 'snipp'. Did you mean 'snip'?"),
        (
            ["--density", "0"],
            "error: --density: 0.0 is not in (0, 1] (density = fraction of weights kept; sparsity = 1 - density)",
        ),
        (["--K", "1.5"], "error: --K: Input should be less than 1"),
        (["--steps", "0.5it"], "error: --steps: invalid duration '0.5it'"),
        (
            ["--method", "scored_pruning", "-o", "regrow_everyy=1ep"],
            "error: -o regrow_everyy=...: method scored_pruning has no option 'regrow_everyy'. Did you mean 'regrow_every'? "
            "Allowed: regrow, base, regrow_every, positive_only",
        ),
        (
            ["--method", "supermask", "-o", "thresholds=[]"],
            "error: -o thresholds=...: give at least one threshold, or leave it out to sweep densities",
        ),
        (
            ["--method", "scored_pruning", "-o", "regrow_every=2ep", "--steps", "1ep"],
            "set -o regrow_every=..., e.g. '0.25ep'",
        ),
        (
            ["--density", "0.1", "--sparsity", "0.9"],
            "error: --density and --sparsity: give one of them (sparsity = 1 - density), not both",
        ),
        (["--sparsity", "1"], "error: --sparsity: 1.0 is not in [0, 1) (sparsity = fraction of weights pruned)"),
    ],
)
def test_prune_names_the_flag_that_was_typed(tmp_path, args, expected):
    target = [] if {"--density", "--sparsity"} & set(args) else ["--density", "0.5"]
    line = one_error_line(
        invoke("prune", "--dataset", "synthetic", "--model", "mlp:784-16-10", *target, *args, "--out", tmp_path)
    )
    assert expected in line


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"K": 0.5}, "K: unknown field; K belongs under method (method: {K: ...}). Allowed here: model, dataset,"),
        ({"steps": "2ep"}, "steps: unknown field; steps belongs under recipe (recipe: {steps: ...})."),
        (
            {"recipe": {"stpes": "5it"}},
            "recipe.stpes: unknown field; did you mean 'steps'. Allowed here: steps, batch_size,",
        ),
        ({"densities": [0.0]}, "densities: 0.0 is not in (0, 1] (density = fraction of weights kept"),
        (
            {"method": {"name": "scored_pruning", "options": {"regrow_everyy": "1ep"}}},
            "method.options.regrow_everyy: method scored_pruning has no option 'regrow_everyy'. Did you mean 'regrow_every'?",
        ),
        ({"sparsity": 0.9, "densities": [0.1]}, "densities and sparsity: give one of densities, density or sparsity"),
    ],
)
def test_spec_problems_say_where_a_field_belongs_and_what_is_allowed(tmp_path, fields, expected):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, **fields}))
    line = one_error_line(invoke("run", path, "--out", tmp_path / "runs"))
    assert line.startswith(f"error: {path}: ") and expected in line, line
    assert "densities: densities" not in line


def test_sparsity_is_one_minus_density_in_specs_and_at_the_cli(tmp_path):
    from ticketlab.config import ExperimentSpec

    base = ExperimentSpec(densities=(0.05, 0.2))
    assert ExperimentSpec(sparsity=[0.95, 0.8]).run_id() == base.run_id()  # 1 - 0.95 is 0.05 exactly here
    assert ExperimentSpec(density=[0.2, 0.05]).run_id() == base.run_id()
    assert ExperimentSpec(sparsity=0.9).densities == (0.1,)
    common = [
        "prune",
        "--dataset",
        "synthetic",
        "--model",
        "mlp:784-16-10",
        "--method",
        "snip",
        "--steps",
        "3it",
        "--val-size",
        "100",
        "--out",
        tmp_path,
    ]
    assert invoke(*common, "--sparsity", "0.9").exit_code == 0
    assert invoke(*common, "--density", "0.1").exit_code == 0
    runs = [p for p in tmp_path.iterdir() if (p / "spec.json").exists()]
    assert len(runs) == 1  # one run: the same spec
