"""One SGD step of K stacked MLPs with a hand-written backward and the update inside the GEMMs.

The autograd step of ``train_many`` writes each weight gradient to a new tensor, multiplies it by the
mask, then reads it again in the optimiser: three extra passes over K weight sets that do not fit in the
cache, plus autograd's bookkeeping. With SGD the update can be the weight-gradient GEMM itself:
``W = (1 - lr * c) * W - lr * (g^T a)`` is one ``addmm_`` with ``alpha = -lr``, after which the mask zeroes
what the GEMM wrote into pruned weights (``W *= M``). With momentum the GEMM accumulates into the momentum
buffer instead (``buf = m * buf + g^T a``), which is masked, then ``W -= lr * buf``. Saving those passes
makes the step markedly faster (figures: benchmarks/README.md).

Per model this is the same arithmetic as ``ticketlab.training.loop.train`` with ``torch.optim.SGD``: loss = mean
cross-entropy; gradient of the loss + ``l2 * ||w||^2``, plus ``weight_decay * w``; masked gradient
(a pruned weight stays exactly zero, and so does its momentum); ``buf = momentum * buf + d`` (the first
step ``buf = d``), ``w -= lr * buf``. Only the summation order inside the GEMMs differs, and where the
mean's 1 / B is applied (float tolerance).
Nesterov keeps the autograd step.

Adam (:class:`FusedAdam`) cannot live inside a GEMM, but it gains from the same hand-written backward:
each weight gradient is one GEMM written into a buffer (no autograd graph, no fresh gradient tensors),
masked in place, and the kernel of torch's fused Adam steps the parameters, called directly (the
optimiser object's per-step Python, and its import of ``torch._dynamo``, cost more than the step at these
sizes). At low density a layer steps only its kept weights (``hardware.adam_choice``: the same update,
pruned weights having gradient and moments 0). Per model this is ``train``'s autograd step with
``torch.optim.Adam`` (the recipe's ``make_optimizer``), to float tolerance: the gradients are the same
sums, the update is the same kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.config.recipe import Recipe
from ticketlab.hardware.adam_choice import Kept, fused_adam, use_compact
from ticketlab.hardware.blas import addmm_, linear_into
from ticketlab.models.mlp import MLP


def applies(model: nn.Module, recipe: Recipe) -> bool:
    """Whether :class:`FusedSGD` (or :class:`FusedAdam`) can train this model with this recipe: an MLP
    without hooks (its forward is computed here, not by the module), every parameter trained, SGD without
    Nesterov or Adam."""
    if type(model) is not MLP or (recipe.optimizer == "sgd" and recipe.nesterov):
        return False
    hooked = any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks for m in model.modules()
    )
    return not hooked and all(p.requires_grad for p in model.parameters())


def for_mlp(
    template: nn.Module,
    params: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    recipe: Recipe,
) -> FusedSGD | None:
    """The fused step over an MLP's parameters stacked K deep (name -> (K, ...); a view of one model's
    parameters is K = 1) with stacked 0/1 ``masks``, or None where it does not apply (use autograd)."""
    if not applies(template, recipe):
        return None
    layers = range(len(template.layers))
    weights = [f"layers.{i}.weight" for i in layers]
    if set(masks) - set(weights):
        return None
    # a layer every model keeps whole needs no mask pass
    layer_masks = [masks[n] if n in masks and not bool(masks[n].all()) else None for n in weights]
    biases = [f"layers.{i}.bias" for i in layers]
    if recipe.optimizer == "adam":
        return FusedAdam([params[n] for n in weights], [params[n] for n in biases], layer_masks, recipe)
    return FusedSGD([params[n] for n in weights], [params[n] for n in biases], layer_masks, recipe)


class FusedSGD:
    """SGD on K stacked MLPs: ``weights[i]`` (K, out, in), ``biases[i]`` (K, out), updated in place.

    ``masks[i]`` is layer i's stacked weight mask as 0/1 floats, or None where every model keeps every
    weight. Biases are never masked (they are not prunable).
    """

    # The backward pass carries the summed loss's gradient and the updates scale it to the mean's: one
    # pass fewer than dividing the logits' gradient. Not for Adam, which divides first, as autograd does:
    # Adam normalises each gradient, so where one nearly cancels its L2 term a rounding difference shows
    # (tests/test_fused_sgd.py's agreement with autograd).
    scale_in_updates = True

    def __init__(
        self,
        weights: Sequence[torch.Tensor],
        biases: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor | None],
        recipe: Recipe,
    ) -> None:
        if not (len(weights) == len(biases) == len(masks)):
            raise ValueError("FusedSGD: give one weight, bias and mask (or None) per layer")
        self.weights, self.biases, self.masks = list(weights), list(biases), list(masks)
        self.momentum = recipe.momentum
        self.decay = recipe.weight_decay
        self.l2 = recipe.l2
        self._buffers: dict[int, torch.Tensor] = {}  # id of a parameter (as the step sees it) -> its momentum buffer
        # one model (K = 1) is stepped on 2-D views of its (1, ...) tensors: (B, features) batches, plain
        # addmm / mm calls, the same memory
        self.flat = self.weights[0].shape[0] == 1
        self._w = [w[0] for w in self.weights] if self.flat else self.weights
        self._b = [b[0] for b in self.biases] if self.flat else self.biases
        self._m = [m[0] if self.flat and m is not None else m for m in self.masks]
        self._stacked = {id(v): t for v, t in zip(self._w + self._b, self.weights + self.biases)}
        self._scratch: dict[tuple, tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]] = {}
        self._ones: dict[int, torch.Tensor] = {}  # batch -> ones: sums over a batch by addmv_
        # what every gradient that reaches a parameter is multiplied by: 1, or 1 / batch when the step's
        # backward pass carries the gradient of the batch's summed loss (``scale_in_updates``)
        self._scale = 1.0

    def _buffers_for(
        self, x: torch.Tensor, batch: int
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """The step's reused tensors for this batch size: each layer's output, each layer's input gradient
        (the first layer's is never computed), the one-hot's -1s and the log-probabilities. Reused from step
        to step: nothing the step returns or keeps points into them."""
        key = (batch, x.dtype, x.device)
        if key not in self._scratch:
            lead = (batch,) if self.flat else (self.weights[0].shape[0], batch)
            new = [torch.empty(*lead, w.shape[-2], dtype=x.dtype, device=x.device) for w in self._w]
            grads = [torch.empty(*lead, w.shape[-1], dtype=x.dtype, device=x.device) for w in self._w]
            minus_one = torch.full((*lead, 1), -1.0, dtype=x.dtype, device=x.device)
            self._scratch[key] = (new, grads, minus_one, torch.empty_like(new[-1]))
        return self._scratch[key]

    # inference mode, not no_grad: torch skips the version counters and autograd metadata of the tensors the
    # step makes (the parameters, updated in place, stay ordinary tensors; nothing the step makes is kept
    # beyond it but the losses and its own buffers)
    @torch.inference_mode()
    def step(
        self, x: torch.Tensor, y: torch.Tensor, lr: float, dropout: Callable[[torch.Size], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """One update on the batch ``x`` (K, B, ...), ``y`` (K, B); returns each model's mean loss (K,).

        ``dropout(shape)`` gives the multiplier (0 or 1 / (1 - p)) for each (K, B, features) hidden
        activation, or None.
        """
        k, batch = y.shape
        self.begin()
        outputs, input_grads, minus_one, log_p = self._buffers_for(x, batch)
        h = x.reshape(batch, -1) if self.flat else x.reshape(k, batch, -1)
        inputs = [h]
        noises: list[torch.Tensor | None] = []
        last = len(self._w) - 1
        for i, w in enumerate(self._w):
            h = self.layer_forward(i, h, outputs[i])
            if i < last:
                h.clamp_min_(0)
                noise = dropout(torch.Size((k, batch, w.shape[-2]))).view(h.shape) if dropout is not None else None
                if noise is not None:
                    h.mul_(noise)
                noises.append(noise)
                inputs.append(h)
        torch.log_softmax(h, -1, out=log_p)
        if self.flat:
            target = y.view(batch, 1)
            losses = F.nll_loss(log_p, y.view(batch)).view(1)
        else:
            target = y.unsqueeze(-1)
            losses = -log_p.gather(-1, target).squeeze(-1).mean(1)
        g = log_p.exp_()  # d(summed loss)/d(logits) = softmax - onehot, per model
        g.scatter_add_(-1, target, minus_one)
        if self.scale_in_updates:
            self._scale = 1.0 / batch  # the mean loss's gradients, as alphas of the update GEMMs
        else:
            g.div_(batch)
        for i in range(last, -1, -1):
            a = inputs[i]
            g_prev = None
            if i > 0:  # through layer i with its weights before this step's update
                g_prev = self.layer_input_grad(i, g, input_grads[i])
                if noises[i - 1] is not None:
                    g_prev.mul_(noises[i - 1])
                torch.ops.aten.threshold_backward.grad_input(g_prev, a, 0.0, grad_input=g_prev)
            self.layer_update(i, g, a, lr)
            g = g_prev
        self.end(lr)
        return losses

    # -- the step's parts, which a subclass may take over (``training.sparse_step``) -----------------
    def begin(self) -> None:
        """Before a step's forward pass (SGD: nothing)."""

    def end(self, lr: float) -> None:
        """After a step's backward pass, which for SGD updated everything already."""

    def layer_forward(self, i: int, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Layer i's pre-activation for the input ``h``, into the step's buffer ``out`` (returned)."""
        return linear_into(out, h, self._w[i], self._b[i])

    def layer_input_grad(self, i: int, g: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``g W``: the gradient at layer i's input from the one ``g`` at its output (before the update), into
        the step's buffer ``out`` (returned; the caller may change it in place)."""
        return addmm_(out, g, self._w[i], beta=0.0)

    def layer_update(self, i: int, g: torch.Tensor, a: torch.Tensor, lr: float) -> None:
        """Layer i's part of the update from the gradient ``g`` at its output (times ``_scale``) and its input
        ``a`` (Adam: its gradients, into the buffers that :meth:`end` steps from)."""
        self._update_weight(self._w[i], g.mT, a, self._m[i], lr)
        self._update_bias(self._b[i], g, lr)

    def _decay(self) -> float:
        return self.decay + 2 * self.l2  # both add a multiple of w to the gradient

    def _update_weight(
        self, w: torch.Tensor, g_t: torch.Tensor, a: torch.Tensor, mask: torch.Tensor | None, lr: float
    ) -> None:
        c = self._decay()
        if not self.momentum:
            addmm_(w, g_t, a, alpha=-lr * self._scale, beta=1.0 - lr * c)  # w - lr * (grad + c * w)
            if mask is not None:
                w.mul_(mask)
            return
        buf = self._buffers.get(id(w))
        if buf is None:  # torch's first step: buf = d, i.e. momentum * 0 + d
            buf = self._buffers[id(w)] = torch.zeros_like(w)
        addmm_(buf, g_t, a, beta=self.momentum, alpha=self._scale)
        if c:
            buf.add_(w, alpha=c)  # w is 0 wherever pruned, so this keeps pruned entries of buf unchanged
        if mask is not None:
            buf.mul_(mask)
        w.add_(buf, alpha=-lr)

    def _batch_sum_into(self, out: torch.Tensor, g: torch.Tensor, beta: float, alpha: float = 1.0) -> torch.Tensor:
        """``out = beta * out + alpha * g.sum(-2)``: the bias gradient of a batch (B, out) as one ``addmv_`` (K = 1),
        a sum and an add for K stacked models (K, B, out)."""
        if g.dim() == 2:
            ones = self._ones.get(g.shape[0])
            if ones is None:
                ones = self._ones[g.shape[0]] = torch.ones(g.shape[0], dtype=g.dtype, device=g.device)
            return out.addmv_(g.mT, ones, beta=beta, alpha=alpha)
        if beta == 0.0:
            torch.sum(g, -2, out=out)
            return out.mul_(alpha) if alpha != 1.0 else out
        if beta != 1.0:
            out.mul_(beta)
        return out.add_(g.sum(-2), alpha=alpha)

    def _update_bias(self, b: torch.Tensor, g: torch.Tensor, lr: float) -> None:
        """SGD on the bias ``b`` from the gradient ``g`` (..., B, out) at its layer's output: the bias's gradient is
        ``g`` summed over the batch (times ``_scale``), plus the decay terms."""
        c = self._decay()
        if not self.momentum:
            self._batch_sum_into(b, g, beta=1.0 - lr * c, alpha=-lr * self._scale)  # b - lr * (sum + c * b)
            return
        buf = self._buffers.get(id(b))
        if buf is None:
            buf = self._buffers[id(b)] = torch.zeros_like(b)
        self._batch_sum_into(buf, g, beta=self.momentum, alpha=self._scale)
        if c:
            buf.add_(b, alpha=c)
        b.add_(buf, alpha=-lr)


def compacted(fused: FusedSGD | None) -> list[bool] | None:
    """Per layer, whether a :class:`FusedAdam` stepped only its kept weights (None: not a FusedAdam, or
    one that never stepped): what a level records, since the two ways agree to float tolerance, not bit
    for bit."""
    return list(fused.compacted) if isinstance(fused, FusedAdam) and fused.compacted is not None else None


class FusedAdam(FusedSGD):
    """Adam on K stacked MLPs: :class:`FusedSGD`'s forward and hand-written backward write each gradient into
    a buffer, then one fused Adam kernel (``hardware.adam_choice.fused_adam``: ``torch.optim.Adam(fused=True)``'s
    kernel and arguments, called without the optimiser's per-step Python) steps the weights and biases in
    place. ``weights`` must be contiguous (views of contiguous parameters are).

    A masked layer takes one of two equal ways (``hardware.adam_choice``): dense, its gradient multiplied by
    the mask and every weight stepped (a pruned one by exactly 0), or compacted, only its kept weights
    gathered, stepped and scattered back. Which one is chosen at the first step, on the training's threads,
    from the measured crossover density (``use_compact``); ``compacted`` says per layer."""

    scale_in_updates = False

    def __init__(
        self,
        weights: Sequence[torch.Tensor],
        biases: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor | None],
        recipe: Recipe,
    ) -> None:
        super().__init__(weights, biases, masks, recipe)
        self.l2 = recipe.l2  # Adam adds weight_decay * w itself: only the L2 term is added here
        self.decay = 0.0
        self.betas, self.weight_decay = recipe.betas, recipe.weight_decay
        if not all(w.is_contiguous() for w in self.weights):
            raise ValueError("FusedAdam: the weights must be contiguous (the compacted step indexes them flat)")
        self._grads = {id(t): torch.zeros_like(t) for t in self.weights + self.biases}  # gradient buffers
        for view, t in zip(self._w + self._b, self.weights + self.biases):  # the step's 2-D views of them (K = 1)
            self._grads[id(view)] = self._grads[id(t)][0] if self.flat else self._grads[id(t)]
        self._step = torch.zeros((), dtype=torch.float32, device=self.weights[0].device)  # as torch's fused Adam
        self._kept: dict[int, Kept] = {}  # id of a compacted weight -> its kept weights
        self.compacted: list[bool] | None = None  # per layer, once chosen at the first step
        self._dense: tuple[list[torch.Tensor], ...] = ()

    def _stepped_elsewhere(self, i: int) -> bool:
        """Whether layer i's weight is stepped outside this class's lists (a subclass's own kept weights,
        ``training.sparse``): it then takes no gradient buffer pass here and no place in the Adam lists."""
        return False

    def _choose(self) -> None:
        self.compacted = []
        outside = set()
        for i, (w, mask) in enumerate(zip(self.weights, self.masks)):
            if self._stepped_elsewhere(i):
                outside.add(id(w))
                self.compacted.append(True)  # only its kept weights are stepped
                continue
            # on CPU only: the crossover is timed on the CPU (elsewhere the dense step, as before)
            compact = mask is not None and mask.device.type == "cpu" and use_compact(mask.numel(), float(mask.mean()))
            if compact:
                assert mask is not None
                self._kept[id(w)] = Kept(mask)
            self.compacted.append(compact)
        dense = [t for t in self.weights if id(t) not in self._kept and id(t) not in outside] + self.biases
        self._dense = (
            dense,
            [self._grads[id(t)] for t in dense],
            [torch.zeros_like(t) for t in dense],
            [torch.zeros_like(t) for t in dense],
        )

    def begin(self) -> None:
        if self.compacted is None:
            self._choose()

    def end(self, lr: float) -> None:
        self._adam(lr)  # from the gradients the backward pass wrote into the buffers

    def _adam(self, lr: float, more: Sequence[tuple[torch.Tensor, ...]] = ()) -> None:
        """One Adam update from the gradient buffers: the dense tensors, the compacted layers' kept weights
        (gathered, stepped, scattered back) and ``more`` (parameter, gradient, first and second moment) in
        the same kernel call."""
        params, grads, avgs, sqs = (list(part) for part in self._dense)
        gathered = []
        for w, kept in ((w, self._kept[id(w)]) for w in self.weights if id(w) in self._kept):
            kept.gather(w, self._grads[id(w)])
            if self.l2:
                kept.grad.add_(kept.param, alpha=2 * self.l2)
            gathered.append((kept.param, kept.grad, kept.avg, kept.sq))
        for param, grad, avg, sq in [*gathered, *more]:
            params.append(param)
            grads.append(grad)
            avgs.append(avg)
            sqs.append(sq)
        self._step.add_(1)
        fused_adam(params, grads, avgs, sqs, self._step, lr=lr, betas=self.betas, weight_decay=self.weight_decay)
        for w in self.weights:
            if id(w) in self._kept:
                self._kept[id(w)].scatter(w)

    def _update_weight(
        self, w: torch.Tensor, g_t: torch.Tensor, a: torch.Tensor, mask: torch.Tensor | None, lr: float
    ) -> None:
        grad = self._grads[id(w)]
        addmm_(grad, g_t, a, beta=0.0, alpha=self._scale)  # grad = g^T a (+ 2 * l2 * w below)
        if id(self._stacked[id(w)]) in self._kept:  # compacted: the kept entries are gathered, L2 added there, later
            return
        if self.l2:
            grad.add_(w, alpha=2 * self.l2)
        if mask is not None:
            grad.mul_(mask)

    def _update_bias(self, b: torch.Tensor, g: torch.Tensor, lr: float) -> None:
        buffer = self._batch_sum_into(self._grads[id(b)], g, beta=0.0, alpha=self._scale)
        if self.l2:
            buffer.add_(b, alpha=2 * self.l2)
