"""Stacked Scoring (000 §3.3, algorithm 1): S_B = B(S_A), B applied to the weights replaced by A's scores.

The thesis "temporarily replace[s] the model weights with the intermediate scores"; here B runs on a copy, so
the model is never written to. Following SPEC, for a data-aware B (whose loss depends on the weights'
signs) the copy's weights are |S_A| carrying the sign of the original weight, sign(w)·|S_A|; for a data-free
B they are S_A as it is. No rescaling (000 §3.3 has none; the [−1, 1] scaling belongs to SaW, §3.4).
Nesting works because A and B are any criterion names, ``stacked(...)`` included.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ticketlab.criteria.base import ScoringContext, Scores
from ticketlab.masks import Mask, prunable_parameters


def stacked_weights(model: nn.Module, scores: Scores, signed: bool) -> dict[str, torch.Tensor]:
    """The weights B sees: A's scores (signed like the model's weights if ``signed``), in the weights' dtype."""
    params = prunable_parameters(model)
    out = {}
    for name, s in scores.items():
        w = params[name].detach()
        value = torch.sign(w) * s.abs().to(w.dtype) if signed else s.to(w.dtype)
        if not torch.isfinite(value).all():
            raise ValueError(
                f"scores for {name!r} do not fit the weights' dtype {w.dtype} (overflow): cannot use them as weights"
            )
        out[name] = value
    return out


def stacked(first: str, second: str, model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    from ticketlab.criteria import is_data_aware, score  # the package parses names, this module only composes

    values = stacked_weights(model, score(first, model, mask, ctx), signed=is_data_aware(second))
    probe = copy.deepcopy(model)
    with torch.no_grad():
        for param in probe.parameters():
            param.grad = None
        for name, param in prunable_parameters(probe).items():
            if name in values:
                param.copy_(values[name])
    return score(second, probe, mask, ctx)
