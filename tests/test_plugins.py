"""Plugins: ``ticketlab --plugin`` (a file or a module), the ``ticketlab.plugins`` entry points of installed
packages, a plugin's mistakes as one line, and the plugins reaching Ray tasks. (docs/extending.md's
examples, local sweep workers included, run in tests/test_docs.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ticketlab.cli import app
from ticketlab.cli import common as cli_common

cli_common.console.width = cli_common.err.width = 200


@pytest.fixture(autouse=True)
def _forget_plugins():
    """What a test loads stays out of later tests: ``loaded()`` is handed to every sweep worker, and a
    plugin file of a finished test would be imported again there."""
    from ticketlab import plugins

    loaded, done = list(plugins._loaded), set(plugins._done)
    yield
    plugins._loaded[:] = loaded
    plugins._done.clear()
    plugins._done.update(done)


SRC = str(Path(__file__).resolve().parents[1] / "src")
MODEL_PLUGIN = """
from torch import nn
from ticketlab.models import MODELS

@MODELS.register("{name}")
def build(arg, *, input_shape, num_classes, bn_momentum, bn_eps, dropout):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.ReLU(), nn.Linear(8, num_classes))
"""
PRUNE = [
    "prune",
    "--dataset",
    "synthetic",
    "--method",
    "snip",
    "--density",
    "0.5",
    "--steps",
    "2it",
    "--val-size",
    "100",
    "--device",
    "cpu",
]


def cli(args: list[str], cwd: Path, pythonpath: str = SRC) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ticketlab.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": pythonpath},
        timeout=600,
    )


def test_entry_points_of_installed_packages_load_with_every_command(tmp_path):
    site = tmp_path / "site"
    (site / "labplug-0.1.dist-info").mkdir(parents=True)
    (site / "labplug-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: labplug\nVersion: 0.1\n")
    (site / "labplug-0.1.dist-info" / "entry_points.txt").write_text(
        "[ticketlab.plugins]\nmodels = labplug_models\nmore = labplug_more:register\n"
    )
    (site / "labplug_models.py").write_text(MODEL_PLUGIN.format(name="epmodel"))
    (site / "labplug_more.py").write_text(  # a function entry point registers when called, not on import
        "def register():\n" + "".join(f"    {line}\n" for line in MODEL_PLUGIN.format(name="epmodel2").splitlines())
    )
    for model in ("epmodel", "epmodel2"):
        done = cli([*PRUNE, "--model", model, "--out", str(tmp_path / "runs")], tmp_path, f"{SRC}{os.pathsep}{site}")
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"snip · {model} · synthetic" in done.stdout


def test_plugin_by_module_name_from_the_current_folder(tmp_path):
    (tmp_path / "my_models.py").write_text(MODEL_PLUGIN.format(name="namedmodel"))
    done = cli(["--plugin", "my_models", *PRUNE, "--model", "namedmodel", "--out", "runs"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "snip · namedmodel · synthetic" in done.stdout


@pytest.mark.parametrize(
    ("files", "plugin", "message"),
    [
        ({}, "nowhere_module", "error: plugin 'nowhere_module': no module of that name in {cwd} or on the Python path"),
        ({}, "missing.py", "error: plugin 'missing.py': no such file"),
        (
            {"broken.py": "raise RuntimeError('boom')\n"},
            "broken.py",
            "error: plugin 'broken.py' failed while loading: RuntimeError: boom",
        ),
        (
            {"needs.py": "import not_installed_anywhere\n"},
            "needs.py",
            "error: plugin 'needs.py': it imports 'not_installed_anywhere', which is not installed",
        ),
        (
            {"needs2.py": "import not_installed_anywhere\n"},
            "needs2",
            "error: plugin 'needs2': it imports 'not_installed_anywhere', which is not installed",
        ),
    ],
)
def test_a_broken_plugin_is_one_line(tmp_path, monkeypatch, files, plugin, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["--plugin", plugin, "data", "list"], catch_exceptions=False)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(message.format(cwd=tmp_path)), lines[0]


def test_loading_twice_registers_once_and_lists_what_workers_get(tmp_path):
    from ticketlab import plugins
    from ticketlab.models import MODELS

    path = tmp_path / "twice_model.py"
    path.write_text(MODEL_PLUGIN.format(name="twicemodel"))
    try:
        first = plugins.load_plugins([str(path)])
        second = plugins.load_plugins([str(path), "twice_model"], cwd=str(tmp_path))  # same module, by name too
        assert "twicemodel" in MODELS and str(path) in first  # no "registered twice" error above
        assert second[: len(first)] == first and second.count(str(path)) == 1
    finally:
        MODELS._entries.pop("twicemodel", None)
        sys.modules.pop("twice_model", None)


@pytest.mark.slow  # starting Ray takes 15-40 s on two shared cores
def test_ray_tasks_import_the_plugins(tmp_path):
    ray = pytest.importorskip("ray")
    from ticketlab import plugins
    from ticketlab.models import MODELS
    from ticketlab.sweep import SweepSpec, run_sweep

    path = tmp_path / "ray_model.py"
    path.write_text(MODEL_PLUGIN.format(name="raymodel"))
    plugins.load_plugins([str(path)])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        base = {
            "model": "raymodel",
            "dataset": "synthetic",
            "val_size": 100,
            "densities": [0.5],
            "recipe": {"steps": "2it"},
            "method": {"name": "snip"},
        }
        report = run_sweep(
            SweepSpec(base=base, grid={"seed": [0, 1]}, executor="ray", device="cpu"), out=tmp_path / "runs"
        )
    finally:
        ray.shutdown()
        MODELS._entries.pop("raymodel", None)
        sys.modules.pop("ray_model", None)
    assert len(report.outcomes) == 2 and not report.failed, report.outcomes
