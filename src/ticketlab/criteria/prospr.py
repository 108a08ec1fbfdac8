"""ProsPr (Alizadeh et al. 2022, "Prospect Pruning", ICLR; §3, Algorithm 1): score = |∂L(θ_M)/∂c|.

θ_0 = w ⊙ c with c = 1 on the kept weights, then M inner SGD steps θ_{k+1} = θ_k − α ∇L(θ_k) on pruning
batches, and the meta-gradient of the loss after the last step with respect to c, differentiated through
all M steps (``meta_grads_mode="full"`` in their prospr/prospr.py). ``first_order`` is their first-order
approximation: the inner gradients are constants, so ∂θ_M/∂c = θ_0 and the score is |θ_0 ⊙ ∇L(θ_M)|
(``"first_order"`` there). Their code's defaults (cli.py): M = 3, α = 0.1,
no momentum, every inner step and the meta loss on the same batch (here the first pruning batch;
``new_data`` takes batch k for step k and the next one for the meta loss), the full meta-gradient, the
network in train mode (BatchNorm on batch statistics). Every parameter takes the inner steps, biases and
BatchNorm included, as in their ``functional_sgd``; the model's own parameters and buffers are not
touched (the steps run on detached copies through ``functional_call``).

With a mask that already prunes weights (multi-shot), the inner steps train the masked network: pruned
weights start at 0 and their updates are masked, so they stay 0 (a fixed mask, as training would hold
it); with c = 1 everywhere that is exactly ProsPr. Pruned weights score 0.

Settings: ``prospr:steps=3:lr=0.1:momentum=0:first_order:new_data``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ticketlab.criteria.base import (
    Scores,
    ScoringContext,
    batch_loss,
    functional_state,
    masked_weights,
    mode,
    register,
    require_batches,
)
from ticketlab.criteria.params import register_settings
from ticketlab.masks import Mask

DEFAULTS: dict[str, Any] = {"steps": 3, "lr": 0.1, "momentum": 0.0, "first_order": False, "new_data": False}


def _check(settings: dict[str, Any]) -> None:
    if settings["steps"] < 0 or settings["lr"] < 0 or not 0 <= settings["momentum"] < 1:
        raise ValueError(f"prospr: need steps >= 0, lr >= 0, 0 <= momentum < 1; got {settings}")


def prospr_scores(model: nn.Module, mask: Mask, ctx: ScoringContext, settings: Mapping[str, Any]) -> Scores:
    batches = require_batches(ctx, "prospr")
    steps, lr, momentum = int(settings["steps"]), float(settings["lr"]), float(settings["momentum"])

    def batch(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return batches[k % len(batches)] if settings["new_data"] else batches[0]

    weights = masked_weights(model, mask)
    keep = {n: mask[n].to(w.device, w.dtype) for n, w in weights.items()}
    c = {n: m.clone().requires_grad_(True) for n, m in keep.items()}
    state = functional_state(model, {})
    names = [n for n, _ in model.named_parameters()]
    with torch.enable_grad(), mode(model, True):
        # θ_0 = w ⊙ c for the masked weights; every other parameter is a leaf of its own (it moves too)
        fast = {n: weights[n] * c[n] if n in c else state[n].clone().requires_grad_(True) for n in names}
        velocity: dict[str, torch.Tensor] = {}
        for k in range(steps):
            x, y = batch(k)
            loss = batch_loss(model, {**state, **fast}, x, y)
            grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=not settings["first_order"])
            for n, g in zip(names, grads):
                velocity[n] = g if n not in velocity else momentum * velocity[n] + g
                step = velocity[n] * keep[n] if n in keep else velocity[n]
                fast[n] = fast[n] - lr * step
        x, y = batch(steps)
        meta = torch.autograd.grad(batch_loss(model, {**state, **fast}, x, y), [c[n] for n in weights])
    return {n: (g * keep[n]).abs().detach() for n, g in zip(weights, meta)}


@register("prospr", data_aware=True)
def prospr(model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    return prospr_scores(model, mask, ctx, DEFAULTS)


register_settings("prospr", prospr_scores, DEFAULTS, data_aware=True, check=_check)
