"""Tables of the CLI print every digit: in a pipe at full width, on a narrow terminal with headers wrapped
rather than numbers cut; integers as integers; `results --format csv|markdown`. Issue "Results a
researcher can trust", item 6."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

import ticketlab
from ticketlab.cli import app
from ticketlab.cli import common as cli_common
from ticketlab.cli.common import fmt, fmt_count, print_table
from ticketlab.cli.results import cells, summary
from ticketlab.config.spec import ExperimentSpec
from ticketlab.experiment.run import run_experiment

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    base = dict(model="mlp:784-16-10", dataset="synthetic", val_size=200, recipe={"steps": "30it", "eval_every": "3it"})
    for method, extra in (
        ("lottery", {"densities": (0.64,), "controls": ("shuffle_mask_reinit",)}),
        ("snip", {"densities": (0.5, 0.1)}),
    ):
        run_experiment(ExperimentSpec.model_validate({**base, "method": {"name": method}, **extra}), root, device="cpu")
    return root


@pytest.fixture
def narrow():
    """The CLI's console 40 columns wide (CliRunner's output is no terminal: a pipe)."""
    previous = cli_common.console.width
    cli_common.console.width = 40
    yield
    cli_common.console.width = previous


def expected_cells(root):
    return [cell for row in cells(summary(ticketlab.load_results(root))) for cell in row]


def assert_whole(output, wanted):
    assert "…" not in output
    lines = output.splitlines()
    for cell in wanted:
        assert any(cell in line for line in lines), f"{cell!r} is not whole on one line of\n{output}"


def test_piped_results_print_every_digit_and_label(root, narrow):
    result = CliRunner().invoke(app, ["results", str(root)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    wanted = expected_cells(root)
    assert "lottery [shuffle_mask_reinit]" in wanted  # a label with brackets is no rich markup
    assert_whole(result.output, wanted)
    assert "early-stop step" in result.output and "2 runs, 8 levels" in result.output


def test_results_in_a_subprocess_whose_stdout_is_a_pipe(root):
    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "50"}
    done = subprocess.run(
        [sys.executable, "-m", "ticketlab.cli", "results", str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert_whole(done.stdout, expected_cells(root))


def test_on_a_narrow_terminal_headers_wrap_and_numbers_stay_whole():
    rows = [
        ["0", "shuffle_mask_reinit", "0.6400", "0.3600", "0.8442", "916", "yes"],
        ["12", "ticket", "0.0512", "0.9488", "0.8456", "10250", "-"],
    ]
    header = ("level", "control", "density", "sparsity", "test acc", "early-stop step", "winning")
    numbers = [c for row in rows for c in row if c not in ("shuffle_mask_reinit", "ticket", "yes")]
    for width in (80, 70):  # the table is 84 wide on one line
        out = io.StringIO()
        terminal = Console(file=out, width=width, force_terminal=True, color_system=None)
        print_table("levels", header, rows, out=terminal)
        text = out.getvalue()
        assert max(len(line) for line in text.splitlines()) <= width  # it fits
        assert_whole(text, numbers)
        assert terminal.width == width  # the console is left as it was
        if width == 80:  # headers wrap at their spaces first
            assert_whole(text, ["early-stop", "shuffle_mask_re"])


def test_a_table_wider_than_the_terminal_is_printed_whole_rather_than_cropped():
    out = io.StringIO()
    terminal = Console(file=out, width=20, force_terminal=True, color_system=None)
    rows = [["0.123456789", "0.987654321", "12345678"]]
    print_table("t", ("a", "b", "c"), rows, out=terminal)
    assert_whole(out.getvalue(), rows[0])


def test_prune_table_headers_and_integer_steps(tmp_path, narrow):
    result = CliRunner().invoke(
        app,
        [
            "prune",
            "--model",
            "mlp:784-16-10",
            "--dataset",
            "synthetic",
            "--method",
            "lottery",
            "--density",
            "0.8",
            "--steps",
            "30it",
            "--val-size",
            "200",
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
            "--control",
            "reinit",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    for header in ("control", "early-stop step", "winning", "collapsed", "time (s)"):
        assert header in result.output
    assert "…" not in result.output
    frame = ticketlab.load_results(tmp_path)
    for step in frame["early_stop_step"]:
        assert f" {int(step)} " in result.output and f"{step:.4f}" not in result.output  # 916, not 916.0000


def test_cell_formats():
    assert fmt_count(916.0) == "916" and fmt_count(916) == "916" and fmt_count(916.5) == "916.5"
    assert fmt_count(None) == "-" and fmt_count(float("nan")) == "-"
    assert fmt(float("nan")) == "-" and fmt(0.84421) == "0.8442" and fmt(True) == "yes" and fmt(3) == "3"


def test_results_as_csv_and_markdown(root):
    runner = CliRunner()
    result = runner.invoke(app, ["results", str(root), "--format", "csv"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    printed = pd.read_csv(io.StringIO(result.output))
    groups = summary(ticketlab.load_results(root))
    assert list(printed.columns) == list(groups.columns)
    assert printed["test_acc"].tolist() == pytest.approx(groups["test_acc"].tolist(), abs=0, rel=1e-15)
    result = runner.invoke(app, ["results", str(root), "--format", "markdown"], catch_exceptions=False)
    lines = result.output.splitlines()
    assert "| ticket | target | seeds | density | test acc | ± std | early-stop step | time (s) |" in lines
    assert "|---|---:|---:|---:|---:|---:|---:|---:|" in lines
    assert sum(line.startswith("| lottery [shuffle_mask_reinit] |") for line in lines) == 2
    bad = runner.invoke(app, ["results", str(root), "--format", "html"])
    assert bad.exit_code == 2 and "--format must be one of table, csv, markdown" in bad.output
