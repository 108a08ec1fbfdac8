"""Run directories: what a finished level wrote, so a rerun skips it and an interrupted run resumes.

A level is finished when its ``metrics.json`` exists; it is written last and atomically, after the mask
and weights, so a crash at any moment leaves either a finished level or one that is redone.

A run's dense level (level 0) may be shared with every run that would compute the same one (``Shared``:
a folder and the key naming what determines it): a run whose level 0 is missing takes the shared copy
when there is one, and a run that computes it publishes it there, so it is trained once per key.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ticketlab.files import (
    CorruptFileError,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    load_json,
    load_tensors,
    save_tensors,
)
from ticketlab.masks import Mask

KEY_FILE = "key.txt"


@dataclass(frozen=True)
class Shared:
    """A level's files kept once for every run with the same ``key`` (the text of what determines them)."""

    path: Path
    key: str

    @property
    def done(self) -> bool:
        return (self.path / "metrics.json").exists()

    def copy_to(self, target: Path) -> bool:
        """Copy the shared files into ``target`` (``metrics.json`` last), each tensor file's checksum and the
        key verified first; False (nothing copied) when the entry is missing or damaged, so it is recomputed."""
        if not self.done:
            return False
        try:
            if (self.path / KEY_FILE).read_text() != self.key:
                raise CorruptFileError(f"{self.path}: holds the dense level of another key")
            names = sorted(p.name for p in self.path.iterdir() if p.is_file() and not p.name.startswith("."))
            for name in names:
                if name.endswith(".safetensors"):
                    load_tensors(self.path / name)
        except (CorruptFileError, OSError):
            return False
        for name in sorted(names, key=lambda n: n == "metrics.json"):
            if name != KEY_FILE:
                atomic_write_bytes(target / name, (self.path / name).read_bytes())
        return True

    def publish(self, source: Path) -> None:
        """Make ``source``'s files the shared entry, unless one exists (the first published is kept): they are
        copied to a temporary folder beside it, which is then renamed into place in one step."""
        if self.done:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}."))
        try:
            for item in source.iterdir():
                if item.is_file() and not item.name.startswith("."):
                    shutil.copyfile(item, tmp / item.name)
            atomic_write_text(tmp / KEY_FILE, self.key)
            os.rename(tmp, self.path)
        except OSError:  # another run published it first (the target exists and is not empty)
            pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


ENV_FILE = "env.json"


@dataclass(frozen=True)
class LevelDir:
    path: Path
    shared: Shared | None = None

    @property
    def done(self) -> bool:
        """Finished here, or (for a shared level) copied here from the shared entry now."""
        if (self.path / "metrics.json").exists():
            if self.shared is not None and not self.shared.done:  # computed before it was shared
                self.shared.publish(self.path)
            return True
        return self.shared is not None and self.shared.copy_to(self.path)

    def metrics(self) -> dict[str, Any]:
        return load_json(self.path / "metrics.json")

    def mask(self) -> Mask:
        return Mask.load(self.path / "mask.safetensors")

    def weights(self, which: str = "final") -> dict[str, torch.Tensor]:
        return load_tensors(self.path / f"{which}.safetensors")[0]

    def has(self, which: str) -> bool:
        return (self.path / f"{which}.safetensors").exists()

    def write(
        self,
        mask: Mask,
        weights: dict[str, dict[str, torch.Tensor]],
        metrics: dict[str, Any],
        scores: dict[str, torch.Tensor] | None = None,
        *,
        timed_from: float | None = None,
    ) -> None:
        """Write the level's files; ``metrics.json`` goes last and marks the level finished. With ``timed_from``
        (a ``time.perf_counter()`` value) the seconds from then to just before ``metrics.json`` are recorded in
        it as ``time_s.write``."""
        self.path.mkdir(parents=True, exist_ok=True)
        mask.save(self.path / "mask.safetensors")
        for which, tensors in weights.items():
            save_tensors(self.path / f"{which}.safetensors", tensors, {"kind": which})
        if scores is not None:
            save_tensors(self.path / "scores.safetensors", scores, {"kind": "scores"})
        if timed_from is not None and isinstance(metrics.get("time_s"), dict):
            metrics["time_s"]["write"] = time.perf_counter() - timed_from
        atomic_write_json(self.path / "metrics.json", metrics)
        if self.shared is not None:
            self.shared.publish(self.path)


class RunDir:
    """``<root>/<run_id>/``: spec.json, env.json, data.json, level_00/, level_01/, ..., controls under
    level_XX/<control>/. ``dense``: where its level 0 is shared with other runs (None: not shared)."""

    def __init__(self, path: str | os.PathLike, dense: Shared | None = None) -> None:
        self.path = Path(path)
        self.dense = dense

    def level(self, index: int, control: str | None = None) -> LevelDir:
        base = self.path / f"level_{index:02d}"
        if control:
            return LevelDir(base / control)
        return LevelDir(base, self.dense if index == 0 else None)

    def write_spec(self, spec_json: dict[str, Any]) -> None:
        atomic_write_json(self.path / "spec.json", spec_json)

    def spec(self) -> dict[str, Any]:
        """The spec as recorded. A run recorded before ``env.json`` existed wrote ``method.rounds: 1`` where the
        spec left it unset (then the default, meaning the method's own number: 100 rounds for the synflow
        shorthand); that is read back as unset, so the spec means what ran and keeps its run id."""
        spec = load_json(self.path / "spec.json")
        method = spec.get("method")
        if isinstance(method, dict) and method.get("rounds") == 1 and not (self.path / ENV_FILE).exists():
            method["rounds"] = None
        return spec

    def write_env(self, env: dict[str, Any]) -> None:
        """The environment the run started under (``env.json``); each level records its own in its metrics."""
        atomic_write_json(self.path / ENV_FILE, env)

    def env(self) -> dict[str, Any] | None:
        path = self.path / ENV_FILE
        return load_json(path) if path.exists() else None

    def write_data_info(self, info: dict[str, Any]) -> None:
        """What the model was built for and how its inputs were standardised (``data.json``), so a level's
        weights can be loaded into their model, and fed, without loading the dataset."""
        atomic_write_json(self.path / "data.json", info)

    def data_info(self) -> dict[str, Any] | None:
        path = self.path / "data.json"
        return load_json(path) if path.exists() else None

    def levels(self) -> list[int]:
        """The finished levels (their tickets), in order."""
        found = []
        for d in self.path.glob("level_*"):
            suffix = d.name.removeprefix("level_")
            if suffix.isdigit() and (d / "metrics.json").exists():
                found.append(int(suffix))
        return sorted(found)  # by number: level_100 comes after level_99

    def controls(self, index: int) -> list[str]:
        """The finished controls of a level, by name."""
        base = self.path / f"level_{index:02d}"
        return sorted(d.name for d in base.iterdir() if (d / "metrics.json").exists()) if base.is_dir() else []

    @property
    def finished(self) -> bool:
        return (self.path / "done.json").exists()

    def mark_finished(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.path / "done.json", summary)
