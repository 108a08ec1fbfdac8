"""``ticketlab export`` writes each format; wrong input is one line naming the flag, exit code 2, and no file;
``ticketlab train --out`` writes a run that load_ticket and export read."""

from __future__ import annotations

import re
import shutil

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from ticketlab.api import load_ticket, prune
from ticketlab.cli import app
from ticketlab.cli import common as cli_common
from ticketlab.config import Recipe
from ticketlab.tickets import load_sparse
from ticketlab.training.evaluate import evaluate

runner = CliRunner()
cli_common.console.width = cli_common.err.width = 200
RECIPE = Recipe(steps="30it", batch_size=50, lr=0.05, momentum=0.9, eval_every="10it")


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return prune(
        "mlp:784-32-10",
        "synthetic",
        "lottery",
        0.8,
        recipe=RECIPE,
        val_size=200,
        out=root,
        device="cpu",
        controls=("reinit",),
    ).path


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("state_dict", "t.safetensors"), ("state_dict", "t.pt"), ("sparse", "t.safetensors"), ("onnx", "t.onnx")],
)
def test_export_writes_each_format(run, synthetic, tmp_path, fmt, name):
    if fmt == "onnx":
        for module in ("onnx", "onnxscript", "onnxruntime"):
            pytest.importorskip(module)
    out = tmp_path / "sub" / name
    result = invoke("export", run, "--level", "1", "--format", fmt, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "level 1" in result.output
    ticket = load_ticket(run, 1)
    x = synthetic.x_test[:50]
    with torch.inference_mode():
        expected = ticket.model(x)
        if fmt == "state_dict":
            state = load_file(out) if name.endswith(".safetensors") else torch.load(out, weights_only=True)
            model = load_ticket(run, 0).model  # another level's model, overwritten with the exported weights
            model.load_state_dict(state)
            assert torch.equal(model(x), expected)
        elif fmt == "sparse":
            assert torch.allclose(load_sparse(out)(x), expected, atol=1e-5)
        else:
            import onnxruntime

            session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
            assert (got - expected).abs().max() <= 1e-5
            assert "max |difference| to PyTorch" in result.output


def test_export_a_control(run, tmp_path):
    result = invoke(
        "export", run, "--level", "1", "--control", "reinit", "--format", "state_dict", "--out", tmp_path / "c.pt"
    )
    assert result.exit_code == 0, result.output
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert torch.equal(state["layers.0.weight"], load_ticket(run, 1, "reinit").model.layers[0].weight)


BAD = [
    (
        ["--level", "1", "--format", "zip", "--out", "t.zip"],
        "--format: must be one of state_dict, onnx, sparse; got 'zip'",
    ),
    (["--level", "1", "--out", "t.pt"], "--format: give the format"),
    (["--level", "1", "--format", "onnx", "--out", "t.pt"], "--out: format onnx is written to a .onnx file"),
    (["--level", "1", "--format", "state_dict"], "--out: give the file to write"),
    (
        ["--level", "9", "--format", "state_dict", "--out", "t.pt"],
        "--level: run {run} has no finished level 9 (finished: 0, 1)",
    ),
    (["--format", "state_dict", "--out", "t.pt"], "--level: give the level to export (finished levels of {run}: 0, 1)"),
    (
        ["--level", "1", "--control", "shuffle", "--format", "sparse", "--out", "t.safetensors"],
        "--control: level 1 of run {run} has no finished control 'shuffle' (controls: reinit)",
    ),
    (
        ["--level", "1", "--format", "state_dict", "--out", "."],
        "--out: format state_dict is written to a .safetensors or .pt or .pth file",
    ),
    (
        ["--level", "1", "--format", "state_dict", "--out", "folder.pt"],
        "--out: {out}/folder.pt is a folder; give a file name",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_input_is_one_line_exit_2_and_nothing_written(run, tmp_path, args, message):
    out = tmp_path / "out"
    (out / "folder.pt").mkdir(parents=True)
    before = sorted(out.rglob("*"))
    args = [str(out / a) if a.startswith(("t.", "folder", ".")) else a for a in args]
    result = invoke("export", run, *args)
    assert result.exit_code == 2, result.output
    assert result.output.strip().count("\n") == 0, result.output
    assert message.format(run=run, out=out) in result.output, result.output
    assert "Traceback" not in result.output
    assert sorted(out.rglob("*")) == before


@pytest.mark.parametrize("level", [["--level", "0"], []])
def test_export_of_a_folder_that_is_no_run(tmp_path, level):
    result = invoke("export", tmp_path, *level, "--format", "state_dict", "--out", tmp_path / "t.pt")
    assert result.exit_code == 2 and "RUN: " in result.output and "no spec.json" in result.output
    assert not (tmp_path / "t.pt").exists()


def test_export_help():
    result = invoke("export", "--help")
    assert result.exit_code == 0 and "--format" in result.output and "sparse" in result.output


def test_export_of_a_damaged_run_names_the_file(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    final = copy / "level_01" / "final.safetensors"
    final.write_bytes(final.read_bytes()[:-7])
    result = invoke("export", copy, "--level", "1", "--format", "state_dict", "--out", tmp_path / "t.pt")
    assert result.exit_code == 2 and str(final) in result.output.replace("\n", "")
    assert not (tmp_path / "t.pt").exists()


def test_train_out_writes_a_run_that_loads(tmp_path, synthetic):
    result = invoke(
        "train",
        "--model",
        "mlp:784-32-10",
        "--dataset",
        "synthetic",
        "--steps",
        "30it",
        "--lr",
        "0.05",
        "--batch-size",
        "50",
        "--eval-every",
        "10it",
        "--val-size",
        "200",
        "--device",
        "cpu",
        "--out",
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    path = re.search(r"run directory: (\S+)", result.output).group(1)
    ticket = load_ticket(path)
    assert ticket.level == 0 and ticket.density == 1.0 and ticket.spec.densities == (1.0,)
    printed = float(re.search(r"final test acc (\S+);", result.output).group(1))
    assert printed == pytest.approx(ticket.metrics["test_acc"], abs=1e-4)
    assert evaluate(ticket.model, synthetic.x_test, synthetic.y_test)["acc"] == pytest.approx(
        ticket.metrics["test_acc"], abs=1e-6
    )
    result = invoke("export", path, "--level", "0", "--format", "state_dict", "--out", tmp_path / "dense.safetensors")
    assert result.exit_code == 0, result.output
