"""GraSP (Wang et al. 2020): gradient signal preservation via a Hessian-gradient product.

The paper scores S(−w) = −w ⊙ Hg and REMOVES the weights with the highest S (eq. 8 and the text after it).
ticketlab's scores mean "higher = keep", so ``grasp`` returns the negation, w ⊙ Hg: the weights the paper
removes are exactly the lowest here. ``grasp_abs`` is |w ⊙ Hg| (000 §5.3 found it far better on MLPs).

g = Σ_b ∇L_b and Hg = Σ_b ∇(∇L_b · g) over the pruning batches (L_b the mean cross-entropy of batch b,
g held constant in the second pass), over the prunable weights only. Both are taken with respect to the
underlying weights w of the masked network, whose forward pass uses m ⊙ w (as the GraSP and Synaptic-Flow
code do): g = m ⊙ ∇L and Hg = m ⊙ H (m ⊙ ∇L), so a pruned weight j adds no H_ij g_j to a kept weight's Hg. ``options["temperature"]`` divides the logits (the GraSP and Synaptic-Flow code use 200;
the plain definition, our default, is 1).
"""

from __future__ import annotations

import torch
from torch import nn

from ticketlab.criteria.base import (
    ScoringContext,
    Scores,
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


def hessian_gradient_product(model: nn.Module, mask: Mask, ctx: ScoringContext, criterion: str) -> Scores:
    """Hg of the summed batch losses w.r.t. the underlying weights of the masked network (double backward)."""
    batches = require_batches(ctx, criterion)
    temperature = float(ctx.options.get("temperature", 1.0))
    weights = masked_weights(model, mask)
    names = list(weights)
    leaves = [weights[n].detach().clone().requires_grad_(True) for n in names]
    keep = [mask[n].to(w.device, w.dtype) for n, w in zip(names, leaves)]

    def state() -> dict[str, torch.Tensor]:  # forward with m ⊙ w: the gradient w.r.t. w is zero where m is
        return functional_state(model, {n: m * w for n, m, w in zip(names, keep, leaves)})

    with torch.enable_grad(), mode(model, data_mode(ctx)):
        g = [torch.zeros_like(w) for w in leaves]
        for x, y in batches:
            for acc, gi in zip(g, grad_or_zeros(batch_loss(model, state(), x, y, temperature), leaves)):
                acc += gi
        hg = [torch.zeros_like(w) for w in leaves]
        for x, y in batches:
            grads = grad_or_zeros(batch_loss(model, state(), x, y, temperature), leaves, create_graph=True)
            z = sum((gi * gc).sum() for gi, gc in zip(grads, g))
            if not z.requires_grad:  # the gradient does not depend on the weights (e.g. a purely linear net)
                continue
            for acc, hi in zip(hg, grad_or_zeros(z, leaves)):
                acc += hi
    return dict(zip(names, hg))


@register("grasp", data_aware=True)
def grasp(model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    weights = masked_weights(model, mask)
    hg = hessian_gradient_product(model, mask, ctx, "grasp")
    return {n: w * hg[n] for n, w in weights.items()}  # = −(GraSP's removal score −w ⊙ Hg)


@register("grasp_abs", data_aware=True)
def grasp_abs(model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    weights = masked_weights(model, mask)
    hg = hessian_gradient_product(model, mask, ctx, "grasp_abs")
    return {n: (w * hg[n]).abs() for n, w in weights.items()}
