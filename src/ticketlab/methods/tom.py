"""Training Optimal Masks (002 §3.3.1): learn the mask by gradient descent on per-weight logits.

1. Pretrain the dense network for 10% of the run (002: "until stability is achieved", after Frankle et al.
   2020b); its weights w_p are then frozen. Here the pretraining is the first ``pretrain``·T steps of the
   dense run of level 0 (the same steps, so it costs nothing extra); w_p is that run's snapshot, stored as
   level 0's ``rewind`` weights.
2. Train the masks: one logit b_i per prunable weight. Every step draws c_i ~ Bernoulli(σ(b_i)), runs the
   network with weights w_p ⊙ c, and, as the straight-through estimator of Bengio et al. 2013 prescribes in
   002, uses the gradient with respect to the sample, ∂L/∂c, as the gradient of b:

       b <- clip(b - α·(clip(∂L/∂c, -0.1, 0.1) + ∂P/∂b), -15, 15)

   L is the batch's mean cross-entropy; P is the penalty that makes σ(b) decay (002: "L2 or L1 penalty is
   needed"): ``l1`` P = λ·Σσ(b), ``l2`` P = λ·Σσ(b)². The penalty depends on b, not on c, so its exact
   gradient is added after the clipping of ∂L/∂c (002 clips "the gradients of the loss function with respect
   to masks").
3. At evaluation the mask keeps the top density·N logits (002's threshold x_t, made exact with the seeded
   tie-breaking of :func:`ticketlab.masks.select`).
4. Train the parameters: the mask fixed, the weights start from w_p ⊙ mask and train for the full run
   (the recipe's T steps, its LR schedule from the start).

002 leaves open, and we choose (all options of ``--method tom``): the logits start at ``logit_init`` = 3
(σ = 0.95, so mask training starts from almost the dense pretrained network, whose accuracy 002 expects
to see during mask training); the update is 002's plain gradient step with α = ``mask_lr``; the mask
phase lasts ``mask_steps`` (default: T, one training run); ``penalty_weight`` λ defaults to 3e-4 per
weight, ``mask_lr`` to 20 (measured in docs/notes/supermask_tom.md: on 784-400-400-400-10 at 4% density,
λ = 3e-4 retrained to 86.5% test accuracy and λ = 1e-3 to 84.0%, though 1e-3 drives mean σ(b) near the
target and its untrained top-k scores higher). One mask phase serves every target density: the penalty
does not depend on it, only the top-k does.

Run directory: level 0 = dense run (the winning-ticket reference), then one level per target density;
``tom_logits.safetensors`` holds the learned b and ``tom_mask_phase.json`` its learning curve (val accuracy
of the top-k mask on w_p at every target density, mean σ(b)), so a resumed run skips the mask phase.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.func import functional_call

from ticketlab.config.recipe import DurationField
from ticketlab.data import Dataset
from ticketlab.files import atomic_write_json, load_tensors, save_tensors
from ticketlab.masks import Mask, Scope, masked_state, prunable_parameters, select
from ticketlab.methods.context import Job
from ticketlab.methods.cost import Cost, measure
from ticketlab.methods.levels import Trained, dense_level, pruned_level
from ticketlab.methods.registry import DEFAULT_CRITERIA, METHODS, OPTIONS, options_of
from ticketlab.models import StateDict
from ticketlab.seeding import seed_for
from ticketlab.training.core import Batches, is_eval_step
from ticketlab.training.evaluate import evaluate

LOGITS_FILE = "tom_logits.safetensors"
PHASE_FILE = "tom_mask_phase.json"


@OPTIONS.register("tom")
class TomOptions(BaseModel):
    """Options of ``--method tom`` (``-o key=value``); 002 §3.3.1 fixes the clips and the 10% pretraining."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pretrain: float = Field(0.1, ge=0, lt=1, description="fraction of the run trained dense before the weights freeze")
    mask_steps: DurationField | None = Field(None, description="length of the mask phase (default: the recipe's T)")
    mask_lr: float = Field(20.0, gt=0, description="step size α of the logit update")
    logit_init: float = Field(3.0, description="initial logit b of every weight (sigmoid(3) = 0.95)")
    grad_clip: float = Field(0.1, gt=0, description="clip of dL/dc before the step (002: [-0.1, 0.1])")
    logit_clip: float = Field(15.0, gt=0, description="clip of the logits (002: [-15, 15])")
    penalty: Literal["l1", "l2"] = Field("l1", description="penalty on sigmoid(b): l1 sum or l2 sum of squares")
    penalty_weight: float = Field(3e-4, ge=0, description="weight lambda of the penalty, per weight")


