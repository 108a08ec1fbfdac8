"""The pieces every method composes: train a mask from a start point, score, select, record a level."""

from __future__ import annotations

import copy
import os
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn

from ticketlab.config.spec import ExperimentSpec
from ticketlab.criteria import ScoringContext, is_data_aware, score
from ticketlab.data import Dataset
from ticketlab.data.batches import pruning_batches
from ticketlab.files import atomic_write_json
from ticketlab.masks import LayerCollapseError, Mask, layer_collapse, select
from ticketlab.methods.controls import CONTROLS
from ticketlab.methods.cost import Cost, measure
from ticketlab.methods.registry import Resolved
from ticketlab.models import StateDict, initialize, snapshot
from ticketlab.models.mlp import MLP
from ticketlab.schedules import multishot_densities
from ticketlab.seeding import seed_for
from ticketlab.store import LevelDir, RunDir
from ticketlab.training import stack_choice
from ticketlab.training.loop import Progress, TrainResult, steps_per_epoch, train
from ticketlab.training.stacked import train_many

Log = Callable[[str], None]
STACK_ENV = "TICKETLAB_STACK_CONTROLS"
STACK_CHOICES = ("auto", "on", "off")


def stack_controls(model: nn.Module) -> str:
    """How a level's pending controls train: ``"stack"`` (together, one ``train_many``), ``"alone"`` (one at
    a time) or ``"measure"`` (whichever :func:`~ticketlab.training.stack_choice.decide` measures faster on
    this machine). ``$TICKETLAB_STACK_CONTROLS``: ``auto`` (default: measure), ``on`` (stack) or ``off``.
    Only MLPs stack (their stacked GEMMs; convolutional models stack through vmap, measured slower per
    model than one at a time on CPU: Conv-6 in benchmarks/README.md). At a sparse level the controls can
    take the sparse path (``training.sparse``) alone or stacked (one block-diagonal CSR): the measurement,
    keyed by the masks' densities, decides."""
    choice = os.environ.get(STACK_ENV, "auto").strip().lower() or "auto"
    if choice not in STACK_CHOICES:
        raise ValueError(f"{STACK_ENV} must be one of {', '.join(STACK_CHOICES)}; got {choice!r}")
    if choice == "off" or not isinstance(model, MLP):
        return "alone"
    return "stack" if choice == "on" else "measure"


class Paused(Exception):
    """A run stopped before computing a level because its job's ``budget`` of levels was spent: the levels
    finished so far are on disk and the run resumes from them elsewhere (a sweep's share of a run,
    ``ticketlab.sweep.balance``). Not a failure."""

    def __init__(self, level: int, computed: int) -> None:
        super().__init__(f"paused before level {level} after computing {computed} levels here")
        self.level, self.computed = level, computed


