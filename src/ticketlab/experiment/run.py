"""Run one experiment spec end to end: data -> model + init -> method (levels, controls) -> run directory."""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ticketlab.config.spec import ExperimentSpec
from ticketlab.criteria.saw import is_saw, saw_criterion, saw_initialize
from ticketlab.data import Dataset, load_dataset
from ticketlab.experiment.check import check_spec
from ticketlab.experiment.dense import dense_store
from ticketlab.experiment.progress import RunStatus
from ticketlab.files import CorruptFileError, load_tensors, save_tensors
from ticketlab.hardware.device import resolve_device
from ticketlab.hardware.environment import differences, environment
from ticketlab.methods import METHODS, Job, check_on_model, resolve_method
from ticketlab.models import build_model, initialize, snapshot
from ticketlab.store import RunDir
from ticketlab.training.loop import Progress

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
        frame = frame.assign(_order=order).sort_values(["level", "_order"], kind="stable")
        return frame.drop(columns="_order").reset_index(drop=True)


def init_file_prefix(spec: ExperimentSpec) -> str:
    """How the names of ``spec``'s stored initial weights under ``root/inits/`` begin (a hash follows)."""
    safe_init = re.sub(r"[^a-z0-9_.-]+", "_", spec.init.lower())
    return f"{spec.model.replace(':', '_')}-{safe_init}-seed{spec.seed}-"


def initial_weights(
    model: torch.nn.Module,
    spec: ExperimentSpec,
    input_shape: tuple[int, ...],
    num_classes: int,
    root: Path,
    data: Dataset | None = None,
) -> dict[str, torch.Tensor]:
    """The initial weights of (model, init, seed), stored once under ``root/inits/`` and shared by every
    method and run, so methods compare on the same initialisation (000 appendix A.1). Scores as weights
    (``saw:<criterion>``) also depend on the data and pruning batches, which then join the key."""
    key = f"{spec.model}|{spec.init}|{spec.seed}|{tuple(input_shape)}|{num_classes}|{spec.bn_momentum}|{spec.bn_eps}"
    if is_saw(spec.init):
        m = spec.method
        key += (
            f"|{spec.dataset}|{spec.val_size}|{spec.split_seed}|{m.pruning_batches}|{m.pruning_samples_per_class}"
            f"|{m.include_bias}|{','.join(spec.exempt)}"
        )
    path = root / "inits" / f"{init_file_prefix(spec)}{hashlib.sha256(key.encode()).hexdigest()[:8]}.safetensors"
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
            model,
            saw_criterion(spec.init),
            data,
            seed=spec.seed,
            exempt=spec.exempt,
            pruning_batches=m.pruning_batches,
            samples_per_class=m.pruning_samples_per_class,
            include_bias=m.include_bias,
        )
    else:
        initialize(model, spec.init, seed=spec.seed)
    state = snapshot(model)
    save_tensors(path, state, {"kind": "init", "key": key})
    return state


def prepare_run(
    spec: ExperimentSpec, data: Dataset, root: str | os.PathLike, device: torch.device
) -> tuple[RunDir, torch.nn.Module, dict[str, torch.Tensor]]:
    """The run directory (spec written; its level 0 shared, see ``ticketlab.experiment.dense``), the model on
    ``device`` with the shared initial weights loaded, and those weights: what every run starts from."""
    model = build_model(
        spec.model,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        bn_momentum=spec.bn_momentum,
        bn_eps=spec.bn_eps,
        dropout=spec.dropout,
    )
    check_on_model(spec, model)  # a method's checks that need the model, before anything is written
    run = RunDir(Path(root) / spec.run_id(), dense=dense_store(root, spec))
    run.write_spec(spec.model_dump(mode="json"))
    run.write_data_info(
        {
            "dataset": spec.dataset,
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
            "mean": list(data.mean),
            "std": list(data.std),
        }
    )
    init_state = initial_weights(model, spec, data.input_shape, data.num_classes, Path(root), data=data)
    model.load_state_dict(init_state)
    model.to(device)
    return run, model, init_state


class EnvironmentChangedWarning(UserWarning):
    """A run resumed under another environment than it started in (its new levels record the new one)."""


def record_environment(run: RunDir, device: torch.device, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """This process's environment (``hardware.environment``), written as the run's ``env.json`` when the run
    has none. Resuming an unfinished run under another environment says so in one line, to ``log`` (else as
    an :class:`EnvironmentChangedWarning`); the run id stays the spec's and the levels written from now on
    record the new environment, so the results tell them apart."""
    env = environment(device)
    first = run.env()
    if first is None:
        run.write_env(env)
    elif not run.finished and (changed := differences(first, env)):
        message = (
            f"warning: run {run.path.name} started under another environment ({'; '.join(changed)}); "
            "the levels trained now record this one"
        )
        if log is None:
            warnings.warn(message, EnvironmentChangedWarning, stacklevel=3)
        else:
            log(message)
    return env


def run_experiment(
    spec: ExperimentSpec,
    root: str | os.PathLike = "runs",
    *,
    device: str | torch.device | None = None,
    data_root: str | os.PathLike | None = None,
    progress: Progress | None = None,
    log: Any = None,
    status: RunStatus | None = None,
    budget: int | None = None,
) -> RunResult:
    """Run ``spec`` (or resume it) under ``root/<run id>``; finished levels are read back, not redone.

    ``log`` receives one line per finished level (``level 3/14: density ..., test acc ... · elapsed, ~left``)
    and the method's own messages; ``status`` (a :class:`RunStatus`) follows the run for a live display.
    ``budget``: compute at most that many levels, then raise ``methods.context.Paused`` (``Job.budget``)."""
    check_spec(spec)
    device = resolve_device(device)
    data = load_dataset(spec.dataset, root=data_root, val_size=spec.val_size, seed=spec.split_seed, device=device)
    return run_on(spec, data, root, device=device, progress=progress, log=log, status=status, budget=budget)


def run_on(
    spec: ExperimentSpec,
    data: Dataset,
    root: str | os.PathLike = "runs",
    *,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    log: Any = None,
    status: RunStatus | None = None,
    budget: int | None = None,
) -> RunResult:
    """:func:`run_experiment` on data already loaded (the spec's dataset, validation split and split seed)."""
    check_spec(spec)
    device = resolve_device(device)
    data = data.to(device)
    run, model, init_state = prepare_run(spec, data, root, device)
    watch = status or RunStatus()
    watch.begin(spec, run.path)
    env = record_environment(run, device, log)

    def watched(step: int, total: int, row: dict | None) -> None:
        watch.step(step, total, row)
        if progress is not None:
            progress(step, total, row)

    job = _WatchedJob(
        spec, data, model, init_state, run, progress=watched, log=log or _quiet, env=env, budget=budget, status=watch
    )
    key, _ = resolve_method(spec.method)
    METHODS.get(key)(job)
    run.mark_finished(job.counts())
    return RunResult(spec, run.path, job.rows)
