"""What the docs and help promise holds: the sources cited in full, the list of models (command and README)
from the registry, help listing every method/criterion/init/control (plugins' too), `run` writing the plot,
`--version`, the demo not installing a browser, and files created with the umask's mode."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import ticketlab
from ticketlab.cli import app
from ticketlab.cli import common as cli_common
from ticketlab.criteria import CRITERIA
from ticketlab.methods import CONTROLS, METHODS
from ticketlab.models import INITS, MODELS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
cli_common.console.width = cli_common.err.width = 400
SPEC = {
    "model": "mlp:784-16-10",
    "dataset": "synthetic",
    "val_size": 100,
    "densities": [0.5],
    "recipe": {"steps": "3it", "batch_size": 50},
    "method": {"name": "snip"},
}


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False, env={"COLUMNS": "400"})


def flat(text: str) -> str:
    """Help text without its box drawing and line breaks."""
    return re.sub(r"[│\s]+", " ", text)


def test_readme_cites_each_source_document_in_full():
    sources = README[README.index("## Sources") :]
    for number in ("000", "001", "002", "003", "004"):
        entry = re.search(rf"^- \*\*{number}\*\*: (.*?)(?=^- \*\*|\Z)", sources, flags=re.S | re.M)
        assert entry, number
        assert re.search(r"\*[A-Z][^*]{10,}\*", entry.group(1)), f"{number}: no title in italics"
    for words in (
        "Lutz",
        "Manai",
        "Mikler",
        "Borevsky",
        "Frankle",
        "Carbin",
        "Rolfs",
        "Hitting the Jackpot",
        "On Pruning Methods for Neural Networks",
        "Supermasks",
        "COMP 576",
    ):
        assert words in sources, words


def test_models_command_and_readme_list_the_registry():
    output = invoke("models").output
    for name in MODELS.names():
        assert re.search(rf"^│ {name} +│", output, flags=re.M), name
    assert "wrn-16-4" in output  # other spellings
    listed = re.search(r"Models \(`--model`.*?\): (.*?)\. `ticketlab prune --help`", README, flags=re.S).group(1)
    names = [n.split(":")[0] for n in re.findall(r"`([^`]+)`", listed)]
    assert sorted(names) == MODELS.names()


def test_prune_help_lists_every_registered_name():
    text = flat(invoke("prune", "--help").output)
    for name in [*METHODS.names(), *CRITERIA.names(), *CONTROLS.names(), *INITS.names()]:
        assert re.search(rf"[ :,]{re.escape(name)}[,;. )]", text), name
    assert "saw:<criterion>" in text and "stacked(A,B)" in text
    assert "saw:<criterion>" in flat(invoke("train", "--help").output)


def test_help_lists_a_plugins_method(tmp_path, monkeypatch):
    (tmp_path / "helpful.py").write_text(
        "from ticketlab.methods import METHODS\n\n@METHODS.register('help_listed_method')\ndef m(job):\n    pass\n"
    )
    monkeypatch.chdir(tmp_path)
    try:
        text = flat(invoke("--plugin", "helpful.py", "prune", "--help").output)
        assert "help_listed_method" in text
    finally:
        METHODS._entries.pop("help_listed_method", None)


def test_run_writes_the_accuracy_plot_like_prune(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    result = invoke("run", spec, "--out", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    (png,) = (tmp_path / "runs").glob("*/accuracy_vs_density.png")
    assert f"plot: {png}" in result.output and png.read_bytes()[:4] == b"\x89PNG"


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"ticketlab {ticketlab.__version__}"


def test_only_the_test_setup_installs_a_browser():
    setup, test, demo = ((ROOT / "scripts" / f).read_text() for f in ("setup.sh", "test.sh", "demo.sh"))
    assert "chromium" not in setup and "chromium" not in demo and "bash scripts/setup.sh" in demo
    install = test.index("apt-get install -y -qq chromium chromium-driver")
    assert test.index("bash scripts/setup.sh") < install < test.index("pytest")


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path, mask, mode):
    previous = os.umask(mask)
    try:
        spec = tmp_path / "spec.yaml"
        spec.write_text(yaml.safe_dump(SPEC))
        assert invoke("run", spec, "--out", tmp_path / "runs").exit_code == 0
        assert invoke("report", tmp_path / "runs", "--baseline", "snip").exit_code == 0
    finally:
        os.umask(previous)
    written = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"metrics.json", "mask.safetensors", "final.safetensors", "spec.json", "done.json", "report.html"} <= names
    wrong = {
        str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode))
        for p in written
        if stat.S_IMODE(p.stat().st_mode) != mode
    }
    assert not wrong, wrong