@dataclass
class Job:
    """One experiment in progress: its spec, data, working model, initial weights and run directory.

    ``budget``: how many levels (tickets, level 0 included; controls ride with their level) this process may
    compute; the next level it would compute raises :class:`Paused` instead, at the same point where a killed
    run resumes (``resume``), so a paused and resumed run writes what an uninterrupted one writes."""

    spec: ExperimentSpec
    data: Dataset
    model: nn.Module
    init_state: StateDict
    run: RunDir
    progress: Progress | None = None
    log: Log = lambda message: None
    rows: list[dict[str, Any]] = field(default_factory=list)
    dense: dict[str, Any] | None = None  # level 0's row, for the winning-ticket flag
    env: dict[str, Any] = field(default_factory=dict)  # what can change the numbers here (hardware.environment)
    budget: int | None = None  # levels to compute here before pausing (None: to the end)
    computed: int = 0  # levels computed (not read back) here

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps in one pass over the training split: what turns ``'2ep'`` into steps."""
        return steps_per_epoch(len(self.data.x_train), self.spec.recipe.batch_size)

    @property
    def total_steps(self) -> int:
        """The recipe's training length T in steps."""
        return self.spec.recipe.total_steps(self.steps_per_epoch)

    # -- scoring and selection -----------------------------------------------------------------------
    def context(self) -> ScoringContext:
        method = self.spec.method
        batches: list = []
        if self.criterion_is_data_aware():
            batches = pruning_batches(
                self.data, method.pruning_batches, method.pruning_samples_per_class, self.spec.seed
            )
        return ScoringContext(
            batches=batches,
            input_shape=self.data.input_shape,
            initial=self.init_state,
            seed=self.spec.seed,
            options={"include_bias": method.include_bias},
        )

    def criterion_is_data_aware(self) -> bool:
        return is_data_aware(self.criterion)

    @cached_property
    def resolved(self) -> Resolved:
        """The method, criterion and rounds the spec runs as (each level records them)."""
        return Resolved.of(self.spec.method)

    @property
    def criterion(self) -> str:
        """The criterion the method scores with (an error for a method that uses none)."""
        if self.resolved.criterion is None:
            raise ValueError(f"method {self.spec.method.name!r} selects its masks by no criterion")
        return self.resolved.criterion

    def prune(self, mask: Mask, density: float, rounds: int, level: int) -> tuple[Mask, dict[str, torch.Tensor], Cost]:
        """Score the model as it stands and select ``density``, in ``rounds`` re-scored steps from the
        mask's density (multi-shot: UMS at initialisation, IMS inside iterative pruning). Returns the mask,
        the last scores and what scoring cost (forward passes and seconds, ``methods.cost``)."""
        with measure(self.model) as meter:
            ctx = self.context()
            method = self.spec.method
            scores: dict[str, torch.Tensor] = {}
            for r, d in enumerate(multishot_densities(density, rounds, method.round_schedule, start=mask.density())):
                mask.apply(self.model)
                scores = score(self.criterion, self.model, mask, ctx)
                mask = select(scores, d, method.scope, previous=mask, seed=seed_for(self.spec.seed, level, r))
            mask.apply(self.model)
        return mask, scores, meter.cost()

    def prune_initial(self, density: float, level: int) -> tuple[Mask, dict[str, torch.Tensor]]:
        """The spec's criterion's mask of the initial weights at ``density``, in its rounds (as ``multishot``),
        and its last scores; the model is left at its initial weights. (The score-training methods' start
        from a criterion, ``score_init: criterion``.)"""
        self.model.load_state_dict(self.init_state)
        mask, last, _ = self.prune(Mask.ones(self.model, self.spec.exempt), density, self.resolved.rounds, level)
        self.model.load_state_dict(self.init_state)
        return mask, last

    def training_cost(self, row: Mapping[str, Any]) -> Cost:
        """The weight training a recorded level did (its steps, to where it stopped, and its seconds)."""
        stopped = row.get("stopped_step")
        steps = (row["end_step"] if stopped is None else stopped) - row["start_step"]
        return Cost.of_training(steps, self.spec.recipe.batch_size, row.get("train_time") or 0.0)

    # -- training and recording ----------------------------------------------------------------------
    def train(
        self, mask: Mask, start: StateDict, start_step: int, end_step: int, snapshot_at: int | None
    ) -> TrainResult:
        self.model.load_state_dict(start)
        return train(
            self.model,
            self.data,
            self.spec.recipe,
            mask=mask,
            seed=self.spec.seed,
            start_step=start_step,
            end_step=end_step,
            snapshot_steps=() if snapshot_at is None else (snapshot_at,),
            end_on_best=self.spec.end_on_best,
            progress=self.progress,
        )

    def record(
        self,
        level: int,
        mask: Mask,
        result: TrainResult,
        start: StateDict,
        *,
        target: float,
        score_time: float = 0.0,
        control: str | None = None,
        rewind: StateDict | None = None,
        scores: dict[str, torch.Tensor] | None = None,
        cost: Cost | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write a finished level (mask, start and final weights, metrics) and return its row. ``cost``: what
        its mask cost to find (``methods.cost``; none = the dense mask, 0); ``extra``: method-specific metrics.

        ``time_s``: where the level's seconds went: ``train`` (training steps), ``evaluate`` (the evaluations
        during training), ``score`` (this level's own scoring), ``write`` (recording: the layer-collapse check,
        the weight snapshot and the files, ``metrics.json`` aside); ``stacked``: models it trained with."""
        # long: the one row of every field a level records, listed in full
        began = time.perf_counter()
        collapse = layer_collapse(self.model, mask, self.data.input_shape)
        final = result.final
        es = result.early_stop_step
        row: dict[str, Any] = {
            "level": level,
            "control": control or "",
            "target_density": target,
            "density": mask.density(),
            "sparsity": mask.sparsity(),
            "kept": mask.kept(),
            "total": mask.total(),
            "test_acc": final.get("test_acc"),
            "test_loss": final.get("test_loss"),
            "val_acc": final.get("val_acc"),
            "val_loss": final.get("val_loss"),
            "early_stop_step": None if es is None else es - result.start_step,
            "early_stop_test_acc": result.early_stop.get("test_acc"),
            "start_step": result.start_step,
            "end_step": result.end_step,
            "stopped_step": result.stopped_step,
            "train_time": result.wall_time,
            "score_time": score_time,
            "time_s": {
                "train": max(0.0, result.wall_time - result.eval_time),
                "evaluate": result.eval_time,
                "score": score_time,
                "write": 0.0,  # measured by LevelDir.write, just before metrics.json
            },
            "stacked": result.stacked,
            "collapsed": collapse.collapsed,
            "empty_layers": collapse.empty_layers,
            "layer_densities": mask.layer_densities(),
            "history": result.history,
            "method_key": self.resolved.method_key,
            "criterion": self.resolved.criterion,
            "rounds": self.resolved.rounds,
            "env": _level_env(self.env, result.sparse_training),
            **(cost or Cost()).metrics(len(self.data.x_train)),
            **({"sparse_training": result.sparse_training} if result.sparse_training else {}),
            # which layers Adam stepped over their kept weights only (hardware.adam_choice): equal to the dense
            # step to float tolerance, measured per machine, so recorded (not a set-up of its own)
            **({"compact_adam": result.compact_adam} if result.compact_adam is not None else {}),
            **(extra or {}),
        }
        if level == 0 and not control:
            self.dense = row
        row["winning"] = self.is_winning(row)
        weights = {"start": start, "final": snapshot(self.model)}
        if rewind is not None:
            weights["rewind"] = rewind
        self.run.level(level, control).write(
            mask, weights, row, scores if self.spec.save_scores else None, timed_from=began
        )
        self.rows.append(row)
        self.computed += not control
        self.log(self._describe(row))
        return row

    def is_winning(self, row: dict[str, Any]) -> bool | None:
        """003: a ticket is winning when its test accuracy at its early-stopping iteration (minimum validation
        loss) is at least the dense run's test accuracy at the dense run's early-stopping iteration, and it
        stops early no later than the dense run. The dense run itself (level 0) and controls are no
        candidates, and without a validation split the flag cannot be computed: None."""
        dense = self.dense
        if row["level"] == 0 or row["control"] or dense is None:
            return None
        acc, dense_acc = row.get("early_stop_test_acc"), dense.get("early_stop_test_acc")
        step, dense_step = row.get("early_stop_step"), dense.get("early_stop_step")
        if acc is None or dense_acc is None or step is None or dense_step is None:
            return None
        return bool(acc >= dense_acc and step <= dense_step)

    def resume(self, level: int, control: str | None = None) -> dict[str, Any] | None:
        """The row of a finished level, or None if it must be (re)computed; :class:`Paused` when a level must be
        computed and the job's ``budget`` is spent."""
        d: LevelDir = self.run.level(level, control)
        if not d.done:
            if not control and self.budget is not None and self.computed >= self.budget:
                raise Paused(level, self.computed)
            return None
        row = d.metrics()
        if level == 0 and not control:
            own = {
                "method_key": self.resolved.method_key,
                "criterion": self.resolved.criterion,
                "rounds": self.resolved.rounds,
            }
            if any(row.get(k) != v for k, v in own.items()):  # a dense level shared by another method's run
                row.update(own)
                atomic_write_json(d.path / "metrics.json", row)
            self.dense = row
        self.rows.append(row)
        self.log(self._describe(row) + " (already done)")
        return row

    def counts(self) -> dict[str, int]:
        """What ``done.json`` records: the run's levels (level 0 included) and, apart, its control trainings."""
        return {
            "levels": len({row["level"] for row in self.rows}),
            "controls": sum(bool(row.get("control")) for row in self.rows),
        }

    def check_collapse(self, mask: Mask, level: int) -> None:
        if self.spec.method.fail_on_collapse:
            report = layer_collapse(self.model, mask, self.data.input_shape)
            if report.collapsed:
                raise LayerCollapseError(
                    f"level {level} (density {mask.density():.4g}) collapsed: empty layers {report.empty_layers}, "
                    f"disconnected={report.disconnected}"
                )

    # -- controls ------------------------------------------------------------------------------------
    def run_controls(
        self,
        level: int,
        mask: Mask,
        start: StateDict,
        dense_start: StateDict,
        start_step: int,
        end_step: int,
        target: float,
        cost: Cost | None = None,
    ) -> None:
        """Train every control of the spec on the level's ticket over the ticket's steps (003: trained exactly
        like it); finished controls are read back. A control's mask is made from the ticket's: ``cost``.
        Several pending controls train together in one stack (:meth:`train_together`) where
        :func:`stack_controls` says so, or measures it faster."""
        pending: list[tuple[str, Mask, StateDict]] = []
        for name in self.spec.controls:
            if self.resume(level, name) is not None:
                continue
            g = torch.Generator().manual_seed(seed_for(self.spec.seed, level, zlib.crc32(name.encode())))
            fresh_model_seed = seed_for(self.spec.seed, 99, level) % (1 << 31)
            initialize(self.model, self.spec.init, seed=fresh_model_seed)
            fresh = snapshot(self.model)
            pending.append((name, *CONTROLS.get(name)(mask, start, dense_start, fresh, g)))
        way = stack_controls(self.model) if len(pending) > 1 else "alone"
        if way == "measure":
            device = next(self.model.parameters()).device
            masks = [c_mask for _, c_mask, _ in pending]
            verdict = stack_choice.decide(
                self.model, masks, self.spec.recipe, self.data.input_shape, self.data.num_classes, device
            )
            self.log(verdict.describe())
            way = "stack" if verdict.stack else "alone"
        if way == "stack":
            trained = self.train_together([(c_mask, c_start) for _, c_mask, c_start in pending], start_step, end_step)
            for (name, c_mask, c_start), (c_result, final) in zip(pending, trained):
                self.model.load_state_dict(final)
                self.record(level, c_mask, c_result, c_start, target=target, control=name, cost=cost)
            return
        for name, c_mask, c_start in pending:
            c_result = self.train(c_mask, c_start, start_step, end_step, None)
            self.record(level, c_mask, c_result, c_start, target=target, control=name, cost=cost)

    def train_together(
        self, trainings: Sequence[tuple[Mask, StateDict]], start_step: int, end_step: int
    ) -> list[tuple[TrainResult, StateDict]]:
        """Train (mask, start) pairs over the same steps as :meth:`train` would one by one, stacked in one
        ``train_many`` on copies of the model (each result equal to its own :meth:`train` to float tolerance);
        each result with its final weights."""
        models = [copy.deepcopy(self.model) for _ in trainings]
        for model, (_, start) in zip(models, trainings):
            model.load_state_dict(start)
        results = train_many(
            models,
            self.data,
            self.spec.recipe,
            masks=[mask for mask, _ in trainings],
            seeds=[self.spec.seed] * len(trainings),
            start_step=start_step,
            end_step=end_step,
            end_on_best=self.spec.end_on_best,
            progress=self.progress,
        )
        return [(result, snapshot(model)) for result, model in zip(results, models)]

    @staticmethod
    def _describe(row: dict[str, Any]) -> str:
        ctl = f" [{row['control']}]" if row.get("control") else ""
        acc = row.get("test_acc")
        return (
            f"level {row['level']}{ctl}: density {row['density']:.4f}, test acc {acc:.4f}"
            if acc is not None
            else f"level {row['level']}{ctl}"
        )


def _level_env(env: dict[str, Any], sparse_training: dict[str, Any] | None) -> dict[str, Any]:
    """The run's environment, plus ``sparse_path: "on"`` when a layer of this level trained or was evaluated
    on the sparse path (``training.sparse``): it agrees with the dense path to float tolerance per step, which
    pruning levels carry on (and a validation loss can pick the kept weights), so results count such a
    level as a set-up of its own, not as another seed."""
    layers = (sparse_training or {}).get("layers", {})
    on = any(layer.get("sparse") or layer.get("eval_sparse") for layer in layers.values())
    return {**env, "sparse_path": "on"} if on else env
