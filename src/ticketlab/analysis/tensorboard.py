"""TensorBoard curves of a run: each finished level's history written as scalars under the run directory.

Curves are exported from each level's ``metrics.json`` as soon as the level is recorded, not streamed
from inside the training loop: the run store stays the one source of truth, an interrupted run exports
exactly its finished levels, and a resumed one adds the rest without duplicating any curve.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

TB_DIR = "tensorboard"
_CURVES = ("train_loss", "val_loss", "val_acc", "test_loss", "test_acc")


def export_tensorboard(run_path: str | os.PathLike) -> list[Path]:
    """Write every finished, not yet exported level of ``run_path`` to
    ``run_path/tensorboard/level_XX[_control]/`` (tags ``val/acc``, ``test/loss`` ... per training step)
    and the ticket's final accuracies against the level to ``run_path/tensorboard/levels/``.
    Returns the directories written by this call."""
    from torch.utils.tensorboard import SummaryWriter

    run = Path(run_path)
    written: list[Path] = []
    for metrics_file in sorted(run.glob("level_*/**/metrics.json")):
        level_dir = metrics_file.parent
        name = "_".join(level_dir.relative_to(run).parts)  # level_03 or level_03_reinit
        target = run / TB_DIR / name
        if target.exists() and any(target.glob("events.out.tfevents.*")):
            continue
        row = json.loads(metrics_file.read_text())
        writer = SummaryWriter(log_dir=str(target))
        try:
            for point in row.get("history", []):
                for key in _CURVES:
                    value = point.get(key)
                    if value is not None and value == value:  # NaN train loss before the first step
                        split, metric = key.split("_")
                        writer.add_scalar(f"{split}/{metric}", value, global_step=int(point["step"]))
            if not row.get("control"):
                summary = SummaryWriter(log_dir=str(run / TB_DIR / "levels"), filename_suffix=f".{name}")
                for key in ("test_acc", "val_acc", "density"):
                    if row.get(key) is not None:
                        summary.add_scalar(f"ticket/{key}", row[key], global_step=int(row["level"]))
                summary.close()
        finally:
            writer.close()
        written.append(target)
    return written


def tensorboard_log(run_path: str | os.PathLike, log: Callable[[str], None] | None = None) -> Callable[[str], None]:
    """A ``log`` callback for ``run_experiment`` that exports each level to TensorBoard as it is recorded
    (a method calls ``log`` right after writing a level), then passes the message on."""

    def _log(message: str) -> None:
        export_tensorboard(run_path)
        if log is not None:
            log(message)

    return _log