def penalty_grad(logits: torch.Tensor, kind: str, weight: float) -> torch.Tensor:
    """∂P/∂b for P = weight·Σσ(b) (``l1``; σ > 0, so |σ| = σ) or weight·Σσ(b)² (``l2``)."""
    p = torch.sigmoid(logits)
    dp = p * (1 - p)
    if kind == "l1":
        return weight * dp
    if kind == "l2":
        return weight * 2 * p * dp
    raise ValueError(f"penalty must be 'l1' or 'l2', got {kind!r}")


@dataclass
class MaskStep:
    """What one mask-training step saw: the loss, the sampled masks and the raw ∂L/∂c (for tests, logs)."""

    loss: float
    sample: dict[str, torch.Tensor]
    grad: dict[str, torch.Tensor]


def mask_step(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    logits: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator,
    options: TomOptions,
) -> MaskStep:
    """One update of the logits in place (002 §3.3.1): sample c, straight-through ∂L/∂c, clip, step, clip b.

    ``state`` holds the frozen weights and buffers for ``functional_call`` (buffers may be updated in place
    by BatchNorm in train mode: they then follow the sampled networks).
    """
    sample = {n: torch.bernoulli(torch.sigmoid(b), generator=generator).requires_grad_() for n, b in logits.items()}
    inputs = dict(state)
    for name, c in sample.items():
        inputs[name] = state[name] * c
    loss = F.cross_entropy(functional_call(model, inputs, (x,)), y)
    grads = torch.autograd.grad(loss, list(sample.values()))
    with torch.no_grad():
        for (_name, b), g in zip(logits.items(), grads):
            step = g.clamp(-options.grad_clip, options.grad_clip)
            if options.penalty_weight:
                step = step + penalty_grad(b, options.penalty, options.penalty_weight)
            b.sub_(options.mask_lr * step).clamp_(-options.logit_clip, options.logit_clip)
    return MaskStep(float(loss.detach()), {n: c.detach() for n, c in sample.items()}, dict(zip(logits, grads)))


def topk_mask(logits: dict[str, torch.Tensor], density: float, scope: Scope, seed: int) -> Mask:
    """The evaluation mask: the top density·N logits, exactly (ties in a seeded random order)."""
    return select(logits, density, scope, seed=seed)


def train_logits(
    model: nn.Module,
    weights: StateDict,
    data: Dataset,
    *,
    batch_size: int,
    steps: int,
    options: TomOptions,
    seed: int,
    densities: tuple[float, ...],
    scope: Scope,
    eval_every: int = 0,
    log: Any = None,
) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    """The mask phase: ``steps`` logit updates on the frozen ``weights``; returns (logits, learning curve).

    The curve has one row per ``eval_every`` steps (and the last): mean σ(b) (the expected density) and the
    validation accuracy of the top-k mask at every density of ``densities``.
    """
    device = next(model.parameters()).device
    names = [n for n in prunable_parameters(model) if n in weights]
    logits = {n: torch.full_like(weights[n], options.logit_init, device=device) for n in names}
    state = {k: v.to(device, copy=True) for k, v in weights.items()}
    generator = torch.Generator(device=device).manual_seed(seed_for(seed, 17) % (1 << 63))
    # the trainer core's batches, with a data order and augmentation stream of their own
    batches = Batches(data.to(device), batch_size, [seed_for(seed, 23)], augment_seeds=[seed], salt=29)
    curve: list[dict[str, float]] = []
    was_training = model.training
    model.train()
    for step in range(steps):
        xb, yb = batches(step)
        out = mask_step(model, state, logits, xb[0], yb[0], generator, options)
        done = step + 1
        if is_eval_step(done, steps, eval_every):
            row = {"step": done, "train_loss": out.loss, "mean_sigmoid": _mean_sigmoid(logits)}
            for d in densities:
                row[f"val_acc@{d:g}"] = _eval_mask(model, state, logits, d, scope, seed, data)
            curve.append(row)
            if log is not None:
                accs = ", ".join(f"{k[8:]}: {v:.4f}" for k, v in row.items() if k.startswith("val_acc@"))
                log(
                    f"  mask step {done}/{steps}: loss {out.loss:.4f}, mean σ(b) {row['mean_sigmoid']:.4f}, val acc of top-k {accs}"
                )
    model.train(was_training)
    return {n: b.cpu() for n, b in logits.items()}, curve


