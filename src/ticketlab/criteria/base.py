"""What every criterion shares: the registry, the scoring context, and the masked functional forward.

A criterion never writes to the model it scores. Where it needs a gradient it runs the model through
``torch.func.functional_call`` with detached, masked copies of the weights as fresh leaves, so

* the model's own ``.grad`` fields neither enter the result nor change (the Synaptic-Flow code scores
  on accumulated gradients, which distorts GraSP scores after training: up to 162x, measured);
* pruned weights are zero in the forward pass: the masked network is what gets scored;
* buffers are cloned, so BatchNorm running statistics stay as they were even in train mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ticketlab.masks import Mask, prunable_parameters
from ticketlab.registry import Registry

Scores = dict[str, torch.Tensor]
Criterion = Callable[[nn.Module, Mask, "ScoringContext"], Scores]

CRITERIA: Registry[Criterion] = Registry("criterion")
DATA_AWARE: set[str] = set()


@dataclass
class ScoringContext:
    """Everything a criterion may need besides the model and the mask.

    ``batches``: pruning batches ``(x, y)`` already on the model's device (data-aware criteria).
    ``input_shape``: one sample's shape, for data-free criteria (SynFlow); defaults to the batches' shape.
    ``initial``: ``w_0`` by parameter name (state dict or parameter dict at initialisation) for the supermask
    criteria, whose ``w_T`` is the model's current weights.
    ``seed``: for ``random``. ``options``: per-criterion switches, e.g. ``{"include_bias": True}``.
    """

    batches: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()
    input_shape: tuple[int, ...] | None = None
    initial: Mapping[str, torch.Tensor] | None = None
    seed: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)


def register(name: str, *, data_aware: bool = False) -> Callable[[Criterion], Criterion]:
    """``@register("snip", data_aware=True)``: add to :data:`CRITERIA` and record whether it needs batches."""
    if data_aware:
        DATA_AWARE.add(name.lower())
    return CRITERIA.register(name)


def masked_weights(model: nn.Module, mask: Mask) -> Scores:
    """Detached ``w ⊙ m`` for every masked parameter: the weights of the network that is scored."""
    params = prunable_parameters(model)
    missing = [k for k in mask if k not in params]
    if missing:
        raise ValueError(f"mask has parameters the model has not as prunable weights: {missing[:5]}")
    out = {}
    for name, keep in mask.items():
        w = params[name].detach()
        if tuple(keep.shape) != tuple(w.shape):
            raise ValueError(f"mask shape {tuple(keep.shape)} for {name!r} != parameter {tuple(w.shape)}")
        out[name] = w * keep.to(w.device, w.dtype)
    return out


def functional_state(model: nn.Module, overrides: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached parameters and cloned buffers of ``model`` with ``overrides`` in place of some of them."""
    state = {n: p.detach() for n, p in model.named_parameters()}
    state.update({n: b.detach().clone() for n, b in model.named_buffers()})
    state.update(overrides)
    return state


@contextmanager
def mode(model: nn.Module, train: bool) -> Iterator[None]:
    """Run in train or eval mode and give every submodule its own previous mode back afterwards."""
    before = [(m, m.training) for m in model.modules()]
    model.train(train)
    try:
        yield
    finally:
        for m, was in before:
            m.training = was


def require_batches(ctx: ScoringContext, criterion: str) -> Sequence[tuple[torch.Tensor, torch.Tensor]]:
    if not ctx.batches:
        raise ValueError(f"criterion {criterion!r} is data-aware: ScoringContext.batches must hold pruning batches")
    return ctx.batches


def batch_loss(
    model: nn.Module, state: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Mean cross-entropy of one batch through the functional forward (logits divided by ``temperature``)."""
    logits = functional_call(model, dict(state), (x,))
    return F.cross_entropy(logits / temperature, y)


def data_mode(ctx: ScoringContext) -> bool:
    """Data-aware criteria score in eval mode unless ``options["train_mode"]`` (the Synaptic-Flow default)."""
    return bool(ctx.options.get("train_mode", False))


def grad_or_zeros(outputs: torch.Tensor, inputs: Sequence[torch.Tensor], **kwargs: Any) -> list[torch.Tensor]:
    grads = torch.autograd.grad(outputs, list(inputs), allow_unused=True, **kwargs)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]
