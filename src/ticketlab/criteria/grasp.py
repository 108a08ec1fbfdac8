"""GraSP (Wang et al. 2020): gradient signal preservation via a Hessian-gradient product.

The paper scores S(−w) = −w ⊙ Hg and REMOVES the weights with the highest S (eq. 8 and the text after it).
ticketlab's scores mean "higher = keep", so ``grasp`` returns the negation, w ⊙ Hg: the weights the paper
removes are exactly the lowest here. ``grasp_abs`` is |w ⊙ Hg| (000 §5.3 found it far better on MLPs).

g = Σ_b ∇L_b and Hg = Σ_b ∇(∇L_b · g) over the pruning batches (L_b the mean cross-entropy of batch b with
the logits divided by the temperature T, g held constant in the second pass), over the prunable weights
only. Both are taken with respect to the underlying weights w of the masked network, whose forward pass
uses m ⊙ w (as the GraSP and Synaptic-Flow code do): g = m ⊙ ∇L and Hg = m ⊙ H (m ⊙ ∇L), so a pruned
weight j adds no H_ij g_j to a kept weight's Hg.

The temperature is a parameter of the criterion: ``grasp:T=50``, ``grasp_abs:T=1`` (T = 1 is the plain
definition). The default is T = 200, the value of Wang et al.'s code (``GraSP(..., T=200)``) and of the
Synaptic-Flow code that 000's environment is built on: 000's hyperparameters (appendix C) have no
temperature setting, so its GraSP ran with that code's fixed T = 200.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import nn

from ticketlab.criteria.base import (
    Criterion,
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
from ticketlab.criteria.scoring import PARAMETRIC, Parametric
from ticketlab.masks import Mask

DEFAULT_TEMPERATURE = 200.0


def parse_temperature(arg: str) -> float:
    """``"T=200"`` -> 200.0 (the key in either case); anything else, or T <= 0, is a ``ValueError``."""
    key, sep, value = arg.partition("=")
    try:
        t = float(value) if sep and key.strip().lower() == "t" else math.nan
    except ValueError:
        t = math.nan
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"GraSP's argument is its softmax temperature, T=<positive number> (e.g. T=200), got {arg!r}")
    return t


def canonical_temperature(arg: str) -> str:
    """``"t=200.0"`` -> ``"T=200"``: one spelling per value, so equal criteria have equal names."""
    t = parse_temperature(arg)
    return f"T={int(t)}" if t.is_integer() and abs(t) < 1e15 else f"T={t!r}"


def hessian_gradient_product(
    model: nn.Module, mask: Mask, ctx: ScoringContext, criterion: str, temperature: float
) -> Scores:
    """Hg of the summed batch losses w.r.t. the underlying weights of the masked network (double backward)."""
    batches = require_batches(ctx, criterion)
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


def grasp_scores(
    model: nn.Module,
    mask: Mask,
    ctx: ScoringContext,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    absolute: bool = False,
) -> Scores:
    """w ⊙ Hg (= −(GraSP's removal score −w ⊙ Hg)), or its magnitude with ``absolute``."""
    name = "grasp_abs" if absolute else "grasp"
    weights = masked_weights(model, mask)
    hg = hessian_gradient_product(model, mask, ctx, name, temperature)
    return {n: (w * hg[n]).abs() if absolute else w * hg[n] for n, w in weights.items()}


@register("grasp", data_aware=True)
def grasp(model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    return grasp_scores(model, mask, ctx)


@register("grasp_abs", data_aware=True)
def grasp_abs(model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    return grasp_scores(model, mask, ctx, absolute=True)


def _build(absolute: bool) -> Callable[[str], Criterion]:
    def build(arg: str) -> Criterion:
        return functools.partial(grasp_scores, temperature=parse_temperature(arg), absolute=absolute)

    return build


def _parametric(name: str, absolute: bool) -> Parametric:
    return Parametric(
        _build(absolute),
        data_aware=True,
        usage=f"{name}:T=<softmax temperature, default {DEFAULT_TEMPERATURE:g}>",
        check=parse_temperature,
        canonical=canonical_temperature,
    )


PARAMETRIC.register("grasp")(_parametric("grasp", absolute=False))
PARAMETRIC.register("grasp_abs")(_parametric("grasp_abs", absolute=True))
