"""Every example spec in examples/ loads as an experiment spec and says what it reproduces and how long
it took; every source document has one."""

import re
from pathlib import Path

import pytest

from ticketlab.config.spec import load_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SPECS = sorted(p for p in EXAMPLES.glob("*.yaml") if not p.name.startswith("sweep_"))


def test_every_source_document_has_an_example():
    assert {p.name[:3] for p in SPECS} >= {"000", "001", "002", "003", "004"}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_example_spec_loads(path):
    spec = load_spec(path)
    assert spec.dataset == "fashion-mnist"
    header = path.read_text().split("\n\n")[0]
    assert re.search(r"^# Timed once .*\d+ s", header, re.M), "each example notes its measured run time"
