"""Run one experiment spec end to end: data -> model + init -> method (levels, controls) -> run directory."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ticketlab.data import Dataset, load_dataset
from ticketlab.hardware.device import resolve_device
from ticketlab.experiment.check import check_spec
from ticketlab.experiment.progress import RunStatus
from ticketlab.files import CorruptFileError, load_tensors, save_tensors
from ticketlab.methods import METHODS, Job, resolve_method
from ticketlab.models import build_model, initialize
from ticketlab.criteria.saw import is_saw, saw_criterion, saw_initialize
from ticketlab.config.spec import ExperimentSpec
from ticketlab.store import RunDir
from ticketlab.training.loop import Progress
from ticketlab.models import snapshot


TICKET = "ticket"  # the control column's value for the ticket itself in tables (its level stores control "")


def _quiet(message: str) -> None:
    pass


@dataclass
class _WatchedJob(Job):
    """A job that tells its :class:`RunStatus` about every finished level and logs the status's line for it
    (level k/N, time so far and left) instead of the job's own."""

    status: RunStatus = field(default_factory=RunStatus)

    def record(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        log, self.log = self.log, _quiet
        try:
            row = super().record(*args, **kwargs)
        finally:
            self.log = log
        self.status.finished(row, resumed=False)
        self.log(self.status.line(row))
        return row

    def resume(self, level: int, control: str | None = None) -> dict[str, Any] | None:
        log, self.log = self.log, _quiet
        try:
            row = super().resume(level, control)
        finally:
            self.log = log
        if row is not None:
            self.status.finished(row, resumed=True)
            self.log(self.status.line(row, resumed=True))
        return row


@dataclass
class RunResult:
    spec: ExperimentSpec
    path: Path
    rows: list[dict[str, Any]]

    def table(self) -> pd.DataFrame:
        """One row per level (and control), sorted by level, tickets (control ``"ticket"``) before their controls."""
        frame = pd.DataFrame(self.rows)
        if frame.empty:
            return frame
        frame["control"] = frame["control"].map(lambda c: c or TICKET)
        order = frame["control"].map(lambda c: (c != TICKET, c))
        return frame.assign(_order=order).sort_values(["level", "_order"], kind="stable").drop(columns="_order").reset_index(drop=True)


def initial_weights(
    model: torch.nn.Module, spec: ExperimentSpec, input_shape: tuple[int, ...], num_classes: int, root: Path,
    data: Dataset | None = None,
) -> dict[str, torch.Tensor]:
    """The initial weights of (model, init, seed), stored once under ``root/inits/`` and shared by every
    method and run, so methods compare on the same initialisation (000 appendix A.1). Scores as weights
    (``saw:<criterion>``) also depend on the data and pruning batches, which then join the key."""
    key = f"{spec.model}|{spec.init}|{spec.seed}|{tuple(input_shape)}|{num_classes}|{spec.bn_momentum}|{spec.bn_eps}"
    if is_saw(spec.init):
        m = spec.method
        key += (f"|{spec.dataset}|{spec.val_size}|{spec.split_seed}|{m.pruning_batches}|{m.pruning_samples_per_class}"
                f"|{m.include_bias}|{','.join(spec.exempt)}")
    safe_init = re.sub(r"[^a-z0-9_.-]+", "_", spec.init.lower())
    name = f"{spec.model.replace(':', '_')}-{safe_init}-seed{spec.seed}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    path = root / "inits" / f"{name}.safetensors"
    if path.exists():
        tensors, meta = load_tensors(path)
        if meta.get("key") != key:
            raise CorruptFileError(f"{path}: stored initial weights belong to {meta.get('key')!r}, not {key!r}")
        return tensors
    if is_saw(spec.init):
        if data is None:
            raise ValueError(f"init {spec.init!r} scores the model on data: pass data= to initial_weights")
        m = spec.method
        saw_initialize(
            model, saw_criterion(spec.init), data, seed=spec.seed, exempt=spec.exempt,
            pruning_batches=m.pruning_batches, samples_per_class=m.pruning_samples_per_class, include_bias=m.include_bias,
        )
    else:
        initialize(model, spec.init, seed=spec.seed)
    state = snapshot(model)
    save_tensors(path, state, {"kind": "init", "key": key})
    return state


def prepare_run(
    spec: ExperimentSpec, data: Dataset, root: str | os.PathLike, device: torch.device
) -> tuple[RunDir, torch.nn.Module, dict[str, torch.Tensor]]:
    """The run directory (spec written), the model on ``device`` with the shared initial weights loaded,
    and those weights: what every run starts from."""
    run = RunDir(Path(root) / spec.run_id())
    run.write_spec(spec.model_dump(mode="json"))
    model = build_model(
        spec.model, input_shape=data.input_shape, num_classes=data.num_classes,
        bn_momentum=spec.bn_momentum, bn_eps=spec.bn_eps, dropout=spec.dropout,
    )
    init_state = initial_weights(model, spec, data.input_shape, data.num_classes, Path(root), data=data)
    model.load_state_dict(init_state)
    model.to(device)
    return run, model, init_state


def run_experiment(
    spec: ExperimentSpec,
    root: str | os.PathLike = "runs",
    *,
    device: str | torch.device | None = None,
    data_root: str | os.PathLike | None = None,
    progress: Progress | None = None,
    log: Any = None,
    status: RunStatus | None = None,
) -> RunResult:
    """Run ``spec`` (or resume it) under ``root/<run id>``; finished levels are read back, not redone.

    ``log`` receives one line per finished level (``level 3/14: density ..., test acc ... · elapsed, ~left``)
    and the method's own messages; ``status`` (a :class:`RunStatus`) follows the run for a live display."""
    check_spec(spec)
    status = status or RunStatus()
    device = resolve_device(device)
    data = load_dataset(spec.dataset, root=data_root, val_size=spec.val_size, seed=spec.split_seed, device=device)
    run, model, init_state = prepare_run(spec, data, root, device)
    status.begin(spec, run.path)

    def watched(step: int, total: int, row: dict | None) -> None:
        status.step(step, total, row)
        if progress is not None:
            progress(step, total, row)

    job = _WatchedJob(spec, data, model, init_state, run, progress=watched, log=log or _quiet, status=status)
    key, _ = resolve_method(spec.method)
    METHODS.get(key)(job)
    run.mark_finished({"levels": len(job.rows)})
    return RunResult(spec, run.path, job.rows)
