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
from collections.abc import Sequence

import torch

from ticketlab.config.recipe import Recipe
from ticketlab.training.evaluate import evaluate_columns
from ticketlab.training.fused_sgd import FusedAdam, FusedSGD


def _quiet_csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


class KeptCsr:
    """One layer's kept weights: CSR of W (its values the master copy), CSR of W^T sharing the indices'
    order through ``order``, and each kept weight's flat position in the dense weight. K stacked models'
    weights (K, out, in) are one block-diagonal CSR (K * out, K * in): model k's block at (k * out, k * in),
    so one sparse product serves all K."""

    def __init__(self, weight: torch.Tensor, mask: torch.Tensor, shared_input: bool = False) -> None:
        """``shared_input``: the K models read one input (a first layer's evaluation): the CSR is the K
        weights stacked, (K * out, in), not block-diagonal."""
        if weight.dim() == 2:
            weight, mask = weight.unsqueeze(0), mask.unsqueeze(0)
        k, out, inp = weight.shape
        models, rows, cols = (mask != 0).nonzero(as_tuple=True)  # (model, row, column) order: CSR order
        self.flat = (models * out + rows) * inp + cols
        width = inp if shared_input else k * inp
        rows = models * out + rows
        if not shared_input:
            cols = models * inp + cols  # in the block-diagonal matrix
        crow = torch.zeros(k * out + 1, dtype=torch.int64, device=weight.device)
        crow[1:] = torch.bincount(rows, minlength=k * out).cumsum(0)
        self.values = weight.reshape(-1)[self.flat].clone()
        self.w = _quiet_csr(crow, cols, self.values, (k * out, width))
        self.order = torch.argsort(cols * (k * out) + rows)
        crow_t = torch.zeros(width + 1, dtype=torch.int64, device=weight.device)
        crow_t[1:] = torch.bincount(cols, minlength=width).cumsum(0)
        self.values_t = self.values[self.order]
        self.w_t = _quiet_csr(crow_t, rows[self.order], self.values_t, (width, k * out))
        self.buf: torch.Tensor | None = None  # momentum of the kept weights


