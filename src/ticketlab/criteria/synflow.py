"""SynFlow (Tanaka et al. 2020): data-free synaptic saliency |θ ⊙ ∂R/∂θ|.

R = 1ᵀ(∏_l |θ_l|)1 is the sum of the outputs of the linearised network: absolute (masked) weights, an
all-ones input, eval mode. Biases are not part of the paper's R, so by default every bias is zeroed in the
linearised pass; BatchNorm runs in eval mode as the per-channel positive scale |γ| / sqrt(running_var + ε)
with its shift (β and the running mean, both bias-like) dropped, so the pass is exactly a product of
non-negative matrices and no path can cancel another.

``options["include_bias"] = True`` reproduces the Synaptic-Flow code instead: the absolute value of every
parameter and buffer (biases |b|, BatchNorm |β| and |running_mean| included).

The pass runs in float64 and the scores stay float64: on wrn28_10 R is around 1e55, past float32's range.
"""

from __future__ import annotations

import torch
from torch import nn

from ticketlab.criteria.base import Scores, ScoringContext, masked_weights, mode, register
from ticketlab.masks import Mask


def _input_shape(ctx: ScoringContext) -> tuple[int, ...]:
    if ctx.input_shape is not None:
        return tuple(ctx.input_shape)
    if ctx.batches:
        return tuple(ctx.batches[0][0].shape[1:])
    raise ValueError("synflow needs ScoringContext.input_shape (one sample's shape, e.g. (1, 28, 28)) or a batch")


def linearised_state(model: nn.Module, include_bias: bool) -> dict[str, torch.Tensor]:
    """float64 |parameters| and buffers; without ``include_bias`` biases and BatchNorm shifts are zero."""
    state = {}
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        for name, p in module.named_parameters(recurse=False):
            value = p.detach().to(torch.float64).abs()
            state[dot + name] = value if include_bias or name != "bias" else torch.zeros_like(value)
        for name, b in module.named_buffers(recurse=False):
            if not b.is_floating_point():
                state[dot + name] = b.detach().clone()
            elif name == "running_mean" and not include_bias:
                state[dot + name] = torch.zeros_like(b, dtype=torch.float64)
            else:
                state[dot + name] = b.detach().to(torch.float64).abs()
    return state


@register("synflow")
def synflow(model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    include_bias = bool(ctx.options.get("include_bias", False))
    weights = masked_weights(model, mask)
    leaves = {n: w.to(torch.float64).abs().requires_grad_(True) for n, w in weights.items()}
    state = linearised_state(model, include_bias)
    device = next(iter(weights.values())).device
    ones = torch.ones((1, *_input_shape(ctx)), dtype=torch.float64, device=device)
    with torch.enable_grad(), mode(model, False):
        r = torch.func.functional_call(model, {**state, **leaves}, (ones,)).sum()
        grads = torch.autograd.grad(r, list(leaves.values()), allow_unused=True)
    return {n: torch.zeros_like(t) if g is None else (g * t).abs() for (n, t), g in zip(leaves.items(), grads)}
