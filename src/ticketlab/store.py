"""Run directories: what a finished level wrote, so a rerun skips it and an interrupted run resumes.

A level is finished when its ``metrics.json`` exists; it is written last and atomically, after the mask
and weights, so a crash at any moment leaves either a finished level or one that is redone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ticketlab.files import atomic_write_json, load_tensors, save_tensors
from ticketlab.masks import Mask

ENV_FILE = "env.json"


@dataclass(frozen=True)
class LevelDir:
    path: Path

    @property
    def done(self) -> bool:
        return (self.path / "metrics.json").exists()

    def metrics(self) -> dict[str, Any]:
        return json.loads((self.path / "metrics.json").read_text())

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
    ) -> None:
        """Write the level's files; ``metrics.json`` goes last and marks the level finished."""
        self.path.mkdir(parents=True, exist_ok=True)
        mask.save(self.path / "mask.safetensors")
        for which, tensors in weights.items():
            save_tensors(self.path / f"{which}.safetensors", tensors, {"kind": which})
        if scores is not None:
            save_tensors(self.path / "scores.safetensors", scores, {"kind": "scores"})
        atomic_write_json(self.path / "metrics.json", metrics)


class RunDir:
    """``<root>/<run_id>/``: spec.json, env.json, data.json, level_00/, level_01/, ..., controls under
    level_XX/<control>/."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def level(self, index: int, control: str | None = None) -> LevelDir:
        base = self.path / f"level_{index:02d}"
        return LevelDir(base / control if control else base)

    def write_spec(self, spec_json: dict[str, Any]) -> None:
        atomic_write_json(self.path / "spec.json", spec_json)

    def spec(self) -> dict[str, Any]:
        """The spec as recorded. A run recorded before ``env.json`` existed wrote ``method.rounds: 1`` where the
        spec left it unset (then the default, meaning the method's own number: 100 rounds for the synflow
        shorthand); that is read back as unset, so the spec means what ran and keeps its run id."""
        spec = json.loads((self.path / "spec.json").read_text())
        method = spec.get("method")
        if isinstance(method, dict) and method.get("rounds") == 1 and not (self.path / ENV_FILE).exists():
            method["rounds"] = None
        return spec

    def write_env(self, env: dict[str, Any]) -> None:
        """The environment the run started under (``env.json``); each level records its own in its metrics."""
        atomic_write_json(self.path / ENV_FILE, env)

    def env(self) -> dict[str, Any] | None:
        path = self.path / ENV_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def write_data_info(self, info: dict[str, Any]) -> None:
        """What the model was built for and how its inputs were standardised (``data.json``), so a level's
        weights can be loaded into their model, and fed, without loading the dataset."""
        atomic_write_json(self.path / "data.json", info)

    def data_info(self) -> dict[str, Any] | None:
        path = self.path / "data.json"
        return json.loads(path.read_text()) if path.exists() else None

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
