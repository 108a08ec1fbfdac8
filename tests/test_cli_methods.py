"""``ticketlab methods``: every registered method and every option field (type, default, description) listed
from the registries; and ``ticketlab prune --method`` runs each method of the state-of-the-art group."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ticketlab.cli import app
from ticketlab.cli import common as cli_common
from ticketlab.methods import METHODS, OPTIONS

runner = CliRunner()
cli_common.console.width = cli_common.err.width = 250  # tables unwrapped, so the tests can read them


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_methods_lists_every_method_with_its_options():
    result = invoke("methods")
    assert result.exit_code == 0, result.output
    for name in METHODS.names():
        assert name in result.output
    assert "steps, schedule, batches, batch_size, fresh_batches, train_mode" in result.output  # force's options


@pytest.mark.parametrize("name", OPTIONS.names())
def test_every_option_is_documented(name):
    """Each option of every method has a description, shown with its default by ``ticketlab methods NAME``."""
    result = invoke("methods", name)
    assert result.exit_code == 0, result.output
    for field, info in OPTIONS.get(name).model_fields.items():
        assert info.description, f"{name}: option {field!r} has no description"
        line = next((row for row in result.output.splitlines() if row.startswith(f"│ {field} ")), None)
        assert line is not None and info.description[:40] in line, f"{name}.{field} not listed"


def test_methods_help_and_mistakes():
    assert invoke("methods", "--help").exit_code == 0
    assert "takes no -o options" in invoke("methods", "lottery").output
    result = invoke("methods", "lotery")
    assert result.exit_code == 2 and "Did you mean 'lottery'" in result.output


@pytest.mark.parametrize(
    "method, options",
    [
        ("iter_snip", ["-o", "steps=3"]),
        ("force", ["-o", "steps=3", "-o", "batches=2"]),
        ("edge_popup", ["-o", "steps=4it", "-o", "lr=0.2"]),
        ("gem_miner", ["-o", "steps=4it", "-o", "period=2it", "-o", "penalty=0.001"]),
    ],
)
def test_prune_runs_each_method_from_the_command_line(tmp_path, method, options):
    result = invoke(
        "prune",
        "--model",
        "mlp:784-16-10",
        "--dataset",
        "synthetic",
        "--method",
        method,
        "--density",
        "0.2",
        *options,
        "--steps",
        "4it",
        "--val-size",
        "100",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(next(tmp_path.glob("*/level_01/metrics.json")).read_text())
    assert metrics["density"] == pytest.approx(0.2, abs=1e-4) and metrics["mask_cost_passes"] > 0


def test_a_bad_option_names_the_field(tmp_path):
    result = invoke(
        "prune",
        "--dataset",
        "synthetic",
        "--method",
        "force",
        "-o",
        "step=3",
        "--density",
        "0.1",
        "--out",
        str(tmp_path),
    )
    # named as it was typed (-o), with the method's options and the closest one as a guess
    assert result.exit_code == 2 and "-o step=...: method force has no option 'step'" in result.output
    assert "Did you mean 'steps'?" in result.output


# -- every method and criterion from the command line (issue 22, item 5) ------------------------------
def test_prune_help_names_every_method_and_methods_lists_every_criterion():
    from ticketlab.criteria import CRITERIA
    from ticketlab.criteria.scoring import PARAMETRIC

    text = " ".join(invoke("prune", "--help").output.replace("│", " ").split())
    for name in METHODS.names():
        assert name in text, f"prune --help does not name method {name!r}"
    for name in ("prospr", "ntk_sap", "phew", "random_erk", "random_er"):
        assert name in text
    listing = invoke("methods").output
    rows = {line.split("│")[1].strip() for line in listing.splitlines() if line.startswith("│")}
    assert set(CRITERIA.names()) <= rows
    for name in PARAMETRIC.names():
        if name in CRITERIA:
            assert PARAMETRIC.get(name).usage in listing


@pytest.mark.parametrize("name", ["prospr", "ntk_sap", "phew", "random_erk", "snip"])
def test_methods_shows_a_criterion_and_its_settings(name):
    from ticketlab.criteria.scoring import PARAMETRIC

    result = invoke("methods", name)
    assert result.exit_code == 0, result.output
    assert f"{name} (criterion)" in result.output and f"--method {name}" in result.output
    usage = PARAMETRIC.get(name).usage if name in PARAMETRIC else "takes no settings"
    assert usage in result.output


@pytest.mark.parametrize(
    "method, options",
    [
        ("prospr", []),
        ("prospr:steps=1:first_order", []),
        ("phew", []),
        ("random_er", []),
        ("random_erk", []),
        ("multishot", ["--criterion", "ntk_sap:draws=2", "--rounds", "3"]),
    ],
)
def test_prune_runs_each_criterion_from_the_command_line(tmp_path, method, options):
    result = invoke(
        "prune",
        *("--model", "mlp:784-16-10", "--dataset", "synthetic", "--method", method, "--density", "0.2"),
        *options,
        *("--steps", "4it", "--val-size", "100", "--device", "cpu", "--out", str(tmp_path)),
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(next(tmp_path.glob("*/level_01/metrics.json")).read_text())
    assert metrics["density"] == pytest.approx(0.2, abs=1e-4) and metrics["test_acc"] is not None
