"""Evaluation of a whole split in a few large batches, without autograd."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.models.mlp import MLP

EVAL_BATCH = 5000  # examples per evaluation chunk on a GPU, and for convolutional models
CACHE_FLOATS = 1 << 18  # an MLP chunk's widest activation block on a CPU: 1 MiB of float32


def eval_chunk(model: nn.Module, device: torch.device, models: int = 1) -> int:
    """Examples per evaluation chunk. One MLP on a CPU: the widest layer's output block stays within about
    1 MiB, so it is still in the core's cache when the next GEMM reads it (LeNet-300-100, 15,000 examples,
    1 thread, AMD EPYC, quiet: 113 ms in chunks of 873 against 136 ms in chunks of 5,000). Stacked MLPs
    (``models`` > 1) keep :data:`EVAL_BATCH`: their first layer is one GEMM over all models, and small
    chunks measured slower there (K = 2 / 4 / 8: 0.99x / 0.94x / 0.93x). Convolutional models:
    :data:`EVAL_BATCH` divided among the stacked models, 256 at least."""
    if not isinstance(model, MLP):
        return max(256, EVAL_BATCH // max(1, models))
    if device.type == "cpu" and models == 1:
        return mlp_chunk(max(model.sizes[1:]))
    return EVAL_BATCH


def mlp_chunk(widest: int) -> int:
    """Examples per evaluation chunk of one MLP on a CPU whose widest layer has ``widest`` outputs."""
    return max(256, min(EVAL_BATCH, CACHE_FLOATS // widest))


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> dict[str, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``(x, y)``, in eval mode, in chunks of
    ``batch_size`` examples (default :func:`eval_chunk`); the loss is summed per example in float64, so the
    chunking changes it by float64 rounding only.

    The model's train/eval mode is restored afterwards.
    """
    if len(x) == 0:
        return {"loss": float("nan"), "acc": float("nan")}
    was_training = model.training
    model.eval()
    totals = _Totals(x.device)
    batch_size = batch_size or eval_chunk(model, x.device)
    for start in range(0, len(x), batch_size):
        totals.add(_forward(model, x[start : start + batch_size]), y[start : start + batch_size])
    model.train(was_training)
    return totals.result(len(x))


@torch.inference_mode()
def evaluate_columns(
    x_t: torch.Tensor,
    y: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    batch_size: int,
    models: int = 1,
) -> list[dict[str, float]]:
    """:func:`evaluate` of ``models`` stacked MLPs on the split's inputs as columns, ``x_t`` (features, n),
    contiguous, every activation kept as (models * features, examples), so a sparse CSR product ``W h``
    needs no transposes (``training.sparse``). Layer i's weight is 2-D, (models * out, in) for the first
    layer (its input is shared) and block-diagonal (models * out, models * in) after it, dense or CSR, or
    3-D (models, out, in) dense; its bias (models, out) or (out,). ReLU between layers, no dropout (eval
    mode). Per model the same loss and accuracy as :func:`evaluate`, to float tolerance."""
    n = x_t.shape[1]
    if n == 0:
        return [{"loss": float("nan"), "acc": float("nan")} for _ in range(models)]
    totals = [_Totals(x_t.device) for _ in range(models)]
    last = len(weights) - 1
    for start in range(0, n, batch_size):
        h = x_t[:, start : start + batch_size]
        width = h.shape[1]
        for i, (w, b) in enumerate(zip(weights, biases)):
            if w.dim() == 3:
                h = torch.baddbmm(b.reshape(models, -1, 1), w, h.view(models, -1, width)).view(-1, width)
            else:
                h = torch.addmm(b.reshape(-1, 1), w, h)
            if i < last:
                h.relu_()
        logits = h.view(models, -1, width)
        for k, total in enumerate(totals):
            total.add(logits[k].mT, y[start : start + batch_size])
    return [total.result(n) for total in totals]


class _Totals:
    """A split's summed cross-entropy (per example, in float64) and count of correct predictions."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)

    def add(self, out: torch.Tensor, y: torch.Tensor) -> None:
        self.loss += F.cross_entropy(out, y, reduction="none").double().sum()
        self.correct += (out.argmax(dim=1) == y).sum()

    def result(self, n: int) -> dict[str, float]:
        return {"loss": float(self.loss) / n, "acc": int(self.correct) / n}


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's eval-mode output; an MLP's ReLUs run in place on its layers' fresh outputs (8% of a
    LeNet-300-100 evaluation, 1 thread, AMD EPYC; the same numbers as ``model(x)``, tested). A model with
    forward hooks, or under global ones, is called as it is."""
    if not isinstance(model, MLP) or _hooked(model):
        return model(x)  # its hooks see the call (e.g. ``methods.cost.measure`` counting passes)
    h = x.flatten(1)
    for layer in model.layers[:-1]:
        h = layer(h).relu_()  # eval mode: dropout is the identity
    return model.layers[-1](h)


def _hooked(model: nn.Module) -> bool:
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
