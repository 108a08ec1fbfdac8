"""NTK-SAP (Wang et al. 2023, "NTK-SAP: Improving neural network pruning by aligning training dynamics",
ICLR; the finite-difference saliency of their method section and its Algorithm 1): data-free and
weight-agnostic.

The NTK trace is estimated by the output change under a random weight perturbation,

    J(c) = Σ_x ‖ f(x; θ ⊙ c) − f(x; (θ + ε Δ) ⊙ c) ‖²,   x ~ N(0, I),  Δ ~ N(0, I),  θ ~ the initialisation,

and the score is |∂J/∂c| at c = the mask (pruned weights score 0, as their code multiplies by the mask).
As in their code (Pruners/pruners.py, ``NTKSAP.score``): the weights θ are re-drawn from the
initialisation for every noise batch ("random weight reinit": the score does not depend on the model's own
weights), only the prunable weights are perturbed (by ε times a standard normal, ε = 0.01), the inputs are
standard normal noise shaped like the data, the outputs of both networks are compared in eval mode with
BatchNorm statistics taken from the noise batch through the unperturbed masked network (their momentum-1
train-mode pass), as constants, and the gradients of the R draws are summed before the absolute value.
Their defaults: ε = 0.01, R = 1. Their noise is ``randn_like`` of each pruning batch, one re-draw per
batch, R times over; here too when ``ctx.batches`` holds batches (only their shapes are used), and
otherwise (ticketlab hands a data-free criterion no batches) R draws of ``batch`` noise samples shaped like
``ctx.input_shape``, 100 by default (their pruning set: 10 samples per class). One call is one round of
their Algorithm 1; their T rounds are the ``multishot`` schedule.

The draws come from ``ctx.seed`` and the number of weights the mask keeps, so each multi-shot round draws
afresh (as theirs does) and a given (seed, mask) always scores the same. θ is drawn with ticketlab's
``kaiming_normal`` (their models' ``_initialize_weights``: Kaiming normal weights, zero biases, BatchNorm
1 and 0) or the init named by ``init=``. The draws run on a copy of the model; the model is not touched.

Settings: ``ntk_sap:eps=0.01:batch=100:draws=1:init=kaiming_normal``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ticketlab.criteria.base import Scores, ScoringContext, masked_weights, register
from ticketlab.criteria.params import register_settings
from ticketlab.masks import Mask, prunable_parameters
from ticketlab.models import INITS
from ticketlab.seeding import seed_for

DEFAULTS: dict[str, Any] = {"eps": 0.01, "batch": 100, "draws": 1, "init": "kaiming_normal"}
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_TAG = 0x7A5  # keeps these draws apart from other uses of the same seed


def _check(settings: dict[str, Any]) -> None:
    if settings["eps"] <= 0 or settings["batch"] < 1 or settings["draws"] < 1:
        raise ValueError(f"ntk_sap: need eps > 0, batch >= 1, draws >= 1; got {settings}")
    INITS.get(settings["init"])  # an unknown init lists the allowed ones


def noise_shapes(ctx: ScoringContext, settings: Mapping[str, Any]) -> list[tuple[int, ...]]:
    """The shape of every draw's noise batch: each pruning batch's, R times, or R x (batch, *input_shape)."""
    if ctx.batches:
        return [tuple(x.shape) for x, _ in ctx.batches] * int(settings["draws"])
    if ctx.input_shape is None:
        raise ValueError("ntk_sap needs ScoringContext.input_shape (one sample's shape, e.g. (1, 28, 28)) or a batch")
    return [(int(settings["batch"]), *ctx.input_shape)] * int(settings["draws"])


def draw(
    model: nn.Module, mask: Mask, ctx: ScoringContext, init: str, shape: tuple[int, ...], r: int
) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """Draw r of a call: (probe, θ, Δ, x), x of ``shape``. ``probe`` is a copy of ``model`` re-initialised with
    ``init``, in eval mode, whose BatchNorm running statistics are those of x through the masked θ ⊙ m."""
    generator = torch.Generator().manual_seed(seed_for(ctx.seed, _TAG, mask.kept(), r))
    probe = copy.deepcopy(model)
    for p in probe.parameters():
        p.grad = None
    with torch.no_grad():
        INITS.get(init)(probe, generator)
    params = prunable_parameters(probe)
    theta = {n: params[n].detach() for n in mask}
    device, dtype = next(iter(theta.values())).device, next(iter(theta.values())).dtype
    delta = {
        n: torch.randn(t.shape, generator=generator, dtype=torch.float64).to(device, dtype) for n, t in theta.items()
    }
    x = torch.randn(shape, generator=generator, dtype=torch.float64).to(device, dtype)
    for module in probe.modules():
        if isinstance(module, _NORMS):
            module.momentum = 1.0  # one train-mode pass sets the running statistics to the batch's
    masked = {n: t * mask[n].to(device, dtype) for n, t in theta.items()}
    with torch.no_grad():
        probe.train()
        functional_call(probe, masked, (x,))
    probe.eval()
    return probe, theta, delta, x


def ntk_sap_scores(model: nn.Module, mask: Mask, ctx: ScoringContext, settings: Mapping[str, Any]) -> Scores:
    weights = masked_weights(model, mask)  # checks the mask fits; θ itself is drawn afresh
    keep = {n: mask[n].to(w.device, w.dtype) for n, w in weights.items()}
    total = {n: torch.zeros_like(w) for n, w in weights.items()}
    eps = float(settings["eps"])
    for r, shape in enumerate(noise_shapes(ctx, settings)):
        probe, theta, delta, x = draw(model, mask, ctx, str(settings["init"]), shape, r)
        c = {n: k.clone().requires_grad_(True) for n, k in keep.items()}
        with torch.enable_grad():
            out = functional_call(probe, {n: theta[n] * c[n] for n in c}, (x,))
            moved = functional_call(probe, {n: (theta[n] + eps * delta[n]) * c[n] for n in c}, (x,))
            j = (out - moved).pow(2).sum()
            grads = torch.autograd.grad(j, list(c.values()))
        for n, g in zip(c, grads):
            total[n] += g
    return {n: (g * keep[n]).abs() for n, g in total.items()}


@register("ntk_sap")
def ntk_sap(model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    return ntk_sap_scores(model, mask, ctx, DEFAULTS)


register_settings("ntk_sap", ntk_sap_scores, DEFAULTS, data_aware=False, check=_check)
