"""What a run folder holds, for ``ticketlab status``: finished runs, runs in progress with their owner,
failed ones with their reason, interrupted ones, and damaged files. Tensor files are checked against the
checksum they carry (read and hashed, nothing kept); JSON files must parse."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ticketlab.config.spec import ExperimentSpec
from ticketlab.files import CorruptFileError, load_tensors
from ticketlab.store import RunDir
from ticketlab.sweep.claims import CLAIM_FILE, read_claim
from ticketlab.sweep.executors import FAILED_FILE
from ticketlab.sweep.plan import expected_levels


@dataclass
class RunState:
    run_id: str
    state: str  # finished | in progress | failed | interrupted
    levels: int  # finished levels
    expected: int | None  # levels the run will have (None: no readable spec.json)
    detail: str = ""  # owner of a run in progress, reason of a failure, stale claim
    damaged: list[str] = field(default_factory=list)


@dataclass
class FolderStatus:
    runs: list[RunState]
    shared: dict[str, int]  # "inits" / "dense" -> entries
    damaged: list[str]  # every damaged file, relative to the folder

    def count(self, state: str) -> int:
        return sum(r.state == state for r in self.runs)


def damaged_files(folder: Path, root: Path) -> list[str]:
    """Files under ``folder`` that fail their checks, as ``path: reason`` relative to ``root``."""
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        try:
            if path.suffix == ".safetensors":
                load_tensors(path)
            elif path.suffix == ".json":
                json.loads(path.read_text())
        except (CorruptFileError, ValueError, OSError) as exc:
            out.append(f"{path.relative_to(root)}: {str(exc).removeprefix(str(path) + ': ')}")
    return out


def run_state(path: Path, root: Path, verify: bool = True) -> RunState:
    run = RunDir(path)
    levels = sum((d / "metrics.json").exists() for d in path.glob("level_*"))
    try:
        expected: int | None = expected_levels(ExperimentSpec.model_validate_json((path / "spec.json").read_text()))
    except (OSError, ValueError):
        expected = None
    damaged = damaged_files(path, root) if verify else []
    owner = read_claim(path)
    if run.finished:
        state, detail = "finished", ""
    elif owner is not None and not owner.stale():
        state, detail = "in progress", owner.describe()
    elif (path / FAILED_FILE).exists():
        try:
            failure = json.loads((path / FAILED_FILE).read_text())
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(failure.get("time", 0)))
            state, detail = "failed", f"{failure.get('error', '?')} ({failure.get('host', '?')}, {when})"
        except (OSError, ValueError):
            state, detail = "failed", "(failed.json unreadable)"
    else:
        state = "interrupted"
        detail = f"claim of {owner.describe()} is stale" if owner is not None else ""
    return RunState(path.name, state, levels, expected, detail, damaged)


def folder_status(root: str | os.PathLike, verify: bool = True) -> FolderStatus:
    """The state of every run directory under ``root`` (a folder holding ``spec.json``, a claim or a failure)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such run folder")
    runs = [
        run_state(p, root, verify)
        for p in sorted(root.iterdir())
        if p.is_dir() and any((p / name).exists() for name in ("spec.json", CLAIM_FILE, FAILED_FILE))
    ]
    shared = {
        name: sum(1 for p in (root / name).iterdir() if not p.name.startswith("."))
        for name in ("inits", "dense")
        if (root / name).is_dir()
    }
    damaged = [d for r in runs for d in r.damaged]
    if verify:
        for name in shared:
            damaged += damaged_files(root / name, root)
    return FolderStatus(runs, shared, damaged)
