"""One training loop for every method: fixed mask, rewinding, snapshots, early-stopping step.

The dataset lives on the device as whole tensors; a batch is a slice of a seeded ``randperm``. Masks are
enforced the cheap exact way: the weights are masked once at the start and the gradients after every
``backward()``, so pruned weights and their optimiser state stay exactly zero under momentum, weight decay
and Adam (tested).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.training import fused_sgd
from ticketlab.data import Dataset, cifar_augment
from ticketlab.hardware.device import resolve_device
from ticketlab.training.evaluate import evaluate
from ticketlab.hardware.blas import threads_for
from ticketlab.masks import Mask
from ticketlab.models import StateDict, snapshot
from ticketlab.seeding import epoch_order, seed_for
from ticketlab.config.recipe import Recipe

Progress = Callable[[int, int, "dict[str, float] | None"], None]


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    """Steps in one pass over the training split; the last partial batch is dropped."""
    if num_train < batch_size:
        raise ValueError(f"batch_size {batch_size} is larger than the training split ({num_train})")
    return num_train // batch_size


@dataclass(frozen=True)
class MaskUpdate:
    """A new mask for the rest of a run, and the values that weights it re-enables start from."""

    mask: Mapping[str, torch.Tensor]
    values: Mapping[str, torch.Tensor]


class TrainHooks(Protocol):
    """Optional per-step callbacks for methods that change the mask while training (scored pruning,
    001 §5). ``train(hooks=None)`` runs none of this code.

    ``after_backward(step, grads)``: the masked parameters' gradients before the mask is applied to them;
    pruned weights are zero in the forward pass, so these are dL/d(effective weight) for every weight.
    ``update_mask(done, model)``: after update number ``done`` (weights already masked); return a
    :class:`MaskUpdate` to switch masks, None to keep the current one.
    """

    def after_backward(self, step: int, grads: Mapping[str, torch.Tensor]) -> None: ...

    def update_mask(self, done: int, model: nn.Module) -> MaskUpdate | None: ...


@torch.no_grad()
def _switch_mask(
    update: MaskUpdate, names: list[str], params: list[torch.Tensor], mask_values: list[torch.Tensor],
    optimizer: torch.optim.Optimizer,
) -> None:
    """Apply a mid-run mask change in place: newly kept weights take ``update.values``, newly pruned ones
    become zero, and per-weight optimiser state (momentum, Adam moments) is zeroed wherever the mask is
    now False, so a weight re-enabled later starts with fresh state."""
    for i, (name, p) in enumerate(zip(names, params)):
        new = update.mask[name].to(device=p.device, dtype=p.dtype)
        revived = (new > 0) & (mask_values[i] == 0)
        p.copy_(torch.where(revived, update.values[name].to(device=p.device, dtype=p.dtype), p * new))
        for value in optimizer.state.get(p, {}).values():
            if torch.is_tensor(value) and value.shape == p.shape:
                value.mul_(new)
        mask_values[i] = new


@dataclass
class TrainResult:
    start_step: int
    end_step: int
    history: list[dict[str, float]] = field(default_factory=list)  # one row per evaluation
    snapshots: dict[int, StateDict] = field(default_factory=dict)
    early_stop_step: int | None = None  # step of minimum validation loss (003's early-stopping iteration)
    early_stop: dict[str, float] = field(default_factory=dict)  # the evaluation at that step
    final: dict[str, float] = field(default_factory=dict)  # the evaluation the run ended on
    wall_time: float = 0.0
    steps_per_epoch: int = 0


def plan_steps(
    data: Dataset, recipe: Recipe, start_step: int, end_step: int | None, end_on_best: bool
) -> tuple[int, int, int]:
    """Steps per epoch, the end step (default: the recipe's length) and the evaluation interval in steps
    (0: only at the end), with the checks every trainer makes on them."""
    spe = steps_per_epoch(len(data.x_train), recipe.batch_size)
    end_step = recipe.total_steps(spe) if end_step is None else end_step
    if not 0 <= start_step <= end_step:
        raise ValueError(f"need 0 <= start_step ({start_step}) <= end_step ({end_step})")
    if end_on_best and len(data.x_val) == 0:
        raise ValueError("end_on_best needs a validation split (val_size > 0)")
    eval_every = recipe.eval_every.steps(spe) if recipe.eval_every is not None else 0
    return spe, end_step, eval_every


def _dropout_noise(model: nn.Module, device: torch.device) -> Callable[[torch.Size], torch.Tensor] | None:
    """An MLP's dropout multiplier for the fused step's (1, B, features) activations, drawn from the global
    generator as ``F.dropout`` draws it on CPU (``bernoulli(1 - p) / (1 - p)``); None without dropout."""
    p = float(model.dropout)
    if not p:
        return None
    return lambda shape: torch.empty(shape, device=device).bernoulli_(1 - p).div_(1 - p)


def train(
    model: nn.Module,
    data: Dataset,
    recipe: Recipe,
    *,
    mask: Mapping[str, torch.Tensor] | None = None,
    seed: int = 0,
    start_step: int = 0,
    end_step: int | None = None,
    snapshot_steps: Iterable[int] = (),
    end_on_best: bool = False,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    hooks: TrainHooks | None = None,
) -> TrainResult:
    """Train ``model`` in place from ``start_step`` to ``end_step`` (default: the recipe's length).

    ``start_step`` places the run in the recipe's LR schedule and data order (LR rewinding restarts there).
    ``snapshot_steps`` are the steps whose weights are kept for rewinding (step s = after s updates).
    ``end_on_best`` ends on the weights of the minimum-validation-loss evaluation (003/004's rule).
    ``hooks`` (needs ``mask``) sees each step's gradients and may change the mask (:class:`TrainHooks`).
    """
    device = resolve_device(device)
    model.to(device)
    data = data.to(device)
    spe, end_step, eval_every = plan_steps(data, recipe, start_step, end_step, end_on_best)
    if hooks is not None and mask is None:
        raise ValueError("train(hooks=...) needs a mask: hooks see and change the masked weights")
    wanted = {int(s) for s in snapshot_steps}

    named = dict(model.named_parameters())
    mask = Mask(mask) if mask is not None else None
    masked_params: list[torch.Tensor] = []
    mask_values: list[torch.Tensor] = []
    if mask is not None:
        mask.apply(model)
        masked_params = [named[k] for k in mask]
        mask_values = [mask[k].to(device=device, dtype=named[k].dtype) for k in mask]
    params = [p for p in model.parameters() if p.requires_grad]
    # SGD on an MLP: hand-written backward with the update inside the GEMMs, on views of the parameters as
    # one stacked model (ticketlab.training.fused_sgd); hooks see gradients, so they keep the autograd step
    fused = None if hooks is not None else fused_sgd.for_mlp(
        model, {k: p.unsqueeze(0) for k, p in named.items()},
        {k: v.unsqueeze(0) for k, v in zip(mask or (), mask_values)}, recipe)
    optimizer = recipe.make_optimizer(params) if fused is None else None

    result = TrainResult(start_step=start_step, end_step=end_step, steps_per_epoch=spe)
    best_state: StateDict | None = None
    running_loss = torch.zeros((), device=device)
    running_count = 0

    def record(step: int) -> None:
        nonlocal best_state, running_count
        row: dict[str, float] = {"step": step, "epoch": step / spe}
        row["train_loss"] = float(running_loss) / running_count if running_count else float("nan")
        running_loss.zero_()
        running_count = 0
        for split in ("val", "test"):
            metrics = evaluate(model, getattr(data, f"x_{split}"), getattr(data, f"y_{split}"))
            row[f"{split}_loss"], row[f"{split}_acc"] = metrics["loss"], metrics["acc"]
        result.history.append(row)
        if len(data.x_val) and (result.early_stop_step is None or row["val_loss"] < result.early_stop["val_loss"]):
            result.early_stop_step, result.early_stop = step, row
            if end_on_best:
                best_state = snapshot(model)
        if progress is not None:
            progress(step, end_step, row)

    started = time.perf_counter()
    model.train()
    # an MLP's time is its GEMMs: on OpenBLAS CPUs they get the threads (ticketlab.hardware.blas)
    with threads_for(model, device), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed_for(seed, start_step, 1))  # dropout
        if start_step in wanted:
            result.snapshots[start_step] = snapshot(model)
        record(start_step)
        order = None
        noise = _dropout_noise(model, device) if fused is not None else None
        for step in range(start_step, end_step):
            epoch, position = divmod(step, spe)
            if order is None or position == 0:
                order = epoch_order(len(data.x_train), seed, epoch).to(device)
            idx = order[position * recipe.batch_size : (position + 1) * recipe.batch_size]
            xb, yb = data.x_train.index_select(0, idx), data.y_train.index_select(0, idx)  # faster than x_train[idx]
            if data.augment == "cifar":
                xb = cifar_augment(xb, torch.Generator().manual_seed(seed_for(seed, step, 2)))
            lr = recipe.lr_at(step, spe)
            if fused is not None:
                running_loss += fused.step(xb.unsqueeze(0), yb.unsqueeze(0), lr, noise)[0]
            else:
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss = F.cross_entropy(model(xb), yb)
                running_loss += loss.detach()
                if recipe.l2:
                    loss = loss + recipe.l2 * sum(p.pow(2).sum() for p in params)
                optimizer.zero_grad(set_to_none=True)  # backward writes the gradients: one pass fewer
                loss.backward()
                if hooks is not None:
                    hooks.after_backward(step, {k: p.grad for k, p in zip(mask, masked_params)})
                if masked_params:
                    torch._foreach_mul_([p.grad for p in masked_params], mask_values)
                # No weight masking after the step: a pruned weight starts at 0 (mask.apply above; a mask
                # switch zeroes it and its optimiser state) and its gradient is 0, so SGD (momentum, Nesterov,
                # weight decay, L2) and Adam leave it and its state exactly 0 (0 - lr * 0; Adam: 0 / eps).
                optimizer.step()
            running_count += 1
            done = step + 1
            if hooks is not None and (update := hooks.update_mask(done, model)) is not None:
                _switch_mask(update, list(mask), masked_params, mask_values, optimizer)
            if done in wanted:
                result.snapshots[done] = snapshot(model)
            if done == end_step or (eval_every and done % eval_every == 0):
                record(done)
            elif progress is not None:
                progress(done, end_step, None)
    if end_on_best and best_state is not None:
        model.load_state_dict(best_state)
        result.final = dict(result.early_stop)
    else:
        result.final = dict(result.history[-1])
    result.wall_time = time.perf_counter() - started
    return result
