"""Run directories: what a finished level wrote, so a rerun skips it and an interrupted run resumes.

A level is finished when its ``metrics.json`` exists; it is written last and atomically, after the mask
and weights, so a crash at any moment leaves either a finished level or one that is redone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ticketlab.files import atomic_write_json, load_json, load_tensors, save_tensors
from ticketlab.masks import Mask


@dataclass(frozen=True)
class LevelDir:
    path: Path

    @property
    def done(self) -> bool:
        return (self.path / "metrics.json").exists()

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
    """``<root>/<run_id>/``: spec.json, level_00/, level_01/, ..., controls under level_XX/<control>/."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def level(self, index: int, control: str | None = None) -> LevelDir:
        base = self.path / f"level_{index:02d}"
        return LevelDir(base / control if control else base)

    def write_spec(self, spec_json: dict[str, Any]) -> None:
        atomic_write_json(self.path / "spec.json", spec_json)

    @property
    def finished(self) -> bool:
        return (self.path / "done.json").exists()

    def mark_finished(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.path / "done.json", summary)
