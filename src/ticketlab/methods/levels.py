"""Levels: the unit every method records, and the one level loop of the iterative methods.

A run directory holds level 0 (the dense network: baseline, rewind point, winning-ticket reference) and
one level per pruned ticket, each with its controls. Every method writes its levels through
``dense_level`` and ``pruned_level``, which skip a finished level and read it back instead (OpenLTH:
every stage skips itself when its output exists), so a killed run resumes where it stopped.

``run_levels`` is GIMP (002 algorithm 5): level l >= 1 prunes level l-1's trained weights to the next
density of the iterative schedule, rewinds the weights and the LR schedule, retrains, records. An
iterative method is a :class:`Gimp` whose hooks (``prune``, ``start``, ``train``, ``finished``) it
overrides: the rewinding presets use the defaults (``iterative``), double- and scored-pruning (001 §5)
change how the mask is picked, where pruned weights restart and what happens during training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any

import torch

from ticketlab.masks import Mask, masked_state
from ticketlab.methods.context import Job
from ticketlab.methods.cost import Cost
from ticketlab.models import StateDict
from ticketlab.schedules import iterative_densities
from ticketlab.store import LevelDir
from ticketlab.training.loop import TrainResult


@dataclass
class Level:
    """A finished level as its directory holds it: what later levels and the controls start from (read
    back from disk, so a fresh and a resumed run continue from the same tensors)."""

    dir: LevelDir
    row: dict[str, Any]

    @property
    def index(self) -> int:
        return self.row["level"]

    @property
    def end_step(self) -> int:
        return self.row["end_step"]

    @cached_property
    def mask(self) -> Mask:
        return self.dir.mask()

    @cached_property
    def start(self) -> StateDict:
        return self.dir.weights("start")

    @cached_property
    def final(self) -> StateDict:
        return self.dir.weights("final")

    @cached_property
    def rewind(self) -> StateDict:
        return self.dir.weights("rewind")


@dataclass
class Trained:
    """A level just trained, as ``Job.record`` writes it. ``rewind_at``: the step whose snapshot is kept as
    the level's ``rewind`` weights (None: no rewind weights). ``cost``: what its mask cost to find, all of it
    (``methods.cost``); ``score_time``: the seconds of this level's own scoring."""

    mask: Mask
    start: StateDict
    result: TrainResult
    score_time: float = 0.0
    scores: dict[str, torch.Tensor] | None = None
    rewind_at: int | None = None
    cost: Cost = field(default_factory=Cost)
    extra: dict[str, Any] | None = None


def record(job: Job, index: int, target: float, trained: Trained) -> dict[str, Any]:
    t = trained
    rewind = None if t.rewind_at is None else t.result.snapshots[t.rewind_at]
    return job.record(
        index,
        t.mask,
        t.result,
        t.start,
        target=target,
        score_time=t.score_time,
        rewind=rewind,
        scores=t.scores,
        cost=t.cost,
        extra=t.extra,
    )


def dense_level(job: Job, steps: int, rewind_at: int | None = None) -> Level:
    """Level 0: the dense network trained from the initialisation for ``steps``. ``rewind_at`` keeps that
    step's snapshot as the level's ``rewind`` weights: GIMP's rewind point (002 algorithm 5), TOM's
    pretrained weights w_p (002 §3.3.1)."""
    row = job.resume(0)
    if row is None:
        mask = Mask.ones(job.model, job.spec.exempt)
        result = job.train(mask, job.init_state, 0, steps, rewind_at)
        row = record(job, 0, 1.0, Trained(mask, job.init_state, result, rewind_at=rewind_at))
    return Level(job.run.level(0), row)


