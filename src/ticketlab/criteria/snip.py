"""SNIP (Lee et al. 2019): connection sensitivity |g ⊙ w|.

``g`` is the gradient of the loss with respect to the masked weights, summed over the pruning batches, each
batch contributing the gradient of its mean cross-entropy (as the Synaptic-Flow code accumulates ``.grad``
over its pruning batches). Differentiating at ``w ⊙ m`` is SNIP's ∂L/∂c at c = m; pruned weights score 0.
"""

from __future__ import annotations

import torch
from torch import nn

from ticketlab.criteria.base import (
    Scores,
    ScoringContext,
    batch_loss,
    data_mode,
    functional_state,
    grad_or_zeros,
    masked_weights,
    mode,
    register,
    require_batches,
)
from ticketlab.masks import Mask


def loss_gradient(model: nn.Module, weights: Scores, ctx: ScoringContext, criterion: str) -> Scores:
    """Σ_batches ∂ mean-CE / ∂w at the given (masked) weights; the model itself is not touched."""
    batches = require_batches(ctx, criterion)
    leaves = {n: w.detach().clone().requires_grad_(True) for n, w in weights.items()}
    total = {n: torch.zeros_like(w) for n, w in leaves.items()}
    with torch.enable_grad(), mode(model, data_mode(ctx)):
        for x, y in batches:
            loss = batch_loss(model, functional_state(model, leaves), x, y)
            for n, g in zip(leaves, grad_or_zeros(loss, list(leaves.values()))):
                total[n] += g
    return total


@register("snip", data_aware=True)
def snip(model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    weights = masked_weights(model, mask)
    grads = loss_gradient(model, weights, ctx, "snip")
    return {n: (grads[n] * w).abs() for n, w in weights.items()}
