"""Packaging: the library declares a torch range (an environment's own torch is kept); only the set-up
script pins the version CI tests."""

from __future__ import annotations

import tomllib
from pathlib import Path

import torch
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def requirement(name: str) -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == name]
    assert len(found) == 1, name
    return found[0]


def test_torch_is_a_range_not_a_pin():
    spec = requirement("torch").specifier
    assert not any(s.operator == "==" for s in spec), spec
    for other in ("2.4.0", "2.8.1", "2.13.0"):  # a user's own torch in the supported range is kept
        assert spec.contains(Version(other)), other
    assert spec.contains(Version(torch.__version__.split("+")[0]))  # the torch these tests run on


def test_setup_pins_torch_through_constraints():
    pins = [
        line for line in (ROOT / "scripts" / "constraints.txt").read_text().splitlines() if line.startswith("torch")
    ]
    assert pins == ["torch==2.13.0"]
    assert "-c scripts/constraints.txt" in (ROOT / "scripts" / "setup.sh").read_text()
