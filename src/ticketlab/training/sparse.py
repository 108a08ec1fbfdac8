"""Sparse training of a pruned MLP: the fused SGD or Adam step with the kept weights of sparse layers in CSR.

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

Where: one model (``training.loop.train``) where the fused step applies (an MLP with SGD or Adam, no
hooks), on CPU. Stacked models (``train_many``), Nesterov, hooks and convolutions keep the dense path.

Which layers: ``$TICKETLAB_SPARSE_TRAINING`` (or :func:`set_mode`) ``off`` (never), ``on`` (every layer whose
mask prunes something and keeps something) or ``auto`` (default): a layer keeping at most
``MAX_AUTO_DENSITY`` of at least ``MIN_AUTO_WEIGHTS`` weights is timed with the real code, dense step vs
sparse step of that layer on random data (:func:`measure`), and goes sparse when the sparse step takes at
most ``MARGIN`` of the dense one's time. The verdict is cached in the user cache
(``sparse_training.json``) per CPU, torch, threads, BLAS, layer shape, batch size and density bucket (a
factor sqrt(2) wide), so a machine measures each case once. What was chosen is returned as a report that
each level records (``sparse_training`` in its ``metrics.json``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ticketlab.config.recipe import Recipe
from ticketlab.data.locate import cache_dir
from ticketlab.files import atomic_write_json
from ticketlab.hardware import blas
from ticketlab.hardware.environment import cpu_model
from ticketlab.training.fused_sgd import FusedAdam, FusedSGD

ENV = "TICKETLAB_SPARSE_TRAINING"
MODES = ("auto", "on", "off")
MAX_AUTO_DENSITY = 0.25  # auto measures no layer keeping more: CSR is far behind a GEMM there
MIN_AUTO_WEIGHTS = 4096  # nor a layer this small: its GEMM costs microseconds
MARGIN = 0.9  # sparse must measure at most this fraction of the dense step's time
CACHE_FILE = "sparse_training.json"

_override: str | None = None


def _checked(choice: str, where: str) -> str:
    choice = choice.strip().lower() or "auto"
    if choice not in MODES:
        raise ValueError(f"{where} must be one of {', '.join(MODES)}; got {choice!r}")
    return choice


def set_mode(choice: str | None) -> None:
    """Choose the mode for the rest of the process (``None``: back to ``$TICKETLAB_SPARSE_TRAINING``); for
    benchmarks and tests that compare the two paths."""
    global _override
    _override = None if choice is None else _checked(choice, "sparse training mode")


def mode() -> str:
    """``auto``, ``on`` or ``off``: :func:`set_mode`'s choice, else ``$TICKETLAB_SPARSE_TRAINING`` (default auto)."""
    return _override or _checked(os.environ.get(ENV, "auto"), ENV)


def _quiet_csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