def pruned_level(job: Job, index: int, target: float, dense_start: StateDict, build: Callable[[], Trained]) -> Level:
    """Level ``index`` >= 1: read back when finished, else pruned and trained by ``build`` and recorded; then
    its controls (003), which reinitialise from ``dense_start`` where they need the dense starting point.
    Controls run after a resume too: those a kill interrupted are trained, finished ones read back."""
    row = job.resume(index)
    trained = build() if row is None else None
    if trained is not None:
        row = record(job, index, target, trained)
    assert row is not None
    level = Level(job.run.level(index), row)
    # the controls start from the ticket's mask and weights: in memory when just trained, else as stored
    mask, start = (trained.mask, trained.start) if trained is not None else (level.mask, level.start)
    cost = Cost.recorded(level.row)
    job.run_controls(index, mask, start, dense_start, level.row["start_step"], level.end_step, target, cost)
    return level


@dataclass(frozen=True)
class GimpSteps:
    """GIMP's step counts (002 algorithm 5): level 0 trains ``train`` steps; every later level rewinds the
    weights ``rewind_params`` steps back along the previous level's run, the LR schedule ``rewind_lr`` steps
    back from where it ended, and retrains ``retrain`` steps."""

    train: int
    retrain: int
    rewind_params: int
    rewind_lr: int


class Gimp:
    """The hooks of one iterative method, with GIMP's defaults (002 algorithm 5): prune the previous level's
    trained weights with the spec's criterion (in ``rounds`` re-scored steps: IMS), start from its rewind
    snapshot, train. Subclasses override the hooks they change."""

    def __init__(self, job: Job, steps: GimpSteps) -> None:
        self.job, self.steps = job, steps

    def prune(self, previous: Level, density: float, index: int) -> tuple[Mask, dict[str, torch.Tensor], Cost]:
        """The level's mask, the scores it was selected by, and what that cost beyond the previous level's
        training (``run_levels`` adds that: the mask derives from it)."""
        self.job.model.load_state_dict(previous.final)
        return self.job.prune(previous.mask, density, self.job.resolved.rounds, index)

    def start(self, previous: Level, mask: Mask) -> StateDict:
        """The weights the level trains from: the previous level's rewind snapshot, pruned."""
        return masked_state(previous.rewind, mask)

    def train(
        self, index: int, mask: Mask, start: StateDict, begin: int, stop: int, snap: int
    ) -> tuple[TrainResult, Mask]:
        """Train from step ``begin`` to ``stop`` keeping the snapshot of step ``snap``; returns the result and
        the mask the trained weights have (the level's mask, unless training changes it)."""
        return self.job.train(mask, start, begin, stop, snap), mask

    def finished(self, level: Level, last: bool) -> None:
        """Called once every level (the dense one included) is finished or read back."""


def run_levels(job: Job, method: Gimp) -> None:
    """Level 0 dense, then one level per density of the iterative schedule (every target is a level,
    ``schedules.iterative_densities``), each pruned, rewound and retrained by ``method``'s hooks."""
    s = method.steps
    previous = dense_level(job, s.train, s.train - s.rewind_params)
    dense_start = previous.rewind
    method.finished(previous, last=False)
    densities = iterative_densities(job.spec.densities, job.spec.method.K)
    for index, density in enumerate(densities, start=1):
        previous = pruned_level(
            job, index, density, dense_start, partial(_gimp_level, method, previous, density, index)
        )
        method.finished(previous, last=index == len(densities))


def _gimp_level(method: Gimp, previous: Level, density: float, index: int) -> Trained:
    s, job = method.steps, method.job
    mask, scores, own = method.prune(previous, density, index)
    # the mask derives from the previous level's training, and that level's mask from the ones before
    cost = Cost.recorded(previous.row) + job.training_cost(previous.row) + own
    job.check_collapse(mask, index)
    start = method.start(previous, mask)
    begin = previous.end_step - s.rewind_lr
    stop = begin + s.retrain
    snap = stop - s.rewind_params
    result, mask = method.train(index, mask, start, begin, stop, snap)
    return Trained(mask, start, result, own.seconds, scores, rewind_at=snap, cost=cost)
