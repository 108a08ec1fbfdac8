"""Sparse training of a pruned MLP: where a layer trains and evaluates through a CSR of its kept weights
(the step itself: ``training.sparse_step``).

Where: one model (``training.loop.train``) or K stacked ones (``training.stacked.train_many``: one
block-diagonal CSR per layer) where the fused step applies (MLPs with SGD or Adam, no hooks), on CPU.
Nesterov, hooks and convolutions keep the dense path.

Which layers: ``$TICKETLAB_SPARSE_TRAINING`` (or :func:`set_mode`) ``off`` (never), ``on`` (every layer whose
mask prunes something and keeps something) or ``auto`` (default). Under ``auto`` a layer keeping at most
``MAX_AUTO_DENSITY`` of at least ``MIN_AUTO_WEIGHTS`` weights is eligible; from the largest down, each
eligible layer trains sparse if the model's whole training step with it sparse (and the layers chosen
before it) takes at most ``MARGIN`` of the step without it (:func:`measure`, the real step on random
data), and it is evaluated through a CSR if its product in an evaluation chunk measures faster by the
same margin (:func:`measure_eval`). The verdicts are cached in the user cache (``sparse_training.json``)
per CPU, torch, threads, BLAS, optimiser, batch size, evaluation chunk and the layers' shapes and
density buckets (a factor sqrt(2) wide), so a machine measures each case once. What was chosen is
returned as a report that each level records (``sparse_training`` in its ``metrics.json``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ticketlab.config.recipe import Recipe
from ticketlab.data.locate import cache_dir
from ticketlab.files import atomic_write_json
from ticketlab.hardware import blas
from ticketlab.hardware.environment import cpu_model
from ticketlab.training.evaluate import EVAL_BATCH, mlp_chunk
from ticketlab.training.fused_sgd import FusedSGD
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


def considered(density: float) -> bool:
    """Whether the mode considers a layer keeping ``density`` of its weights for the sparse path: never when
    ``off``, any layer that prunes something and keeps something when ``on``, and under ``auto`` one keeping
    at most ``MAX_AUTO_DENSITY`` (which :func:`replace` then times, if it is not too small)."""
    chosen = mode()
    if chosen == "off" or not 0 < density < 1:
        return False
    return chosen == "on" or density <= MAX_AUTO_DENSITY


def _step_class(optimizer: str) -> type[SparseSGD]:
    return SparseAdam if optimizer == "adam" else SparseSGD


@torch.no_grad()
def measure(
    weights: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor | None],
    recipe: Recipe,
    dense: Sequence[bool],
    candidate: Sequence[bool],
) -> tuple[float, float]:
    """Seconds of one whole training step of the K stacked models whose layers have these ``weights``
    (K, out, in) and ``masks`` (K, out, in; None: kept whole), with the layers flagged in ``dense`` and in
    ``candidate`` on the sparse path, on copies of the weights and random batches of the recipe's size:
    the median of 7 rounds alternating the two, each about 5 ms long. The whole step, not a layer alone:
    a layer's CSR products measured alone can win and still lose inside the step (LeNet-300-100's first
    layer at 10%, SGD, 1 thread, AMD EPYC family 25: 0.80x alone, 1.05x in the step)."""
    g = torch.Generator().manual_seed(0)
    device = weights[0].device
    k = weights[0].shape[0]
    x = torch.randn(k, recipe.batch_size, weights[0].shape[2], generator=g).clamp_min_(0).to(device)
    y = torch.randint(0, weights[-1].shape[1], (k, recipe.batch_size), generator=g).to(device)
    cls = _step_class(recipe.optimizer)

    def runner(sparse: Sequence[bool]) -> Callable[[], object]:
        ms = [m.to(w.dtype) if m is not None else None for w, m in zip(weights, masks)]
        ws = [(w.detach() * (m if m is not None else 1)).contiguous() for w, m in zip(weights, ms)]
        bs = [torch.zeros(k, w.shape[1], dtype=w.dtype, device=device) for w in weights]
        step = cls(ws, bs, ms, recipe, sparse)
        return lambda: step.step(x, y, 1e-6)

    return _race(runner(dense), runner(candidate))


@torch.no_grad()
def measure_eval(
    weight: torch.Tensor, mask: torch.Tensor, chunk: int, first: bool, dense_chunk: int | None = None
) -> tuple[float, float]:
    """Seconds of this layer's product for ``chunk`` examples of random data in an evaluation of the K
    stacked models whose weights are ``weight`` (K, out, in): dense as the dense evaluation computes it, in
    chunks of ``dense_chunk`` (default ``chunk``; its time scaled to ``chunk`` examples), and from a CSR
    on the chunk as columns (as :class:`Evaluation`: the ``first`` layer's K weights stacked on the shared
    input, a later layer's block-diagonal); median of 7 alternating rounds of about 5 ms."""
    k, out, inp = weight.shape
    dense_chunk = dense_chunk or chunk
    g = torch.Generator().manual_seed(0)
    masked = (weight.detach() * mask).contiguous()
    csr = KeptCsr(masked, mask, shared_input=first).w
    bias = torch.zeros(k, out, dtype=weight.dtype, device=weight.device)
    if first:  # one input for all models: the dense way is one GEMM over the K models' rows
        x = torch.randn(dense_chunk, inp, generator=g).clamp_min_(0).to(weight.device)
        x_t = torch.randn(inp, chunk, generator=g).clamp_min_(0).to(weight.device)
        stacked = masked.reshape(k * out, inp)

        def dense() -> object:
            return torch.addmm(bias.reshape(-1), x, stacked.mT)
    else:
        h = torch.randn(k, dense_chunk, inp, generator=g).clamp_min_(0).to(weight.device)
        x_t = torch.randn(k * inp, chunk, generator=g).clamp_min_(0).to(weight.device)

        def dense() -> object:
            return torch.baddbmm(bias.unsqueeze(1), h, masked.mT)

    dense_s, sparse_s = _race(dense, lambda: torch.addmm(bias.reshape(-1, 1), csr, x_t))
    return dense_s * chunk / dense_chunk, sparse_s


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


def cache_key(
    shapes: Sequence[tuple[int, int]],
    densities: Sequence[float | None],
    batch_size: int,
    optimizer: str,
    models: int = 1,
) -> str:
    """Everything a verdict depends on: the machine and build, the optimiser (its update is part of the
    step timed), the layers' shapes and density ranges (None: a layer kept whole), the batch size and how
    many models are stacked."""
    layers = ", ".join(f"{o}x{i} at {'1' if d is None else bucket(d)}" for (o, i), d in zip(shapes, densities))
    stacked = f" | {models} stacked" if models > 1 else ""
    return (
        f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads | {blas.backend().name}"
        f" | {optimizer} | batch {batch_size}{stacked} | {layers}"
    )


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads((cache_dir() / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _verdicts(
    fused: FusedSGD,
    densities: list[float | None],
    eligible: list[int],
    recipe: Recipe,
    chunk: int,
    dense_chunk: int,
) -> dict[str, Any]:
    """Under ``auto``, per eligible layer: whether it trains sparse, chosen greedily from the largest layer
    down by whole-step timings (:func:`measure`: the step so far against it with this layer sparse too),
    and whether it evaluates through a CSR (:func:`measure_eval`); from the cache, else measured and
    cached."""
    weights, masks, k = fused.weights, fused.masks, fused.weights[0].shape[0]
    shapes = [(w.shape[1], w.shape[2]) for w in weights]
    key = cache_key(shapes, densities, recipe.batch_size, recipe.optimizer, k) + f" | eval chunk {chunk}"
    cached = _read_cache().get(key)
    fields = ("sparse", "eval_sparse")
    if isinstance(cached, dict) and all(
        isinstance(cached.get(str(i)), dict) and all(isinstance(cached[str(i)].get(f), bool) for f in fields)
        for i in eligible
    ):
        return {str(i): {**cached[str(i)], "cached": True} for i in eligible}
    chosen = [False] * len(weights)
    verdicts: dict[str, Any] = {}
    with blas.training_threads():  # the threads the training runs with
        for i in sorted(eligible, key=lambda i: -weights[i].numel()):
            with_it = [*chosen[:i], True, *chosen[i + 1 :]]
            dense_s, sparse_s = measure(weights, masks, recipe, chosen, with_it)
            if sparse_s <= MARGIN * dense_s:
                chosen = with_it
            verdicts[str(i)] = {
                "sparse": chosen[i],
                "dense_us": round(dense_s * 1e6, 1),
                "sparse_us": round(sparse_s * 1e6, 1),
            }
        for i in eligible:
            mask = masks[i]
            assert mask is not None
            eval_dense_s, eval_sparse_s = measure_eval(weights[i], mask, chunk, i == 0, dense_chunk)
            verdicts[str(i)].update(
                eval_sparse=eval_sparse_s <= MARGIN * eval_dense_s,
                eval_dense_us=round(eval_dense_s * 1e6, 1),
                eval_sparse_us=round(eval_sparse_s * 1e6, 1),
                measured_density=round(float(densities[i] or 1.0), 5),
            )
    cache = _read_cache()  # another process may have written meanwhile
    cache[key] = verdicts
    with contextlib.suppress(OSError):  # a read-only cache: measured again next time
        atomic_write_json(cache_dir() / CACHE_FILE, cache)
    return {i: {**v, "cached": False} for i, v in verdicts.items()}


def replace(
    fused: FusedSGD, recipe: Recipe, device: torch.device
) -> tuple[FusedSGD, Evaluation | None, dict[str, Any] | None]:
    """What to train and evaluate with: ``fused`` itself, or a :class:`SparseSGD` (:class:`SparseAdam` for
    a ``FusedAdam``) over the same tensors where the mode puts a layer's training on the sparse path; an
    :class:`Evaluation` where it puts a layer's evaluation there (else None: evaluate the model as it is);
    and the report each level records (None: no layer considered). Training and evaluation are chosen
    each by its own timing."""
    chosen = mode()
    if chosen == "off" or device.type != "cpu":
        return fused, None, None
    k = fused.weights[0].shape[0]
    # a chunk's widest activation block about 1 MiB on the sparse path; the dense one's own chunk
    chunk = mlp_chunk(k * max(w.shape[-2] for w in fused.weights))
    dense_chunk = chunk if k == 1 else EVAL_BATCH
    densities: list[float | None] = []
    eligible = []
    for i, m in enumerate(fused.masks):
        kept = int(torch.count_nonzero(m)) if m is not None else 0
        densities.append(kept / m.numel() if m is not None else None)
        if m is None or kept == 0:
            continue
        if considered(kept / m.numel()) and (chosen == "on" or m.numel() >= MIN_AUTO_WEIGHTS):
            eligible.append(i)
    if not eligible:
        return fused, None, None
    verdicts = (
        {str(i): {"sparse": True, "eval_sparse": True} for i in eligible}
        if chosen == "on"
        else _verdicts(fused, densities, eligible, recipe, chunk, dense_chunk)
    )
    layers = {
        f"layers.{i}.weight": {"density": round(float(densities[i] or 1.0), 5), **verdicts[str(i)]} for i in eligible
    }
    sparse = [str(i) in verdicts and bool(verdicts[str(i)]["sparse"]) for i in range(len(fused.weights))]
    evals = [str(i) in verdicts and bool(verdicts[str(i)]["eval_sparse"]) for i in range(len(fused.weights))]
    report = {"mode": chosen, "layers": layers}
    evaluation = None
    if any(evals):
        evaluation = Evaluation(fused.weights, fused.biases, fused.masks, evals, chunk)
    if not any(sparse):
        return fused, evaluation, report
    cls = _step_class(recipe.optimizer)
    return cls(fused.weights, fused.biases, fused.masks, recipe, sparse), evaluation, report