class _Csr:
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
        self.csr: list[_Csr | None] = [
            _Csr(w, m) if s and m is not None else None for w, m, s in zip(self.w2, self.m2, sparse)
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

    def _update_kept(self, i: int, c: _Csr, g: torch.Tensor, a: torch.Tensor, lr: float) -> None:
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

    def _update_kept(self, i: int, c: _Csr, g: torch.Tensor, a: torch.Tensor, lr: float) -> None:
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


def _step_class(recipe: Recipe) -> type[SparseSGD]:
    return SparseAdam if recipe.optimizer == "adam" else SparseSGD


@torch.no_grad()
def measure(weight: torch.Tensor, mask: torch.Tensor, recipe: Recipe, input_grad: bool) -> tuple[float, float]:
    """Seconds of one training step of this layer (forward, input gradient if ``input_grad``, update) on
    the dense path and on the sparse one, on copies of the layer and random data of the recipe's batch
    size: the median of 7 rounds alternating the two, each about 5 ms long."""
    out, inp = weight.shape
    g = torch.Generator().manual_seed(0)
    a = torch.randn(recipe.batch_size, inp, generator=g).clamp_min_(0).to(weight.device)
    grad = torch.randn(recipe.batch_size, out, generator=g).div_(recipe.batch_size).to(weight.device)

    def runner(sparse: bool) -> Callable[[], None]:
        m = mask.to(weight.dtype).unsqueeze(0)
        step = _step_class(recipe)([weight.detach().unsqueeze(0) * m], [torch.zeros(1, out)], [m], recipe, [sparse])

        def once() -> None:
            step.start()
            step.forward(0, a)
            if input_grad:
                step.input_grad(0, grad)
            step.update(0, grad, a, 1e-6)
            step.finish(1e-6)

        return once

    fns = [runner(False), runner(True)]
    calls = []
    for fn in fns:  # warm-up, then as many calls as fill about 5 ms
        fn()
        started = time.perf_counter()
        fn()
        calls.append(max(1, int(0.005 / max(time.perf_counter() - started, 1e-7))))
    times: list[list[float]] = [[], []]
    for _ in range(7):
        for j, fn in enumerate(fns):
            started = time.perf_counter()
            for _ in range(calls[j]):
                fn()
            times[j].append((time.perf_counter() - started) / calls[j])
    return statistics.median(times[0]), statistics.median(times[1])


def bucket(density: float) -> str:
    """The density range a verdict is cached for: ``(2^-(k+1)/2, 2^-k/2]``, written with 3 digits."""
    k = math.floor(-2 * math.log2(density))
    return f"{2 ** (-(k + 1) / 2):.3g}-{2 ** (-k / 2):.3g}"


def cache_key(shape: tuple[int, int], batch_size: int, density: float, optimizer: str) -> str:
    """Everything a verdict depends on: the machine and build, the optimiser (its update is part of the
    step timed), the layer's shape, batch and density range."""
    return (
        f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads | {blas.backend().name}"
        f" | {optimizer} | {shape[0]}x{shape[1]} | batch {batch_size} | density {bucket(density)}"
    )


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads((cache_dir() / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _verdict(i: int, w: torch.Tensor, m: torch.Tensor, density: float, recipe: Recipe) -> dict[str, Any]:
    """Whether layer i goes sparse under ``auto``: from the cache, else measured (and cached)."""
    key = cache_key((w.shape[0], w.shape[1]), recipe.batch_size, density, recipe.optimizer)
    cached = _read_cache().get(key)
    if isinstance(cached, dict) and isinstance(cached.get("sparse"), bool):
        return {**cached, "cached": True}
    with blas.training_threads():  # the threads the training runs with
        dense_s, sparse_s = measure(w, m, recipe, input_grad=i > 0)
    verdict = {
        "sparse": sparse_s <= MARGIN * dense_s,
        "dense_us": round(dense_s * 1e6, 1),
        "sparse_us": round(sparse_s * 1e6, 1),
        "measured_density": round(density, 5),
    }
    cache = _read_cache()  # another process may have written meanwhile
    cache[key] = verdict
    with contextlib.suppress(OSError):  # a read-only cache: measured again next time
        atomic_write_json(cache_dir() / CACHE_FILE, cache)
    return {**verdict, "cached": False}


def replace(fused: FusedSGD, recipe: Recipe, device: torch.device) -> tuple[FusedSGD, dict[str, Any] | None]:
    """The step to train with: ``fused`` itself, or a :class:`SparseSGD` (:class:`SparseAdam` for a
    ``FusedAdam``) over the same tensors where the mode puts a layer on the sparse path; and the report
    each level records (None: no layer considered)."""
    chosen = mode()
    if chosen == "off" or device.type != "cpu" or fused.weights[0].shape[0] != 1:
        return fused, None
    layers: dict[str, dict[str, Any]] = {}
    sparse = []
    for i, (w, m) in enumerate(zip(fused.weights, fused.masks)):
        kept = int(torch.count_nonzero(m)) if m is not None else 0
        density = kept / m.numel() if m is not None else 1.0
        if (
            m is None
            or kept == 0
            or (chosen == "auto" and (density > MAX_AUTO_DENSITY or m.numel() < MIN_AUTO_WEIGHTS))
        ):
            sparse.append(False)
            continue
        verdict = {"sparse": True} if chosen == "on" else _verdict(i, w[0], m[0], density, recipe)
        layers[f"layers.{i}.weight"] = {"density": round(density, 5), **verdict}
        sparse.append(bool(verdict["sparse"]))
    if not layers:
        return fused, None
    report = {"mode": chosen, "layers": layers}
    if not any(sparse):
        return fused, report
    cls = SparseAdam if isinstance(fused, FusedAdam) else SparseSGD
    return cls(fused.weights, fused.biases, fused.masks, recipe, sparse), report
