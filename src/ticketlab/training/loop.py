"""Training one model: ``train``, the single-model strategy over the trainer core (``training.core``), and
the hooks through which a method changes the mask while training.

The dataset lives on the device as whole tensors; a batch is a slice of a seeded ``randperm``. Masks are
enforced the cheap exact way: the weights are masked once at the start and the gradients after every
``backward()``, so pruned weights and their optimiser state stay exactly zero under momentum, weight decay
and Adam (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.config.recipe import Recipe
from ticketlab.data import Dataset
from ticketlab.hardware.blas import threads_for
from ticketlab.hardware.device import resolve_device
from ticketlab.models import StateDict, snapshot
from ticketlab.seeding import seed_for
from ticketlab.training import fused_sgd, sparse
from ticketlab.training.core import (  # noqa: F401  (re-exported: the trainer's types live beside train)
    Progress,
    TrainResult,
    autograd_update,
    enforce_masks,
    fit,
    plan_steps,
    steps_per_epoch,
)
from ticketlab.training.evaluate import evaluate


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
    update: MaskUpdate,
    names: list[str],
    params: list[torch.Tensor],
    mask_values: list[torch.Tensor],
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


def _dropout_noise(model: nn.Module, device: torch.device) -> Callable[[torch.Size], torch.Tensor] | None:
    """An MLP's dropout multiplier for the fused step's (1, B, features) activations, drawn from the global
    generator as ``F.dropout`` draws it on CPU (``bernoulli(1 - p) / (1 - p)``); None without dropout."""
    p = float(model.dropout)
    if not p:
        return None
    return lambda shape: torch.empty(shape, device=device).bernoulli_(1 - p).div_(1 - p)


class _OneModel:
    """``train``'s stepper: the model itself, stepped by the fused SGD step (an MLP with SGD, no hooks) on
    views of its parameters as one stacked model, else by autograd and the recipe's optimiser."""

    k = 1

    def __init__(
        self,
        model: nn.Module,
        mask: Mapping[str, torch.Tensor] | None,
        recipe: Recipe,
        seed: int,
        start_step: int,
        device: torch.device,
        hooks: TrainHooks | None,
    ) -> None:
        self.model, self.recipe, self.device, self.hooks = model, recipe, device, hooks
        self.dropout_seed = seed_for(seed, start_step, 1)
        named = dict(model.named_parameters())
        self.names, stacked = enforce_masks([model], [mask], device)
        self.masked = [named[n] for n in self.names]
        self.mask_values = [v[0] for v in stacked]
        self.params = [p for p in model.parameters() if p.requires_grad]
        # hooks see gradients, so they keep the autograd step
        self.fused = (
            None
            if hooks is not None
            else fused_sgd.for_mlp(
                model,
                {k: p.unsqueeze(0) for k, p in named.items()},
                dict(zip(self.names, stacked)),
                recipe,
            )
        )
        # below a measured crossover density a pruned layer trains in CSR (training.sparse)
        self.sparse_training = self.sparse_evaluation = None
        if self.fused is not None:
            self.fused, self.sparse_evaluation, self.sparse_training = sparse.replace(self.fused, recipe, device)
        self.optimizer = recipe.make_optimizer(self.params) if self.fused is None else None
        self.noise = _dropout_noise(model, device) if self.fused is not None else None

    @contextmanager
    def running(self) -> Iterator[None]:
        self.model.train()
        # an MLP's time is its GEMMs: on OpenBLAS CPUs they get the threads (ticketlab.hardware.blas)
        devices = [self.device] if self.device.type == "cuda" else []
        with threads_for(self.model, self.device), torch.random.fork_rng(devices=devices):
            if self.device.type == "cpu":  # dropout draws from the CPU generator: seed only it (torch.manual_seed
                torch.default_generator.manual_seed(self.dropout_seed)  # also seeds CUDA, ~1 ms a call here)
            else:
                torch.manual_seed(self.dropout_seed)
            yield

    def step(self, step: int, xb: torch.Tensor, yb: torch.Tensor, lr: float) -> torch.Tensor:
        if self.fused is not None:
            return self.fused.step(xb, yb, lr, self.noise)
        loss = F.cross_entropy(self.model(xb[0]), yb[0])
        see = None
        if self.hooks is not None:

            def see(grads):
                return self.hooks.after_backward(step, dict(zip(self.names, grads)))

        autograd_update(self.optimizer, loss, lr, self.recipe.l2, self.params, self.masked, self.mask_values, see)
        if self.hooks is not None and (update := self.hooks.update_mask(step + 1, self.model)) is not None:
            _switch_mask(update, self.names, self.masked, self.mask_values, self.optimizer)
        return loss.detach().view(1)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> list[dict[str, float]]:
        if self.sparse_evaluation is not None:  # some layers through a CSR of their kept weights
            return self.sparse_evaluation(x, y)
        return [evaluate(self.model, x, y)]

    def state(self, k: int) -> StateDict:
        return snapshot(self.model)

    def finish(self, k: int, state: StateDict | None) -> None:
        if state is not None:
            self.model.load_state_dict(state)


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
    The recipe's ``early_stop`` ends training on patience; ``TrainResult.stopped_step`` says where.
    ``hooks`` (needs ``mask``) sees each step's gradients and may change the mask (:class:`TrainHooks`).
    """
    device = resolve_device(device)
    model.to(device)
    data = data.to(device)
    plan_steps(data, recipe, start_step, end_step, end_on_best)  # its errors before any work
    if hooks is not None and mask is None:
        raise ValueError("train(hooks=...) needs a mask: hooks see and change the masked weights")
    stepper = _OneModel(model, mask, recipe, seed, start_step, device, hooks)
    result = fit(
        stepper,
        data,
        recipe,
        seeds=[seed],
        start_step=start_step,
        end_step=end_step,
        snapshot_steps=snapshot_steps,
        end_on_best=end_on_best,
        progress=progress,
    )[0]
    result.sparse_training = stepper.sparse_training
    result.compact_adam = fused_sgd.compacted(stepper.fused)
    return result