class SparseSGD(FusedSGD):
    """The fused SGD step of K stacked MLPs (weights (K, out, in), as ``FusedSGD``; K = 1: one model) with
    the layers ``sparse[i]`` in CSR: ``FusedSGD.step`` itself, whose per-layer parts take the CSR for those
    layers. The models' dense weights are kept equal to the step's after every update."""

    def __init__(
        self,
        weights: Sequence[torch.Tensor],
        biases: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor | None],
        recipe: Recipe,
        sparse: Sequence[bool],
    ) -> None:
        super().__init__(weights, biases, masks, recipe)
        if len(sparse) != len(self.weights):
            raise ValueError(f"{type(self).__name__}: give one sparse flag per layer")
        self.csr: list[KeptCsr | None] = [
            KeptCsr(w, m) if s and m is not None else None for w, m, s in zip(self._w, self._m, sparse)
        ]

    # -- one layer: the fused step's parts, in CSR where the layer has one ---------------------------
    # One model's batches are (B, features); K stacked models' are (K, B, features), which the
    # block-diagonal CSR takes as one (K * features, B) matrix of columns.
    def layer_forward(self, i: int, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Layer i's pre-activation for the batch ``h``: (B, out), or (K, B, out) for K stacked models."""
        c = self.csr[i]
        if c is None:
            return super().layer_forward(i, h, out)
        if self.flat:
            return torch.addmm(self._b[i].unsqueeze(1), c.w, h.mT).mT
        k, batch, _ = h.shape
        y = torch.addmm(self._b[i].reshape(-1, 1), c.w, h.transpose(1, 2).reshape(-1, batch))
        return y.view(k, -1, batch).transpose(1, 2)

    def layer_input_grad(self, i: int, g: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``g W``: the gradient at layer i's input from the one ``g`` at its output."""
        c = self.csr[i]
        if c is None:
            return super().layer_input_grad(i, g, out)
        torch.index_select(c.values, 0, c.order, out=c.values_t)
        if self.flat:
            return torch.mm(c.w_t, g.mT.contiguous()).mT  # a row-major right operand: measured faster
        k, batch, _ = g.shape
        return torch.mm(c.w_t, _columns(g)).view(k, -1, batch).transpose(1, 2)

    def weight_grad(self, i: int, g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``(g^T a)`` at layer i's kept positions, in CSR order, times ``_scale`` (a sparse layer only)."""
        c = self.csr[i]
        assert c is not None
        if self.flat:
            return torch.sparse.sampled_addmm(c.w, g.mT.contiguous(), a, beta=0.0, alpha=self._scale).values()
        # model k's rows of g^T meet only its own columns of a: the blocks off the diagonal are never sampled
        rows = a.transpose(0, 1).reshape(a.shape[1], -1)  # (B, K * in)
        return torch.sparse.sampled_addmm(c.w, _columns(g), rows, beta=0.0, alpha=self._scale).values()

    def layer_update(self, i: int, g: torch.Tensor, a: torch.Tensor, lr: float) -> None:
        c = self.csr[i]
        if c is None:
            super().layer_update(i, g, a, lr)
            return
        self._update_kept(i, c, g, a, lr)
        self._update_bias(self._b[i], g, lr)

    def _update_kept(self, i: int, c: KeptCsr, g: torch.Tensor, a: torch.Tensor, lr: float) -> None:
        """SGD on a sparse layer's kept values, as the fused step updates a dense one, then into the model."""
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
        self._w[i].view(-1).index_copy_(0, c.flat, c.values)


def _columns(t: torch.Tensor) -> torch.Tensor:
    """K stacked batches (K, B, features) as one (K * features, B) matrix."""
    return t.transpose(1, 2).reshape(-1, t.shape[1])


class SparseAdam(SparseSGD, FusedAdam):
    """The fused Adam step of K stacked MLPs with the layers ``sparse[i]`` in CSR: the backward writes the dense
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

    def end(self, lr: float) -> None:
        self._adam(lr, [(c.values, grad, avg, sq) for c, grad, avg, sq in self._kept_adam.values()])
        for i, (c, *_) in self._kept_adam.items():
            self._w[i].view(-1).index_copy_(0, c.flat, c.values)


class Evaluation:
    """The evaluations of one training of K stacked MLPs (K = 1: one model) with some layers through a CSR
    of their kept weights (``training.evaluate.evaluate_columns``): ``weights`` and ``biases`` are the
    models' (K, out, in) and (K, out) tensors as training updates them, ``masks`` their 0/1 masks (None:
    whole), ``sparse`` the layers to take in CSR (the first layer's K weights stacked on the shared input,
    the others block-diagonal). Before each evaluation the CSR values are gathered from the current
    weights (pruned entries are 0 and stay out). A split is transposed to columns once and kept while this
    object lives. ``chunk``: examples per chunk."""

    def __init__(
        self,
        weights: Sequence[torch.Tensor],
        biases: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor | None],
        sparse: Sequence[bool],
        chunk: int,
    ) -> None:
        self.weights, self.biases, self.chunk = list(weights), list(biases), chunk
        self.k = self.weights[0].shape[0]
        self.csr = [
            KeptCsr(w, m, shared_input=i == 0) if s and m is not None else None
            for i, (w, m, s) in enumerate(zip(weights, masks, sparse, strict=True))
        ]
        self._columns: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id of a split's x -> (x, x as columns)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> list[dict[str, float]]:
        """Each model's mean loss and accuracy on ``(x, y)``, as ``training.evaluate.evaluate`` gives them."""
        kept = self._columns.get(id(x))
        if kept is None or kept[0] is not x:
            kept = self._columns[id(x)] = (x, x.flatten(1).mT.contiguous())
        layers = []
        for i, (w, c) in enumerate(zip(self.weights, self.csr)):
            if c is not None:
                torch.index_select(w.reshape(-1), 0, c.flat, out=c.values)
                layers.append(c.w)
            elif i == 0 or self.k == 1:
                layers.append(w.reshape(-1, w.shape[-1]))  # (K * out, in): the shared input's one product
            else:
                layers.append(w)
        return evaluate_columns(kept[1], y, layers, self.biases, self.chunk, self.k)
