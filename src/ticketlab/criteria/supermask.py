"""Supermask criteria of Zhou et al. (2019), used by the supermask sweep of 004 §2.

``w_T`` is the model's current (masked) weights, ``w_0`` comes from ``ctx.initial``. 004 uses
``large_final_same_sign``: sign(w_0)·w_T ranks high the weights that are large after training and kept their
initial sign (004 §2.1, §2.3 step 3).

``large_init_large_final`` is not defined in 004; Zhou et al. describe it as keeping the weights that are
large both at initialisation and at the end of training, drawn as the region |w_0| ≥ t and |w_T| ≥ t of the
(w_0, w_T) plane. min(|w_0|, |w_T|) has exactly those regions as its level sets, so one exact top-k over it
(global or layerwise) keeps the weights that are large at both ends.
"""

from __future__ import annotations

import torch
from torch import nn

from ticketlab.criteria.base import Scores, ScoringContext, masked_weights, register
from ticketlab.masks import Mask


def _pairs(
    model: nn.Module, mask: Mask, ctx: ScoringContext, criterion: str
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(w_0, w_T) per masked parameter, w_0 on w_T's device and dtype."""
    if ctx.initial is None:
        raise ValueError(f"criterion {criterion!r} needs ScoringContext.initial (the weights at initialisation)")
    final = masked_weights(model, mask)
    missing = [n for n in final if n not in ctx.initial]
    if missing:
        raise ValueError(f"ScoringContext.initial lacks {missing[:5]} needed by {criterion!r}")
    pairs = {}
    for n, w_t in final.items():
        w_0 = ctx.initial[n].detach().to(w_t.device, w_t.dtype)
        if w_0.shape != w_t.shape:
            raise ValueError(f"initial {n!r} has shape {tuple(w_0.shape)}, the model {tuple(w_t.shape)}")
        pairs[n] = (w_0, w_t)
    return pairs


@register("large_final")
def large_final(model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    return {n: w_t.abs() for n, (_, w_t) in _pairs(model, mask, ctx, "large_final").items()}


@register("large_final_same_sign")
def large_final_same_sign(model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    return {n: torch.sign(w_0) * w_t for n, (w_0, w_t) in _pairs(model, mask, ctx, "large_final_same_sign").items()}


@register("magnitude_increase")
def magnitude_increase(model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    return {n: w_t.abs() - w_0.abs() for n, (w_0, w_t) in _pairs(model, mask, ctx, "magnitude_increase").items()}


@register("movement")
def movement(model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    return {n: (w_t - w_0).abs() for n, (w_0, w_t) in _pairs(model, mask, ctx, "movement").items()}


@register("large_init_large_final")
def large_init_large_final(model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    pairs = _pairs(model, mask, ctx, "large_init_large_final")
    return {n: torch.minimum(w_0.abs(), w_t.abs()) for n, (w_0, w_t) in pairs.items()}
