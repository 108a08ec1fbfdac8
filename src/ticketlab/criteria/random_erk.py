"""Random masks with Erdős–Rényi layer densities: ``random_er`` (Mocanu et al. 2018, SET) and ``random_erk``
(Evci et al. 2020, RigL §3 "Sparsity distribution"; the balanced random baselines of Liu et al. 2022).

Layer l keeps a fraction ε·p_l of its n_l weights, with p_l = (n_in + n_out) / (n_in · n_out) for ER and
p_l = Σ dims / Π dims (kernel dimensions included) for ERK; ε is set so that the global density is met, and a
layer whose ε·p_l would exceed 1 is kept dense while ε is solved again for the others (RigL's
``get_sparsities_erdos_renyi`` loop). As ε only grows when a layer is capped, that loop's answer is the
unique ε with Σ_l min(1, ε·p_l)·n_l = k: a common "water level" ε, each layer filled to min(1, ε·p_l).
For conv weights (out, in, *kernel) ER takes n_in, n_out from the channel dimensions, as RigL's code does
(its ER scaling ignores the kernel; ERK includes it), so an ER conv layer keeps ε·(n_in + n_out)·kh·kw.

How one global top-k realises those per-layer budgets (``masks.select`` never sees the target by layer):
a criterion does not know the density it is selected at, so its scores must give ERK densities at *every*
k. Each layer draws a random order of its weights; its r-th weight (r = 0, 1, ...) scores

    a_l / (r + 1/2),    a_l = p_l · n_l  (ERK: Σ dims; ER: (n_in + n_out) · Π kernel),

and the global top-k keeps, in every layer, the weights with r + 1/2 < a_l / t for a common threshold t:
k_l = min(n_l, round(a_l / t)) weights with Σ_l k_l = k. That is ε = 1/t up to each layer's rounding to a
whole weight, capping included (a full layer simply has no weights left to add; the others keep
growing in proportion to a_l, RigL's rescaling). In apportionment terms it is the Sainte-Laguë/Webster
divisor method with quotients a_l / (r + 1/2), the house-monotone rounding that makes the masks for
growing k nested. The global density is exact; a layer's count is its RigL count ε·p_l·n_l rounded
(ties between layers at the threshold are broken by selection's seeded tie-break). Within a layer the kept
weights are uniformly random (the first k_l of a permutation drawn from ``ctx.seed``).

Pruned weights score 0, as SNIP/SynFlow/magnitude give them; the order is drawn over all of a layer's
weights, so multi-shot pruning with the same seed keeps nested masks and ends where one shot would.
Use global scope: layerwise scope gives every layer the same density, i.e. a uniform random mask.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ticketlab.criteria.base import Scores, ScoringContext, masked_weights, register
from ticketlab.masks import Mask


def layer_weight(shape: tuple[int, ...], kernel: bool) -> float:
    """a_l = p_l · n_l: the layer's kept count per unit of ε (RigL: raw probability times size)."""
    if kernel:
        return float(sum(shape))
    n_out, n_in = shape[0], shape[1]
    return float((n_in + n_out) * math.prod(shape[2:]))


def ranked_scores(mask: Mask, weights: Scores, seed: int, kernel: bool) -> Scores:
    """a_l / (r + 1/2) at the r-th weight of a seeded random order per layer; pruned weights 0."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(mask):  # the draw must not depend on the mapping's order (see masks.select)
        keep = mask[name]
        n = keep.numel()
        order = torch.randperm(n, generator=generator)
        flat = torch.empty(n, dtype=torch.float64)
        flat[order] = layer_weight(tuple(keep.shape), kernel) / (torch.arange(n, dtype=torch.float64) + 0.5)
        w = weights[name]
        out[name] = flat.reshape(keep.shape).to(w.device) * keep.to(w.device, torch.float64)
    return {name: out[name] for name in mask}


@register("random_erk")
def random_erk(model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    """Random mask, ERK layer densities ∝ Σ dims / Π dims (Evci et al. 2020, RigL §3)."""
    return ranked_scores(mask, masked_weights(model, mask), ctx.seed, kernel=True)


@register("random_er")
def random_er(model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    """Random mask, ER layer densities ∝ (n_in + n_out) / (n_in · n_out) (Mocanu et al. 2018, eq. 1)."""
    return ranked_scores(mask, masked_weights(model, mask), ctx.seed, kernel=False)
