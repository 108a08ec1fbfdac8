"""The sparse step of a pruned MLP: the fused SGD or Adam step with the kept weights of sparse layers in CSR.

Below some density a masked dense GEMM mostly multiplies zeros. :class:`SparseSGD` is the fused SGD step
(``training.fused_sgd``, one model) in which chosen layers keep only their kept weights (CSR, the values
being the master copy) and compute

* the forward product with a sparse x dense ``addmm`` (``W x^T + b``),
* the input gradient ``g W`` with the transposed CSR (its values gathered from the master each step),
* the weight gradient only at kept positions: the sampled product ``(g^T a)[kept]`` (``sampled_addmm``),

then update the kept values (SGD, momentum, weight decay, L2 as the fused step) and copy them into the
model's dense weight, whose pruned entries are never written and stay exactly 0. :class:`SparseAdam` is
the same with the fused Adam step: the kept values' gradients and moments join the one Adam kernel call.
Other layers take the fused step's dense products. Per model this is the dense masked step's arithmetic;
only the summation order differs (float tolerance, tested in tests/test_sparse_training.py).

A training's evaluations can take a CSR of a layer's kept weights too (:class:`Evaluation`; which layers
is timed apart from the training's choice, in ``training.sparse``): the split as columns (transposed once
per training), each activation kept as (features, examples), so a sparse layer's product ``W h`` needs
no transposes (LeNet-300-100's first layer, 15,000 examples, 1 thread, AMD EPYC family 25:
85 ms dense at every density, 75 ms in CSR at 10%, 33 at 5%, 11 at 2%).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

from ticketlab.config.recipe import Recipe
from ticketlab.hardware import blas
from ticketlab.training.evaluate import evaluate_columns, mlp_chunk
from ticketlab.training.fused_sgd import FusedAdam, FusedSGD


def _quiet_csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


class KeptCsr:
    """One layer's kept weights: CSR of W (its values the master copy), CSR of W^T sharing the indices'
    order through ``order``, and each kept weight's flat position in the dense weight."""

    def __init__(self, weight: torch.Tensor, mask: torch.Tensor) -> None:
        out, inp = weight.shape
        rows, cols = (mask != 0).nonzero(as_tuple=True)  # row-major: CSR order
        self.flat = rows * inp + cols
        crow = torch.zeros(out + 1, dtype=torch.int64, device=weight.device)
        crow[1:] = torch.bincount(rows, minlength=out).cumsum(0)
        self.values = weight.reshape(-1)[self.flat].clone()
        self.w = _quiet_csr(crow, cols, self.values, (out, inp))
        self.order = torch.argsort(cols * out + rows)
        crow_t = torch.zeros(inp + 1, dtype=torch.int64, device=weight.device)
        crow_t[1:] = torch.bincount(cols, minlength=inp).cumsum(0)
        self.values_t = self.values[self.order]
        self.w_t = _quiet_csr(crow_t, rows[self.order], self.values_t, (inp, out))
        self.buf: torch.Tensor | None = None  # momentum of the kept weights


