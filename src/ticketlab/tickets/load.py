"""``load_ticket(run_dir, level)``: a level of a run directory as a model you can use without ticketlab's
training code: the spec's network, built as the run built it, with the level's final weights and its mask.

The model's input is what the run trained on: images of ``input_shape`` standardised per channel with
``mean`` and ``std`` (the training split's statistics, recorded in the run's ``data.json``). Every tensor
file is checksummed (:mod:`ticketlab.files`): a damaged file raises :class:`~ticketlab.files.CorruptFileError`
naming it, never a model with wrong weights.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from torch import nn

from ticketlab.config.spec import ExperimentSpec
from ticketlab.experiment.run import TICKET
from ticketlab.files import CorruptFileError
from ticketlab.masks import Mask
from ticketlab.models import StateDict, build_model
from ticketlab.store import RunDir


class TicketError(ValueError):
    """A request for a ticket that the run directory cannot give; ``field`` names the argument at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass
class Ticket:
    """One level (or one control of it) of a run.

    ``model`` is a plain ``nn.Module`` in eval mode holding the level's final weights with the mask applied
    (pruned weights are exact zeros); ``start`` are the weights its training started from (the rewound,
    masked weights of a lottery ticket) and ``rewind`` the snapshot the next level rewinds to (None where the
    method keeps none). ``metrics`` is the level's ``metrics.json`` (``test_acc``, ``density``, ...).
    """

    model: nn.Module
    mask: Mask
    start: StateDict
    rewind: StateDict | None
    spec: ExperimentSpec
    metrics: dict[str, Any]
    level: int
    control: str | None
    path: Path
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def density(self) -> float:
        return self.mask.density()

    def describe(self) -> dict[str, str]:
        """Plain-text facts about the ticket, for the metadata of exported files."""
        return {
            "ticketlab.run": self.spec.run_id(),
            "ticketlab.level": str(self.level),
            "ticketlab.control": self.control or "",
            "ticketlab.model": self.spec.model,
            "ticketlab.dataset": self.spec.dataset,
            "ticketlab.input_shape": json.dumps(list(self.input_shape)),
            "ticketlab.num_classes": str(self.num_classes),
            "ticketlab.bn_momentum": repr(self.spec.bn_momentum),
            "ticketlab.bn_eps": repr(self.spec.bn_eps),
            "ticketlab.dropout": repr(self.spec.dropout),
            "ticketlab.mean": json.dumps(list(self.mean)),
            "ticketlab.std": json.dumps(list(self.std)),
            "ticketlab.density": repr(self.density),
            "ticketlab.test_acc": repr(self.metrics.get("test_acc")),
            "ticketlab.spec": json.dumps(self.spec.model_dump(mode="json"), sort_keys=True),
        }


def read_spec(run: RunDir) -> ExperimentSpec:
    if not run.path.is_dir():
        raise TicketError("run", f"{run.path} is not a folder")
    if not (run.path / "spec.json").exists():
        raise TicketError("run", f"{run.path} is not a run directory (it has no spec.json)")
    try:
        return ExperimentSpec.model_validate(run.spec())
    except (ValidationError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"{run.path / 'spec.json'}: not a valid spec ({str(exc).splitlines()[0]})") from None


def pick_level(run: RunDir, level: int | None, control: str | None) -> int:
    """``level`` checked against the finished levels (None: the last one), and ``control`` against its controls."""
    finished = run.levels()
    if not finished:
        raise TicketError("level", f"run {run.path} has no finished level")
    if level is None:
        level = finished[-1]
    if level not in finished:
        raise TicketError(
            "level", f"run {run.path} has no finished level {level} (finished: {', '.join(map(str, finished))})"
        )
    if control is not None and control not in run.controls(level):
        have = ", ".join(run.controls(level)) or "none"
        raise TicketError(
            "control", f"level {level} of run {run.path} has no finished control {control!r} (controls: {have})"
        )
    return level


def data_info(run: RunDir, spec: ExperimentSpec, data_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Input shape, classes and standardisation of the run's data: ``data.json``, or for runs written before
    it existed, the dataset itself, loaded as the run loaded it."""
    info = run.data_info()
    if info is None:
        from ticketlab.data import load_dataset

        data = load_dataset(spec.dataset, root=data_root, val_size=spec.val_size, seed=spec.split_seed)
        info = {
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
            "mean": list(data.mean),
            "std": list(data.std),
        }
    return info


def build_for(spec: ExperimentSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The spec's network as ``prepare_run`` builds it (same BatchNorm settings and dropout)."""
    return build_model(
        spec.model,
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        bn_momentum=spec.bn_momentum,
        bn_eps=spec.bn_eps,
        dropout=spec.dropout,
    )


def load_ticket(
    run_dir: str | os.PathLike,
    level: int | None = None,
    control: str | None = None,
    *,
    data_root: str | os.PathLike | None = None,
) -> Ticket:
    """Level ``level`` of the run in ``run_dir`` (default: its last finished level), or the control named
    ``control`` of that level (``"ticket"``, as the results tables call it, or None: the ticket itself), as a
    :class:`Ticket` whose ``model`` gives the recorded test accuracy.

    ``data_root`` is only used for runs written before ``data.json`` existed, whose data shape is read off
    the dataset. Raises :class:`TicketError` (naming ``run``, ``level`` or ``control``) for a level that is
    not there and :class:`~ticketlab.files.CorruptFileError` for a damaged file.
    """
    control = None if control in (None, "", TICKET) else control  # "ticket", as tables name it: the ticket
    run = RunDir(run_dir)
    spec = read_spec(run)
    level = pick_level(run, level, control)
    d = run.level(level, control)
    info = data_info(run, spec, data_root)
    shape, classes = tuple(int(s) for s in info["input_shape"]), int(info["num_classes"])
    model = build_for(spec, shape, classes)
    final = d.weights("final")
    try:
        model.load_state_dict(final)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CorruptFileError(
            f"{d.path / 'final.safetensors'}: the weights do not fit {spec.model} for input "
            f"{shape} and {classes} classes ({first})"
        ) from None
    mask = Mask.load(d.path / "mask.safetensors", model)
    mask.apply(model)
    model.eval()
    return Ticket(
        model=model,
        mask=mask,
        start=d.weights("start"),
        rewind=d.weights("rewind") if d.has("rewind") else None,
        spec=spec,
        metrics=d.metrics(),
        level=level,
        control=control,
        path=d.path,
        input_shape=shape,
        num_classes=classes,
        mean=tuple(info.get("mean") or ()),
        std=tuple(info.get("std") or ()),
    )
