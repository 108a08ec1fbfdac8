"""One vocabulary across commands and the API: one default length, device auto everywhere, method options
as options={...}, tickets called "ticket" in every table, --set on run/tune/sweep, durations with their
unit, and prune asking for its target instead of starting a 14-level job."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import ticketlab
from ticketlab.cli import app
from ticketlab.cli import common as cli_common
from ticketlab.config import ExperimentSpec, Recipe
from ticketlab.sweep import SweepSpec
from ticketlab.sweep.tune import TuneSpec

cli_common.console.width = cli_common.err.width = 200
SMALL = ["--model", "mlp:784-16-10", "--dataset", "synthetic", "--val-size", "100", "--device", "cpu"]
SPEC = {
    "model": "mlp:784-16-10",
    "dataset": "synthetic",
    "val_size": 100,
    "densities": [0.5],
    "recipe": {"steps": "4it", "batch_size": 50},
    "method": {"name": "snip"},
}


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def default_of(command: list[str], flag: str) -> str:
    text = re.sub(r"[│\s]+", " ", invoke(*command, "--help").output)
    match = re.search(rf"{flag} \S+ .*?\[default: ([^\]]+)\]", text)
    assert match, text
    return match.group(1).strip()


def test_one_default_length_and_device_everywhere():
    assert cli_common.DEFAULT_STEPS == str(Recipe().steps) == "20ep"
    for command in (["train"], ["prune"], ["meta", "build"]):
        assert default_of(command, "--steps") == "20ep", command
    for command in (["train"], ["prune"], ["meta", "build"]):
        assert default_of(command, "--device") == "auto", command
    assert SweepSpec().device == TuneSpec(search={"seed": {"int": [0, 1]}}).device == "auto"
    for command in ("sweep", "tune"):
        assert "else auto" in re.sub(r"[│\s]+", " ", invoke(command, "--help").output)


def test_prune_requires_its_target(tmp_path):
    result = invoke("prune", *SMALL, "--out", tmp_path / "runs")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().startswith("error: --density: give the target, e.g. --density 0.05")
    assert "--sparsity 0.95" in result.output and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("10", "duration '10' has no unit: write a number followed by 'ep' (epochs) or 'it' (steps), '10ep' or '10it'"),
        ("0ep", "--steps: 0ep trains nothing; give a length above 0, e.g. 20ep or 1500it"),
        ("0it", "--steps: 0it trains nothing"),
    ],
)
def test_a_length_needs_its_unit_and_must_be_positive(tmp_path, steps, message):
    for command in (["train"], ["prune", "--density", "0.5", "--out", tmp_path]):
        result = invoke(*command, *SMALL, "--steps", steps)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output


def test_a_bare_number_in_a_spec_is_not_taken_for_steps(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "recipe": {"steps": 20}}))
    result = invoke("run", path, "--out", tmp_path / "runs")
    assert result.exit_code == 2 and not (tmp_path / "runs").exists()
    assert (
        f"error: {path}: recipe.steps: duration '20' has no unit" in result.output
        and "'20ep' or '20it'" in result.output
    )


def test_method_options_go_in_options(tmp_path):
    with pytest.raises(
        TypeError, match=r"unexpected keyword argument 'regrow': a method's options go in options=\{'regrow': \.\.\.\}"
    ):
        ticketlab.prune("mlp:784-16-10", "synthetic", "double_pruning", 0.64, regrow=0.1, out=tmp_path)
    recipe = Recipe(steps="3it", batch_size=50)
    result = ticketlab.prune(
        "mlp:784-16-10",
        "synthetic",
        "double_pruning",
        0.64,
        options={"regrow": 0.2},
        pruning_batches=2,
        recipe=recipe,
        val_size=100,
        out=tmp_path,
        device="cpu",
    )
    assert result.spec.method.options == {"regrow": 0.2} and result.spec.method.pruning_batches == 2


def test_tickets_are_called_ticket_in_every_table(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "controls": ["reinit"]}))
    assert invoke("run", path, "--out", tmp_path / "runs").exit_code == 0
    spec = ExperimentSpec.model_validate({**SPEC, "controls": ["reinit"]})
    table = ticketlab.prune(
        spec.model,
        spec.dataset,
        "snip",
        0.5,
        recipe=spec.recipe,
        val_size=100,
        controls=("reinit",),
        out=tmp_path / "api",
        device="cpu",
        log=None,
    ).table()
    assert table["control"].tolist() == ["ticket", "ticket", "reinit"]
    frame = ticketlab.load_results(tmp_path / "runs")
    assert sorted(frame["control"]) == ["reinit", "ticket", "ticket"]
    result = invoke("results", tmp_path / "runs", "--csv", tmp_path / "r.csv")
    assert result.exit_code == 0
    assert sorted(pd.read_csv(tmp_path / "r.csv")["control"]) == ["reinit", "ticket", "ticket"]  # no NaN


def test_run_and_tune_take_set_like_sweep(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    result = invoke("run", path, "--out", tmp_path / "runs", "--set", "recipe.steps=2it", "--set", "seed=3")
    assert result.exit_code == 0, result.output
    (spec_json,) = (tmp_path / "runs").glob("*/spec.json")
    written = yaml.safe_load(spec_json.read_text())
    assert written["recipe"]["steps"] == "2it" and written["seed"] == 3
    result = invoke("run", path, "--out", tmp_path / "runs", "--set", "recipe.steps=2")
    assert result.exit_code == 2 and "error: --set recipe.steps: duration '2' has no unit" in result.output

    tune = tmp_path / "tune.yaml"
    tune.write_text(
        yaml.safe_dump(
            {
                "base": SPEC,
                "search": {"seed": {"int": [0, 1]}},
                "trials": 1,
                "pruner": "none",
                "out": str(tmp_path / "tuned"),
            }
        )
    )
    result = invoke("tune", tune, "--set", "recipe.steps=2it")
    assert result.exit_code == 0, result.output
    (spec_json,) = (tmp_path / "tuned").glob("*/spec.json")
    assert yaml.safe_load(spec_json.read_text())["recipe"]["steps"] == "2it"
    result = invoke("tune", tune, "--set", "seed=1")
    assert result.exit_code == 2 and "--set seed: 'seed' is searched by this tune file" in result.output