class SparseSGD(FusedSGD):
    """The fused SGD step of one MLP (weights (1, out, in), as ``FusedSGD``) with the layers ``sparse[i]``
    in CSR. The model's dense weights are kept equal to the step's after every update."""

    def __init__(
        self,
        weights: Sequence[torch.Tensor],
        biases: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor | None],
        recipe: Recipe,
        sparse: Sequence[bool],
    ) -> None:
        super().__init__(weights, biases, masks, recipe)
        if any(w.shape[0] != 1 for w in self.weights) or len(sparse) != len(self.weights):
            raise ValueError(f"{type(self).__name__} trains one model: weights (1, out, in), one sparse flag per layer")
        # the fused step's 2-D views of the model's weights (the ones its buffers are keyed by)
        self.w2, self.b2, self.m2 = self._w, self._b, self._m
        self.csr: list[KeptCsr | None] = [
            KeptCsr(w, m) if s and m is not None else None for w, m, s in zip(self.w2, self.m2, sparse)
        ]

    # -- one layer ---------------------------------------------------------------------------------
    def forward(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """Layer i's pre-activation for the (B, in) batch ``h``: (B, out)."""
        c, b = self.csr[i], self.b2[i]
        if c is None:
            return blas.addmm_(b.unsqueeze(0).expand(h.shape[0], b.shape[0]).contiguous(), h, self.w2[i].mT)
        return torch.addmm(b.unsqueeze(1), c.w, h.mT).mT

    def input_grad(self, i: int, g: torch.Tensor) -> torch.Tensor:
        """``g W``: the gradient at layer i's input from the one ``g`` (B, out) at its output."""
        c = self.csr[i]
        if c is None:
            w = self.w2[i]
            return blas.addmm_(torch.empty(g.shape[0], w.shape[1], dtype=g.dtype, device=g.device), g, w, beta=0.0)
        torch.index_select(c.values, 0, c.order, out=c.values_t)
        return torch.mm(c.w_t, g.mT.contiguous()).mT  # a row-major right operand: measured faster

    def weight_grad(self, i: int, g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``(g^T a)`` at layer i's kept positions, in CSR order (a sparse layer only)."""
        c = self.csr[i]
        assert c is not None
        return torch.sparse.sampled_addmm(c.w, g.mT.contiguous(), a, beta=0.0).values()

    def update(self, i: int, g: torch.Tensor, a: torch.Tensor, lr: float) -> None:
        """Layer i's part of the step from the gradient ``g`` at its output and its input ``a``: for SGD the
        update itself, as the fused step."""
        c = self.csr[i]
        if c is None:
            self._update_weight(self.w2[i], g.mT, a, self.m2[i], lr)
        else:
            self._update_kept(i, c, g, a, lr)
        self._update_bias(self.b2[i], g, lr)

    def _update_kept(self, i: int, c: KeptCsr, g: torch.Tensor, a: torch.Tensor, lr: float) -> None:
        grad, decay = self.weight_grad(i, g, a), self._decay()
        if not self.momentum:
            if decay:
                c.values.mul_(1.0 - lr * decay)
            c.values.add_(grad, alpha=-lr)
        else:
            if c.buf is None:
                c.buf = torch.zeros_like(c.values)
            c.buf.mul_(self.momentum).add_(grad)
            if decay:
                c.buf.add_(c.values, alpha=decay)
            c.values.add_(c.buf, alpha=-lr)
        self.w2[i].view(-1).index_copy_(0, c.flat, c.values)

    def start(self) -> None:
        """Before the first backward pass (SGD: nothing)."""

    def finish(self, lr: float) -> None:
        """After the backward pass, which for SGD updated everything already."""

    # -- the step ----------------------------------------------------------------------------------
    @torch.no_grad()
    def step(
        self, x: torch.Tensor, y: torch.Tensor, lr: float, dropout: Callable[[torch.Size], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """One update on the batch ``x`` (1, B, ...), ``y`` (1, B); returns the mean loss (1,)."""
        self.start()
        batch = y.shape[1]
        h = x.reshape(batch, -1)
        inputs, noises = [h], []
        last = len(self.w2) - 1
        for i in range(last + 1):
            h = self.forward(i, h)
            if i < last:
                h.clamp_min_(0)
                noise = dropout(torch.Size((1, *h.shape)))[0] if dropout is not None else None
                if noise is not None:
                    h.mul_(noise)
                noises.append(noise)
                inputs.append(h)
        log_p = h.log_softmax(-1)
        target = y[0].unsqueeze(-1)
        loss = -log_p.gather(-1, target).mean()
        g = log_p.exp_()  # d(mean loss)/d(logits) = (softmax - onehot) / B
        g.scatter_add_(-1, target, torch.full_like(target, -1.0, dtype=g.dtype)).div_(batch)
        for i in range(last, -1, -1):
            a = inputs[i]
            g_prev = None
            if i > 0:  # through layer i with its weights before this step's update
                g_prev = self.input_grad(i, g)
                if noises[i - 1] is not None:
                    g_prev = g_prev * noises[i - 1]
                g_prev = torch.ops.aten.threshold_backward(g_prev, a, 0.0)
            self.update(i, g, a, lr)
            g = g_prev
        self.finish(lr)
        return loss.view(1)


class SparseAdam(SparseSGD, FusedAdam):
    """The fused Adam step of one MLP with the layers ``sparse[i]`` in CSR: the backward writes the dense
    layers' gradients into ``FusedAdam``'s buffers and a sparse layer's gradient at its kept positions only
    (the sampled product, plus the L2 term), then one fused Adam kernel steps the dense tensors, the
    compacted layers' kept weights and the sparse layers' kept values (each with its own moments), which
    are copied into the model's dense weights. Per model this is ``FusedAdam``'s arithmetic: a pruned
    weight has gradient and moments 0 there and is never stepped here."""

    def __init__(
        self,
        weights: Sequence[torch.Tensor],
        biases: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor | None],
        recipe: Recipe,
        sparse: Sequence[bool],
    ) -> None:
        super().__init__(weights, biases, masks, recipe, sparse)
        self._kept_adam = {
            i: (c, torch.empty_like(c.values), torch.zeros_like(c.values), torch.zeros_like(c.values))
            for i, c in enumerate(self.csr)
            if c is not None
        }  # sparse layer -> its CSR and its kept values' gradient, first and second moment

    def _stepped_elsewhere(self, i: int) -> bool:
        return self.csr[i] is not None

    def _update_kept(self, i: int, c: KeptCsr, g: torch.Tensor, a: torch.Tensor, lr: float) -> None:
        grad = self._kept_adam[i][1]
        grad.copy_(self.weight_grad(i, g, a))
        if self.l2:
            grad.add_(c.values, alpha=2 * self.l2)

    def start(self) -> None:
        if self.compacted is None:
            self._choose()

    def finish(self, lr: float) -> None:
        self._adam(lr, [(c.values, grad, avg, sq) for c, grad, avg, sq in self._kept_adam.values()])
        for i, (c, *_) in self._kept_adam.items():
            self.w2[i].view(-1).index_copy_(0, c.flat, c.values)


class Evaluation:
    """The evaluations of one training of one MLP with some layers through a CSR of their kept weights
    (``training.evaluate.evaluate_columns``): ``weights`` and ``biases`` are the model's (out, in) and
    (out,) tensors as training updates them, ``masks`` their 0/1 masks (None: whole), ``sparse`` the layers
    to take in CSR. Before each evaluation the CSR values are gathered from the current weights (pruned
    entries are 0 and stay out). A split is transposed to columns once and kept while this object lives."""

    def __init__(
        self,
        weights: Sequence[torch.Tensor],
        biases: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor | None],
        sparse: Sequence[bool],
    ) -> None:
        self.weights, self.biases = list(weights), list(biases)
        self.csr = [
            KeptCsr(w, m) if s and m is not None else None for w, m, s in zip(weights, masks, sparse, strict=True)
        ]
        self.chunk = mlp_chunk(max(w.shape[0] for w in self.weights))
        self._columns: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id of a split's x -> (x, x as columns)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """The model's mean loss and accuracy on ``(x, y)``, as ``training.evaluate.evaluate`` gives them."""
        kept = self._columns.get(id(x))
        if kept is None or kept[0] is not x:
            kept = self._columns[id(x)] = (x, x.flatten(1).mT.contiguous())
        layers = []
        for w, c in zip(self.weights, self.csr):
            if c is None:
                layers.append(w)
            else:
                torch.index_select(w.reshape(-1), 0, c.flat, out=c.values)
                layers.append(c.w)
        return evaluate_columns(kept[1], y, layers, self.biases, self.chunk)
