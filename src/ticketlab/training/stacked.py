"""Training K models of one architecture in a single pass: K stacked weight sets, one batched
forward/backward, each model with its own mask, data order, dropout and optimiser state.

Lottery-ticket studies repeat small trainings many times (seeds x methods x densities). One small
model cannot keep a processor busy; K stacked ones can. Per model the result equals
``ticketlab.training.loop.train`` with the same seed to float tolerance (bmm and mm accumulate in different
orders, so bit equality is not expected):

* data order, augmentation, evaluation cadence, snapshots: the trainer core's (``ticketlab.training.core``),
  shared with the one-model trainer; this module is the stacked strategy over it;
* optimiser: one ``torch.optim`` optimiser over the stacked tensors. SGD (momentum, Nesterov, weight
  decay) and Adam are elementwise and all K models share the recipe's learning rate, so one optimiser
  over stacked parameters is exactly K independent optimisers; the loss is the *sum* of the K per-model
  mean losses, so model k's gradient is its own loss's gradient (L2 included);
* masks: a pruned weight starts at 0 and is never updated (as train.py): the autograd step multiplies
  the gradients by the mask after ``backward()``, the fused SGD step (``ticketlab.training.fused_sgd``) masks
  what its update GEMM wrote;
* dropout: in the MLP path each model draws its dropout noise from its own generator seeded like the
  one-model trainer's global RNG (``F.dropout`` = ``input * bernoulli(1-p) / (1-p)``), so it matches too.
  On CUDA it does not: ``F.dropout`` there has its own kernel and random stream, so with dropout the
  K-model results equal the one-model ones in distribution only.

Two forward paths: MLPs (``ticketlab.models.mlp.MLP``: LeNet-300-100, ``mlp:*``) use stacked GEMMs
(``ticketlab.hardware.blas.linear``: OpenBLAS's batched sgemm where it is the faster BLAS, else ``baddbmm``); every
other model uses ``torch.func.functional_call`` under ``torch.func.vmap`` with stacked parameters and
buffers (BatchNorm running statistics are per model and updated in place). Convolutional models with
dropout > 0 are trained one after another with ``train`` (vmap cannot reproduce the global-RNG dropout
stream), which keeps them exact but not faster.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.config.recipe import Recipe
from ticketlab.data import Dataset
from ticketlab.hardware.blas import linear, threads_for
from ticketlab.hardware.device import resolve_device
from ticketlab.models import StateDict
from ticketlab.models.mlp import MLP
from ticketlab.seeding import seed_for
from ticketlab.training import fused_sgd, sparse
from ticketlab.training.core import Progress, TrainResult, autograd_update, enforce_masks, fit, plan_steps
from ticketlab.training.evaluate import eval_chunk
from ticketlab.training.loop import train


def _has_dropout(model: nn.Module) -> bool:
    return any(
        (isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0) or float(getattr(m, "dropout", 0) or 0) > 0
        for m in model.modules()
    )


def vectorizable(model: nn.Module) -> bool:
    """Whether ``train_many`` trains this architecture in one stacked pass (else one model at a time)."""
    return isinstance(model, MLP) or not _has_dropout(model)


class _Stack:
    """K models' parameters and buffers as stacked tensors (leading dim K) and the batched forward."""

    def __init__(self, models: Sequence[nn.Module], device: torch.device) -> None:
        self.template = models[0]
        self.k = len(models)
        self.mlp = isinstance(self.template, MLP)
        per_model = [dict(m.named_parameters()) for m in models]
        self.params: dict[str, torch.Tensor] = {}
        for name, p in self.template.named_parameters():
            stacked = torch.stack([pm[name].detach() for pm in per_model]).to(device).contiguous()
            self.params[name] = stacked.requires_grad_(p.requires_grad)
        per_buffer = [dict(m.named_buffers()) for m in models]
        self.buffers = {
            name: torch.stack([bm[name].detach() for bm in per_buffer]).to(device).clone()
            for name, _ in self.template.named_buffers()
        }
        self.state_keys = list(self.template.state_dict().keys())
        if not self.mlp:
            from torch.func import functional_call, vmap

            template = self.template

            def one(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
                return functional_call(template, (p, b), (x,))

            self._vmapped = vmap(one, randomness="error")

    # -- forward -------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, dropout: list[torch.Generator] | None = None) -> torch.Tensor:
        """(K, B, ...) inputs -> (K, B, classes) outputs, model k on x[k]."""
        if not self.mlp:
            return self._vmapped(self.params, self.buffers, x)
        h = x.flatten(2)
        layers = len(self.template.layers)
        p = self.template.dropout
        for i in range(layers):
            w, b = self.params[f"layers.{i}.weight"], self.params[f"layers.{i}.bias"]
            h = linear(h, w, b)
            if i < layers - 1:
                h = F.relu(h)
                if p and dropout is not None:
                    h = h * self.dropout_noise(h.shape, h.device, dropout)
        return h

    def dropout_noise(self, shape: torch.Size, device: torch.device, dropout: list[torch.Generator]) -> torch.Tensor:
        """The MLP's dropout multiplier (0 or 1 / (1 - p)) for a (K, B, features) activation: each model's
        noise from its own generator, in the one-model trainer's draw order."""
        p = self.template.dropout
        noise = torch.stack([torch.empty(shape[1:]).bernoulli_(1 - p, generator=g) for g in dropout])
        return noise.to(device).div_(1 - p)

    @torch.inference_mode()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> list[dict[str, float]]:
        """Per-model mean cross-entropy and accuracy on one shared split, in eval mode (as evaluate())."""
        if len(x) == 0:
            return [{"loss": float("nan"), "acc": float("nan")} for _ in range(self.k)]
        was_training = self.template.training
        self.template.eval()
        loss_sum = torch.zeros(self.k, dtype=torch.float64, device=x.device)
        correct = torch.zeros(self.k, dtype=torch.int64, device=x.device)
        chunk = eval_chunk(self.template, x.device, self.k)
        for start in range(0, len(x), chunk):
            xb, yb = x[start : start + chunk], y[start : start + chunk]
            out = self._eval_forward(xb)
            losses = F.cross_entropy(out.flatten(0, 1), yb.repeat(self.k), reduction="none").view(self.k, -1)
            loss_sum += losses.double().sum(1)
            correct += (out.argmax(dim=2) == yb).sum(1)
        self.template.train(was_training)
        return [{"loss": float(loss_sum[k]) / len(x), "acc": int(correct[k]) / len(x)} for k in range(self.k)]

    def _eval_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.mlp:
            return self._vmapped(self.params, self.buffers, x.unsqueeze(0).expand(self.k, *x.shape))
        # the first layer of all K models as one GEMM on the shared inputs: (n, in) @ (in, K*out)
        w0, b0 = self.params["layers.0.weight"], self.params["layers.0.bias"]
        h = linear(x.flatten(1), w0.flatten(0, 1), b0.flatten()).view(len(x), self.k, -1).transpose(0, 1)
        layers = len(self.template.layers)
        for i in range(1, layers):
            h = h.relu_()  # in place: h is this pass's own (K, n, features) output; 5% of an evaluation measured
            w, b = self.params[f"layers.{i}.weight"], self.params[f"layers.{i}.bias"]
            h = linear(h, w, b)
        return h

    # -- state ---------------------------------------------------------------------------------------
    def state(self, k: int) -> StateDict:
        """Model k's state dict (CPU copy), keys in the template's order."""
        out = {}
        for key in self.state_keys:
            source = self.params[key] if key in self.params else self.buffers[key]
            out[key] = source[k].detach().to("cpu", copy=True)
        return out


class _Stacked:
    """``train_many``'s stepper: K models as one :class:`_Stack`, stepped by the fused step (MLPs with SGD
    or Adam) or by autograd through one optimiser over the stacked tensors."""

    def __init__(
        self,
        models: list[nn.Module],
        masks: list[Mapping[str, torch.Tensor] | None],
        seeds: list[int],
        recipe: Recipe,
        start_step: int,
        device: torch.device,
    ) -> None:
        self.models, self.recipe, self.device, self.k = models, recipe, device, len(models)
        names, self.mask_values = enforce_masks(models, masks, device)  # masks first, as train()
        self.stack = stack = _Stack(models, device)
        self.masked = [stack.params[n] for n in names]
        self.params = [p for p in stack.params.values() if p.requires_grad]
        self.fused = fused_sgd.for_mlp(stack.template, stack.params, dict(zip(names, self.mask_values)), recipe)
        # below a measured crossover density a pruned layer trains as one block-diagonal CSR (training.sparse)
        self.sparse_training = self.sparse_evaluation = None
        if self.fused is not None:
            self.fused, self.sparse_evaluation, self.sparse_training = sparse.replace(self.fused, recipe, device)
        self.optimizer = recipe.make_optimizer(self.params) if self.fused is None else None
        self.dropout = self.noise = None
        if stack.mlp and stack.template.dropout:
            self.dropout = [torch.Generator().manual_seed(seed_for(s, start_step, 1)) for s in seeds]
            self.noise = lambda shape: stack.dropout_noise(shape, device, self.dropout)

    @contextmanager
    def running(self) -> Iterator[None]:
        self.stack.template.train()
        with threads_for(self.stack.template, self.device):
            yield

    def step(self, step: int, xb: torch.Tensor, yb: torch.Tensor, lr: float) -> torch.Tensor:
        if self.fused is not None:
            return self.fused.step(xb, yb, lr, self.noise)
        out = self.stack.forward(xb, self.dropout)
        losses = F.cross_entropy(out.flatten(0, 1), yb.flatten(), reduction="none").view(self.k, -1).mean(1)
        # the sum of the K mean losses: model k's gradient is its own mean loss's gradient
        autograd_update(self.optimizer, losses.sum(), lr, self.recipe.l2, self.params, self.masked, self.mask_values)
        return losses.detach()

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> list[dict[str, float]]:
        if self.sparse_evaluation is not None:  # some layers through a CSR of the K models' kept weights
            return self.sparse_evaluation(x, y)
        return self.stack.evaluate(x, y)

    def state(self, k: int) -> StateDict:
        return self.stack.state(k)

    def finish(self, k: int, state: StateDict | None) -> None:
        model = self.models[k]
        model.load_state_dict(state if state is not None else self.stack.state(k))
        model.to(self.device)
        model.train()


def train_many(
    models: Sequence[nn.Module],
    data: Dataset,
    recipe: Recipe,
    *,
    masks: Sequence[Mapping[str, torch.Tensor] | None] | None = None,
    seeds: Sequence[int] | None = None,
    start_step: int = 0,
    end_step: int | None = None,
    snapshot_steps: Iterable[int] = (),
    end_on_best: bool = False,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
) -> list[TrainResult]:
    """Train ``models`` (same architecture) in place, together; result k equals
    ``train(models[k], data, recipe, mask=masks[k], seed=seeds[k], ...)`` to float tolerance.

    All models share the recipe, ``start_step``/``end_step`` and ``snapshot_steps``; masks and seeds are
    per model. ``wall_time`` of each result is the shared wall time divided by K (the cost per model).
    ``progress`` receives the mean over models of each evaluation row.
    """
    # long: argument checks and the stack's set-up before the shared loop
    models = list(models)
    k_models = len(models)
    if k_models == 0:
        return []
    masks = list(masks) if masks is not None else [None] * k_models
    seeds = [int(s) for s in seeds] if seeds is not None else [0] * k_models
    if len(masks) != k_models or len(seeds) != k_models:
        raise ValueError(f"train_many: got {k_models} models, {len(masks)} masks and {len(seeds)} seeds; give one each")
    shapes = {k: tuple(v.shape) for k, v in models[0].state_dict().items()}
    for i, m in enumerate(models[1:], start=1):
        if type(m) is not type(models[0]) or {k: tuple(v.shape) for k, v in m.state_dict().items()} != shapes:
            raise ValueError(f"train_many: model {i} has another architecture than model 0; stack only equal models")
    if not vectorizable(models[0]):
        return [
            train(
                m,
                data,
                recipe,
                mask=mk,
                seed=s,
                start_step=start_step,
                end_step=end_step,
                snapshot_steps=snapshot_steps,
                end_on_best=end_on_best,
                device=device,
                progress=progress,
            )
            for m, mk, s in zip(models, masks, seeds)
        ]
    device = resolve_device(device)
    data = data.to(device)
    plan_steps(data, recipe, start_step, end_step, end_on_best)  # its errors before any work
    stepper = _Stacked(models, masks, seeds, recipe, start_step, device)
    results = fit(
        stepper,
        data,
        recipe,
        seeds=seeds,
        start_step=start_step,
        end_step=end_step,
        snapshot_steps=snapshot_steps,
        end_on_best=end_on_best,
        progress=progress,
    )
    for result in results:
        result.compact_adam = fused_sgd.compacted(stepper.fused)
        result.sparse_training = stepper.sparse_training
    return results
