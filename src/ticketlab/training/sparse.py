"""Sparse training of a pruned MLP: where a layer trains and evaluates through a CSR of its kept weights
(the step itself: ``training.sparse_step``).

Where: one model (``training.loop.train``) where the fused step applies (an MLP with SGD or Adam, no
hooks), on CPU. Stacked models (``train_many``), Nesterov, hooks and convolutions keep the dense path.

Which layers: ``$TICKETLAB_SPARSE_TRAINING`` (or :func:`set_mode`) ``off`` (never), ``on`` (every layer whose
mask prunes something and keeps something) or ``auto`` (default): a layer keeping at most
``MAX_AUTO_DENSITY`` of at least ``MIN_AUTO_WEIGHTS`` weights is timed with the real code, dense step vs
sparse step of that layer on random data (:func:`measure`), and trains sparse when the sparse step takes
at most ``MARGIN`` of the dense one's time; its product in an evaluation chunk is timed the same way
(:func:`measure_eval`), and it is evaluated through a CSR when that wins by the same margin. The verdicts
are cached in the user cache (``sparse_training.json``) per CPU, torch, threads, BLAS, optimiser, layer
shape, batch size, evaluation chunk and density bucket (a factor sqrt(2) wide), so a machine measures
each case once. What was chosen is returned as a report that each level records (``sparse_training`` in
its ``metrics.json``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from ticketlab.config.recipe import Recipe
from ticketlab.data.locate import cache_dir
from ticketlab.files import atomic_write_json
from ticketlab.hardware import blas
from ticketlab.hardware.environment import cpu_model
from ticketlab.training.evaluate import mlp_chunk
from ticketlab.training.fused_sgd import FusedAdam, FusedSGD
from ticketlab.training.sparse_step import Evaluation, KeptCsr, SparseAdam, SparseSGD

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

    return _race(runner(False), runner(True))


@torch.no_grad()
def measure_eval(weight: torch.Tensor, mask: torch.Tensor, chunk: int) -> tuple[float, float]:
    """Seconds of this layer's product in one evaluation chunk of ``chunk`` examples of random data:
    dense, as ``evaluate`` computes it (``x W^T + b``), and from its CSR on the chunk as columns
    (``W x^T + b``, as :class:`Evaluation`); median of 7 alternating rounds of about 5 ms."""
    out, inp = weight.shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(chunk, inp, generator=g).clamp_min_(0).to(weight.device)
    x_t = x.mT.contiguous()
    dense = (weight.detach() * mask).contiguous()
    csr = KeptCsr(dense, mask).w
    bias = torch.zeros(out, dtype=weight.dtype, device=weight.device)
    return _race(lambda: torch.addmm(bias, x, dense.mT), lambda: torch.addmm(bias.unsqueeze(1), csr, x_t))


def _race(dense: Callable[[], object], sparse: Callable[[], object]) -> tuple[float, float]:
    """Median seconds per call of ``dense`` and ``sparse`` over 7 rounds alternating them, each round as
    many calls as fill about 5 ms."""
    fns = [dense, sparse]
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


def cache_key(shape: tuple[int, int], batch_size: int, density: float, optimizer: str, chunk: int) -> str:
    """Everything a verdict depends on: the machine and build, the optimiser (its update is part of the
    step timed), the layer's shape, batch, evaluation chunk and density range."""
    return (
        f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads | {blas.backend().name}"
        f" | {optimizer} | {shape[0]}x{shape[1]} | batch {batch_size} | eval chunk {chunk}"
        f" | density {bucket(density)}"
    )


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads((cache_dir() / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _verdict(i: int, w: torch.Tensor, m: torch.Tensor, density: float, recipe: Recipe, chunk: int) -> dict[str, Any]:
    """Whether layer i trains and evaluates sparse under ``auto``: from the cache, else measured (and cached)."""
    key = cache_key((w.shape[0], w.shape[1]), recipe.batch_size, density, recipe.optimizer, chunk)
    cached = _read_cache().get(key)
    if isinstance(cached, dict) and all(isinstance(cached.get(k), bool) for k in ("sparse", "eval_sparse")):
        return {**cached, "cached": True}
    with blas.training_threads():  # the threads the training runs with
        dense_s, sparse_s = measure(w, m, recipe, input_grad=i > 0)
        eval_dense_s, eval_sparse_s = measure_eval(w, m, chunk)
    verdict = {
        "sparse": sparse_s <= MARGIN * dense_s,
        "dense_us": round(dense_s * 1e6, 1),
        "sparse_us": round(sparse_s * 1e6, 1),
        "eval_sparse": eval_sparse_s <= MARGIN * eval_dense_s,
        "eval_dense_us": round(eval_dense_s * 1e6, 1),
        "eval_sparse_us": round(eval_sparse_s * 1e6, 1),
        "measured_density": round(density, 5),
    }
    cache = _read_cache()  # another process may have written meanwhile
    cache[key] = verdict
    with contextlib.suppress(OSError):  # a read-only cache: measured again next time
        atomic_write_json(cache_dir() / CACHE_FILE, cache)
    return {**verdict, "cached": False}


def replace(
    fused: FusedSGD, recipe: Recipe, device: torch.device
) -> tuple[FusedSGD, Evaluation | None, dict[str, Any] | None]:
    """What to train and evaluate with: ``fused`` itself, or a :class:`SparseSGD` (:class:`SparseAdam` for
    a ``FusedAdam``) over the same tensors where the mode puts a layer's training on the sparse path; an
    :class:`Evaluation` where it puts a layer's evaluation there (else None: evaluate the model as it is);
    and the report each level records (None: no layer considered). Training and evaluation are chosen per
    layer, each by its own timing."""
    chosen = mode()
    if chosen == "off" or device.type != "cpu" or fused.weights[0].shape[0] != 1:
        return fused, None, None
    chunk = mlp_chunk(max(w.shape[-2] for w in fused.weights))
    layers: dict[str, dict[str, Any]] = {}
    sparse, evals = [], []
    for i, (w, m) in enumerate(zip(fused.weights, fused.masks)):
        kept = int(torch.count_nonzero(m)) if m is not None else 0
        density = kept / m.numel() if m is not None else 1.0
        if (
            m is None
            or kept == 0
            or (chosen == "auto" and (density > MAX_AUTO_DENSITY or m.numel() < MIN_AUTO_WEIGHTS))
        ):
            sparse.append(False)
            evals.append(False)
            continue
        verdict = (
            {"sparse": True, "eval_sparse": True} if chosen == "on" else _verdict(i, w[0], m[0], density, recipe, chunk)
        )
        layers[f"layers.{i}.weight"] = {"density": round(density, 5), **verdict}
        sparse.append(bool(verdict["sparse"]))
        evals.append(bool(verdict["eval_sparse"]))
    if not layers:
        return fused, None, None
    report = {"mode": chosen, "layers": layers}
    evaluation = None
    if any(evals):
        masks = [None if m is None else m[0] for m in fused.masks]
        evaluation = Evaluation([w[0] for w in fused.weights], [b[0] for b in fused.biases], masks, evals)
    if not any(sparse):
        return fused, evaluation, report
    cls = SparseAdam if isinstance(fused, FusedAdam) else SparseSGD
    return cls(fused.weights, fused.biases, fused.masks, recipe, sparse), evaluation, report
