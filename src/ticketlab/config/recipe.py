"""Training recipes: optimiser, learning-rate schedule and length of one training run, as frozen data."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator
from torch import nn

from ticketlab.config.duration import Duration

DurationField = Annotated[Duration, BeforeValidator(Duration.parse), PlainSerializer(str, return_type=str)]

AUTO = "auto"
AUTO_EVALS = 10  # eval_every "auto": at least this many evaluations per training


def _eval_every(value: object) -> object:
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        return Duration.parse(value)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"{exc}, or 'auto' (at least {AUTO_EVALS} evaluations per training, one per epoch)") from None


EvalEveryField = Annotated[
    Duration | Literal["auto"], BeforeValidator(_eval_every), PlainSerializer(str, return_type=str)
]


class EarlyStop(BaseModel):
    """End training once the validation loss has not improved for ``patience`` evaluations (of the recipe's
    ``eval_every``), but not before ``min_steps`` of the run. A run that stops records ``stopped_step``; its
    weights are those of the stop (or of the best evaluation, with ``end_on_best``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    patience: int = Field(gt=0, description="evaluations without a lower validation loss before training ends")
    min_steps: DurationField = Duration.parse("0it")


class Recipe(BaseModel):
    """How to train: everything but the model, data and mask.

    ``weight_decay`` is decoupled from the loss (added to the gradient as ``wd * w``); ``l2`` adds
    ``l2 * ||w||^2`` to the loss, i.e. ``2 * l2 * w`` to the gradient: the two differ by a factor 2
    (002 §3.4), so both are offered.

    ``early_stop`` (default off: every run trains its full length) ends a run on patience (:class:`EarlyStop`).
    000's ISS trains each level "until an early stopping criterion is met" (000 §5.1.1; App. A.2 takes the
    mechanism from OpenLTH); 004 §3.3 trains 20,000 iterations, evaluating the validation loss every 100, and
    retrains to the iteration of its minimum (patience ends the first training once that minimum is behind
    it); 003 reports that iteration (the early-stop step, recorded for every run, stopped early or not).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: DurationField = Duration.parse("20ep")
    batch_size: int = Field(60, gt=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0)
    l2: float = Field(0.0, ge=0)
    lr_schedule: Literal["constant", "multistep", "cosine"] = "constant"
    milestones: tuple[DurationField, ...] = ()
    gamma: float = Field(0.1, gt=0)
    warmup: DurationField = Duration.parse("0it")
    # "auto" = min(1ep, T/10) (``eval_interval``) places the early-stop step finely enough for 003's winning
    # flag in short runs too. It is what the CLI and the API ask for by default; the field's default stays
    # 1ep, so every existing run id (which leaves out fields at their default) keeps the cadence it ran with.
    eval_every: EvalEveryField | None = Duration.parse("1ep")
    early_stop: EarlyStop | None = None

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if self.steps.amount <= 0:
            raise ValueError(f"steps: {self.steps} trains nothing; give a length above 0, e.g. 20ep or 1500it")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer 'sgd' with momentum > 0")
        if self.milestones and self.lr_schedule != "multistep":
            raise ValueError("milestones are only used with lr_schedule 'multistep'")
        if self.early_stop is not None and self.eval_every is None:
            raise ValueError("early_stop needs eval_every: patience counts evaluations")
        return self

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.steps.steps(steps_per_epoch)

    def eval_interval(self, steps_per_epoch: int) -> int:
        """Steps between evaluations (0: only at the end of training). ``auto``: min(1 epoch, T // 10) steps
        for the recipe's length T, at least one: at least 10 evaluations per training, one per epoch."""
        if self.eval_every is None:
            return 0
        if self.eval_every == AUTO:
            return max(1, min(steps_per_epoch, self.total_steps(steps_per_epoch) // AUTO_EVALS))
        assert isinstance(self.eval_every, Duration)
        return self.eval_every.steps(steps_per_epoch)

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        """Learning rate for the update that takes the weights from ``step`` to ``step + 1``.

        Past the end of the schedule the last learning rate is kept: finetuning (002 algorithm 1) goes on
        at the final learning rate of the training it continues.
        """
        total = self.total_steps(steps_per_epoch)
        step = min(step, max(total - 1, 0))
        warmup = self.warmup.steps(steps_per_epoch)
        factor = 1.0
        if warmup and step < warmup:
            factor = (step + 1) / warmup
        if self.lr_schedule == "multistep":
            passed = sum(step >= m.steps(steps_per_epoch) for m in self.milestones)
            factor *= self.gamma**passed
        elif self.lr_schedule == "cosine":
            span = max(total - warmup, 1)
            t = min(max(step - warmup, 0), span)
            factor *= 0.5 * (1 + math.cos(math.pi * t / span))
        return self.lr * factor

    def make_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        """SGD with the multi-tensor (foreach) update, Adam with the fused one.

        SGD is not ``fused=True``: on CPU (torch 2.13) the fused SGD step gave different weights for the same
        seed in repeated runs of one process. Fused Adam passes that test (test_methods.py::
        test_repeated_runs_in_one_process_are_bit_identical) and is much faster than foreach Adam, whose
        step was a large share of an IMP level (figures: benchmarks/README.md).
        """
        if self.optimizer == "sgd":
            return torch.optim.SGD(
                params,
                lr=self.lr,
                momentum=self.momentum,
                nesterov=self.nesterov,
                weight_decay=self.weight_decay,
                foreach=True,
            )
        return torch.optim.Adam(params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay, fused=True)
