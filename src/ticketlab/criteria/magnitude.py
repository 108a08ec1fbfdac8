"""Data-free baselines: ``magnitude`` |w| and ``random``."""

from __future__ import annotations

import torch
from torch import nn

from ticketlab.criteria.base import Scores, ScoringContext, masked_weights, register
from ticketlab.masks import Mask


@register("magnitude")
def magnitude(model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    return {name: w.abs() for name, w in masked_weights(model, mask).items()}


@register("random")
def random(model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    """Uniform [0, 1) scores from a CPU generator seeded with ``ctx.seed``: the same on every device."""
    weights = masked_weights(model, mask)
    generator = torch.Generator().manual_seed(ctx.seed)
    return {
        name: torch.rand(w.shape, generator=generator, dtype=torch.float64).to(w.device, w.dtype)
        for name, w in weights.items()
    }