def _mean_sigmoid(logits: dict[str, torch.Tensor]) -> float:
    total = sum(float(torch.sigmoid(b.double()).sum()) for b in logits.values())
    return total / sum(b.numel() for b in logits.values())


def _eval_mask(
    model: nn.Module,
    state: StateDict,
    logits: dict[str, torch.Tensor],
    density: float,
    scope: Scope,
    seed: int,
    data: Dataset,
) -> float:
    mask = topk_mask(logits, density, scope, seed)
    model.load_state_dict(masked_state(state, mask))
    return evaluate(model, data.x_val, data.y_val)["acc"]


def _tom(job: Job) -> None:
    spec, method = job.spec, job.spec.method
    options: TomOptions = options_of(method)
    total = job.total_steps
    pretrain = round(options.pretrain * total)

    # level 0: the dense run; its step-`pretrain` snapshot is the pretrained point w_p (002: 10% of the run)
    dense = dense_level(job, total, pretrain)
    pretrained = dense.rewind
    logits, phase = _mask_phase(job, options, pretrained, pretrain)
    # what the masks cost: the pretraining steps (their share of level 0's seconds) and the mask phase
    seconds = (dense.row.get("train_time") or 0.0) * pretrain / max(total, 1)
    cost = Cost.of_training(pretrain, spec.recipe.batch_size, seconds) + phase

    # one level per target density: fix the top-k mask, train w_p ⊙ mask for the full run
    for level, density in enumerate(spec.densities, start=1):
        ticket = partial(_ticket, job, logits, cost, phase.seconds, pretrained, level, density)
        pruned_level(job, level, density, pretrained, ticket)


def _mask_phase(
    job: Job, options: TomOptions, pretrained: StateDict, pretrain: int
) -> tuple[dict[str, torch.Tensor], Cost]:
    """The learned logits and what they cost (``methods.cost``): once for every density (read back when on
    disk)."""
    logits_path = job.run.path / LOGITS_FILE
    if logits_path.exists():
        return load_tensors(logits_path)[0], _phase_cost(job)
    spec, spe = job.spec, job.steps_per_epoch
    steps = options.mask_steps.steps(spe) if options.mask_steps is not None else job.total_steps
    eval_every = spec.recipe.eval_interval(spe)
    job.log(f"training masks for {steps} steps on the weights after {pretrain} pretraining steps")
    job.model.load_state_dict(pretrained)
    with measure(job.model) as meter:
        logits, curve = train_logits(
            job.model,
            pretrained,
            job.data,
            batch_size=spec.recipe.batch_size,
            steps=steps,
            options=options,
            seed=spec.seed,
            densities=spec.densities,
            scope=spec.method.scope,
            eval_every=eval_every,
            log=job.log,
        )
    cost = meter.cost()
    phase = {
        "pretrain_steps": pretrain,
        "mask_steps": steps,
        "time": cost.seconds,
        "cost": asdict(cost),
        "curve": curve,
    }
    atomic_write_json(job.run.path / PHASE_FILE, phase)
    save_tensors(logits_path, logits, {"kind": "tom_logits"})
    return logits, cost


def _ticket(
    job: Job,
    logits: dict[str, torch.Tensor],
    cost: Cost,
    mask_time: float,
    pretrained: StateDict,
    level: int,
    density: float,
) -> Trained:
    mask = topk_mask(logits, density, job.spec.method.scope, seed_for(job.spec.seed, level))
    job.check_collapse(mask, level)
    start = masked_state(pretrained, mask)
    return Trained(mask, start, job.train(mask, start, 0, job.total_steps, None), mask_time, logits, cost=cost)


def _phase_cost(job: Job) -> Cost:
    import json

    path = job.run.path / PHASE_FILE
    phase = json.loads(path.read_text()) if path.exists() else {}
    return Cost(**phase["cost"]) if "cost" in phase else Cost(seconds=float(phase.get("time", 0.0)))


METHODS.register("tom")(_tom)
DEFAULT_CRITERIA["tom"] = None  # the masks are learned (logits), not selected by scores
