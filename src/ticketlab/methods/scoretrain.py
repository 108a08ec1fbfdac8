"""Supermask training: the loop edge-popup and Gem-Miner share. The weights stay frozen at their initial
values; one real-valued score per prunable weight is trained by SGD through a binary mask with a
straight-through gradient (Bengio et al. 2013), as in Ramanujan et al. 2020 (§3, Algorithm 1) and
Sreenivasan et al. 2022 (§3, Algorithm 1).

A :class:`ScoreRule` says how the scores become the mask of the forward pass (value: the binary mask;
gradient: the straight-through estimate), what it adds to the loss, and what it does after each step
(clipping, freezing). One step on a batch (:func:`score_step`):

    m = rule.masks(s);  L = CE(f(x; w ⊙ m), y) + rule.penalty(s);  s <- optimiser step on ∂L/∂s;  rule.after_step

Everything else is the trainer core's: the batches (``training.core.Batches``: seeded order, the dataset's
augmentation; a data stream of its own) and the optimiser and learning-rate schedule of a
:class:`~ticketlab.config.recipe.Recipe` (SGD with momentum and weight decay on the scores, cosine decay).
BatchNorm layers run in train mode: their running statistics follow the masked networks and are returned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.func import functional_call

from ticketlab.config.duration import Duration
from ticketlab.config.recipe import DurationField, Recipe
from ticketlab.data import Dataset
from ticketlab.files import atomic_write_json
from ticketlab.models import StateDict
from ticketlab.models.init import kaiming_std
from ticketlab.seeding import seed_for
from ticketlab.training.core import Batches, steps_per_epoch

Scores = dict[str, torch.Tensor]
SCORE_SALT = 43  # the score phase's data order and augmentation: a stream of its own
CURVE_FILE = "score_curve.json"


class ScoreTrainingOptions(BaseModel):
    """What every supermask-training method takes (``-o key=value``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: DurationField | None = Field(None, description="length of the score training (default: the recipe's)")
    lr: float = Field(0.1, gt=0, description="learning rate of the scores (SGD)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum of the scores")
    weight_decay: float = Field(0.0, ge=0, description="weight decay on the scores")
    lr_schedule: Literal["cosine", "constant"] = Field("cosine", description="learning-rate schedule over the steps")
    batch_size: int | None = Field(None, gt=0, description="batch size (default: the recipe's)")
    weights: Literal["signed_constant", "init"] = Field(
        "signed_constant", description="frozen weights: sign(w_0)·sqrt(2/fan_in) (signed Kaiming constant) or w_0"
    )


class ScoreRule(Protocol):
    """How scores become masks and change besides the optimiser step."""

    def masks(self, scores: Scores) -> Scores:
        """The forward pass's masks: binary in value, differentiable in the scores (straight-through)."""

    def penalty(self, scores: Scores) -> torch.Tensor | float:
        """Added to the loss (0: none)."""

    def after_step(self, done: int, scores: Scores) -> None:
        """After optimiser step number ``done`` (1-based), in place under no_grad."""


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """``hard`` in the forward pass, the gradient of ``soft`` in the backward pass (soft - soft is exactly 0)."""
    return hard + (soft - soft.detach())


def signed_kaiming_constant(initial: StateDict, names: list[str]) -> StateDict:
    """The weights named: sign(w_0)·sqrt(2/fan_in) (Ramanujan et al. 2020 §4.1, "Signed Kaiming Constant";
    a weight of exactly 0 gets +); everything else as in ``initial``."""
    out = {k: v.clone() for k, v in initial.items()}
    for name in names:
        w = initial[name]
        std = kaiming_std(w)
        out[name] = torch.where(w >= 0, std, -std).to(w.dtype)
    return out


def frozen_weights(initial: StateDict, names: list[str], kind: str) -> StateDict:
    return (
        signed_kaiming_constant(initial, names)
        if kind == "signed_constant"
        else {k: v.clone() for k, v in initial.items()}
    )


@contextmanager
def standardised(model: nn.Module, names: list[str], eps: float = 1e-5) -> Iterator[None]:
    """While inside, the modules owning the parameters ``names`` (``layers.0.weight`` -> ``layers.0``)
    standardise their outputs over the batch: (z - mean) / sqrt(var + eps) per output unit or channel
    (dimension 1), the mean and biased variance over every other dimension (batch normalisation without
    affine parameters or running statistics). The modules' weights are not touched; the hooks go at exit."""
    handles = []

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        dims = [d for d in range(output.dim()) if d != 1]
        mean = output.mean(dim=dims, keepdim=True)
        var = output.var(dim=dims, unbiased=False, keepdim=True)
        return (output - mean) / torch.sqrt(var + eps)

    try:
        for name in dict.fromkeys(n.rpartition(".")[0] for n in names):
            handles.append(model.get_submodule(name).register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def score_step(
    model: nn.Module,
    state: StateDict,
    scores: Scores,
    rule: ScoreRule,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    lr: float,
) -> float:
    """One update of the scores in place (see the module docstring); returns the batch's cross-entropy."""
    masks = rule.masks(scores)
    inputs = dict(state)
    for name, m in masks.items():
        inputs[name] = state[name] * m
    loss = F.cross_entropy(functional_call(model, inputs, (x,)), y)
    total = loss + rule.penalty(scores)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return float(loss.detach())


def train_scores(
    model: nn.Module,
    weights: StateDict,
    scores: Scores,
    rule: ScoreRule,
    data: Dataset,
    recipe: Recipe,
    seed: int,
    log: Callable[[str], None] | None = None,
) -> tuple[StateDict, list[dict[str, Any]]]:
    """Train ``scores`` (leaf tensors on the model's device) for ``recipe``'s steps on the frozen ``weights``.
    Returns the state the network ends with (``weights`` with the BatchNorm statistics of the score phase)
    and the training loss averaged over every ``recipe.eval_every`` steps (and the last ones)."""
    device = next(model.parameters()).device
    state = {k: v.to(device, copy=True) for k, v in weights.items()}
    data = data.to(device)
    spe = steps_per_epoch(len(data.x_train), recipe.batch_size)
    steps = recipe.total_steps(spe)
    every = recipe.eval_interval(spe) or steps
    batches = Batches(data, recipe.batch_size, [seed_for(seed, SCORE_SALT)], augment_seeds=[seed], salt=SCORE_SALT)
    optimizer = recipe.make_optimizer(list(scores.values()))
    curve: list[dict[str, Any]] = []
    total, count = 0.0, 0
    was_training = model.training
    model.train()
    try:
        for step in range(steps):
            xb, yb = batches(step)
            total += score_step(model, state, scores, rule, xb[0], yb[0], optimizer, recipe.lr_at(step, spe))
            count += 1
            with torch.no_grad():
                rule.after_step(step + 1, scores)
            if (step + 1) % max(every, 1) == 0 or step + 1 == steps:
                curve.append({"step": step + 1, "train_loss": total / count})
                if log is not None:
                    log(f"  score step {step + 1}/{steps}: train loss {total / count:.4f}")
                total, count = 0.0, 0
    finally:
        model.train(was_training)
    return {k: v.detach().cpu() for k, v in state.items()}, curve


def write_curve(level_dir: Path, curve: list[dict[str, Any]]) -> None:
    """The score phase's learning curve beside the level's files (``score_curve.json``), not in its metrics,
    which stay flat for the results table."""
    level_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(level_dir / CURVE_FILE, curve)


def score_recipe(options: ScoreTrainingOptions, recipe: Recipe) -> Recipe:
    """The recipe of the score phase: the spec's recipe with the options' optimiser, schedule and length."""
    return recipe.model_copy(
        update={
            "steps": options.steps if options.steps is not None else recipe.steps,
            "batch_size": options.batch_size or recipe.batch_size,
            "optimizer": "sgd",
            "lr": options.lr,
            "momentum": options.momentum,
            "nesterov": False,
            "weight_decay": options.weight_decay,
            "l2": 0.0,
            "lr_schedule": options.lr_schedule,
            "milestones": (),
            "warmup": Duration.parse("0it"),
            "early_stop": None,
        }
    )


def criterion_order(
    mask: Mapping[str, torch.Tensor], last: Scores, magnitude: Scores, names: list[str]
) -> torch.Tensor:
    """The ranking of a criterion's mask over the weights of ``names`` (flattened, concatenated): kept weights
    first, then by ``last`` (the criterion's last scores), then by ``magnitude`` (|w_0|), largest first.
    Returns the flat indices in that order; a score-training method starting from a criterion's mask
    (``score_init: criterion``) places its initial values on it."""
    keys = [torch.cat([t[n].detach().flatten().cpu().double() for n in names]) for t in (magnitude, last)]
    kept = torch.cat([mask[n].flatten().cpu().double() for n in names])
    order = torch.arange(kept.numel())
    for key in (keys[0], keys[1], kept):  # least significant first; stable sorts make it lexicographic
        order = order[torch.sort(key[order], descending=True, stable=True).indices]
    return order
