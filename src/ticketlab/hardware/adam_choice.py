"""Adam over a masked layer's kept weights only: the compacted step, and whether it pays, measured per machine.

A pruned weight that has been masked since its Adam state was created has gradient 0 and moments
m = v = 0 at every step, so Adam moves it by ``lr * 0 / (0 + eps) = 0`` (weight decay adds
``weight_decay * w = 0``); only the step counter, and with it the bias correction, is shared by all weights.
Stepping only the kept weights therefore gives the same weights: :class:`Kept` gathers a layer's kept
gradients and weights at their flat indices (``index_select``), the fused Adam kernel steps those and their
compact moments, and ``scatter_`` writes them back; pruned weights are never written and stay exactly 0.

The gathers and the scatter cost more per element than the dense step's one pass, so the compacted step
only pays below some density. Which density depends on the machine, so ``auto`` (the default of
``$TICKETLAB_COMPACT_ADAM``: ``auto``, ``on``, ``off``) times both steps (:func:`time_steps`: the dense one
is the mask multiply and the fused Adam over every weight) on random tensors of the layer's size at the
densities of ``DENSITIES`` and takes the largest density at and below which the compacted step measured
faster (:func:`crossover`). The verdict is cached in the user cache (``files.user_cache_dir() / "adam"``,
one checksummed file per key) per CPU model, cores, torch, threads and size bucket (a power of 2), so a
machine measures each size once.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ticketlab.files import CorruptFileError
from ticketlab.hardware import measured

ENV = "TICKETLAB_COMPACT_ADAM"
MODES = ("auto", "on", "off")
DENSITIES = (0.5, 0.35, 0.25, 0.18, 0.12, 0.08, 0.05, 0.02)  # the grid the crossover is measured on
CACHE_VERSION = 1
REPS = 5
ROUNDS = 10

Measure = Callable[[int], Mapping[str, Sequence[float]]]  # numel -> {"dense": [s per density], "compact": [...]}


def mode() -> str:
    """``$TICKETLAB_COMPACT_ADAM`` (default ``auto``); anything else is a ValueError naming the allowed values."""
    chosen = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if chosen not in MODES:
        raise ValueError(f"{ENV} must be one of {', '.join(MODES)}; got {chosen!r}")
    return chosen


def fused_adam(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    avgs: list[torch.Tensor],
    sqs: list[torch.Tensor],
    step: torch.Tensor,
    *,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    eps: float = 1e-8,
) -> None:
    """One Adam update of ``params`` in place: the kernel and arguments of ``torch.optim.Adam(fused=True)``
    (no amsgrad, not maximizing), with one float32 step counter shared by every tensor (already counted up
    for this update), as the optimiser's per-tensor counters all hold the same value."""
    torch._fused_adam_(
        params,
        grads,
        avgs,
        sqs,
        [],
        [step] * len(params),
        amsgrad=False,
        lr=lr,
        beta1=betas[0],
        beta2=betas[1],
        weight_decay=weight_decay,
        eps=eps,
        maximize=False,
        grad_scale=None,
        found_inf=None,
    )


class Kept:
    """A masked layer's kept weights for the compacted step: their flat indices in the (contiguous) weight,
    and compact buffers for the weights, gradients and Adam moments (the moments start at 0)."""

    def __init__(self, mask: torch.Tensor) -> None:
        self.index = mask.reshape(-1).nonzero().squeeze(1)
        n = len(self.index)
        self.param = torch.empty(n, dtype=mask.dtype, device=mask.device)
        self.grad = torch.empty_like(self.param)
        self.avg = torch.zeros_like(self.param)
        self.sq = torch.zeros_like(self.param)

    def gather(self, weight: torch.Tensor, grad: torch.Tensor) -> None:
        """The kept entries of ``weight`` and ``grad`` into the compact buffers."""
        torch.index_select(weight.view(-1), 0, self.index, out=self.param)
        torch.index_select(grad.view(-1), 0, self.index, out=self.grad)

    def scatter(self, weight: torch.Tensor) -> None:
        """The compact weights back into ``weight``; its other entries are not written."""
        weight.view(-1).scatter_(0, self.index, self.param)


def _steps(weight: torch.Tensor, grad: torch.Tensor, mask: torch.Tensor) -> dict[str, Callable[[], None]]:
    """The dense step (mask multiply, fused Adam over every weight) and the compacted one (:class:`Kept`)."""
    avg, sq, step = torch.zeros_like(weight), torch.zeros_like(weight), torch.zeros(())
    kept = Kept(mask)

    def dense() -> None:
        grad.mul_(mask)
        fused_adam([weight], [grad], [avg], [sq], step, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0)

    def compact() -> None:
        kept.gather(weight, grad)
        fused_adam(
            [kept.param], [kept.grad], [kept.avg], [kept.sq], step, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0
        )
        kept.scatter(weight)

    return {"dense": dense, "compact": compact}


def time_steps(numel: int, densities: Sequence[float] = DENSITIES, seed: int = 0) -> dict[str, list[float]]:
    """Seconds of one dense step (mask multiply + fused Adam over ``numel`` weights) and of one compacted
    step (:class:`Kept`: gathers, fused Adam over the kept weights, scatter) at each density: median of
    ``REPS`` interleaved repeats of ``ROUNDS`` steps, after a warm-up, on random data on this process's
    threads."""
    gen = torch.Generator().manual_seed(seed)
    weight, grad = torch.randn(numel, generator=gen), torch.randn(numel, generator=gen)
    out: dict[str, list[float]] = {"dense": [], "compact": []}
    for density in densities:
        steps = _steps(weight, grad, (torch.rand(numel, generator=gen) < density).float())
        times: dict[str, list[float]] = {name: [] for name in steps}
        for fn in steps.values():
            fn()
        for _ in range(REPS):  # interleaved, so a burst of load hits both
            for name, fn in steps.items():
                start = time.perf_counter()
                for _ in range(ROUNDS):
                    fn()
                times[name].append((time.perf_counter() - start) / ROUNDS)
        for name in out:
            out[name].append(statistics.median(times[name]))
    return out


def crossover(rows: Mapping[str, Sequence[float]], densities: Sequence[float] = DENSITIES) -> float:
    """The largest density of ``densities`` (descending) at which, and at every lower one, the compacted
    step measured faster than the dense one; 0.0 where it is not faster at the lowest."""
    found = 0.0
    for density, dense, compact in reversed(list(zip(densities, rows["dense"], rows["compact"]))):
        if compact >= dense:
            break
        found = density
    return found


def size_bucket(numel: int) -> int:
    """Sizes sharing a verdict: the nearest power of 2 (in its exponent)."""
    return max(0, round(math.log2(max(1, numel))))


def machine_key(numel: int) -> dict[str, Any]:
    """What a crossover holds for: processor, cores, torch, torch's thread count now, size bucket."""
    return measured.machine_key(CACHE_VERSION, size=size_bucket(numel))


def _parsed(rows: Mapping[str, Any], path: Path) -> dict[str, list[float]]:
    try:
        parsed = {name: [float(s) for s in rows[name]] for name in ("dense", "compact")}
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptFileError(f"{path}: no dense and compact times ({err})") from None
    if any(len(v) != len(DENSITIES) or any(not math.isfinite(s) or s <= 0 for s in v) for v in parsed.values()):
        raise CorruptFileError(f"{path}: a cached time is missing or not a positive number")
    return parsed


def measured_crossover(numel: int, measure: Measure | None = None, root: Path | None = None) -> float:
    """:func:`crossover` for a layer of ``numel`` weights on this machine: from the cache, else timed by
    ``measure`` (default: :func:`time_steps` at the bucket's size) and cached. A failed timing gives 0.0
    (the dense step), uncached."""
    key = machine_key(numel)
    timer = measure if measure is not None else (lambda n: time_steps(2 ** size_bucket(n)))
    result = measured.cached(measured.cache_file("adam", key, root), key, lambda: timer(numel), _parsed)
    return 0.0 if result.rows is None else crossover(result.rows)  # a failed timing: the dense step


def use_compact(numel: int, density: float, measure: Measure | None = None, root: Path | None = None) -> bool:
    """Whether a layer of ``numel`` weights keeping ``density`` of them takes the compacted step: ``on``:
    every masked layer, ``off``: none, ``auto``: at or below the measured crossover."""
    chosen = mode()
    if chosen == "off" or density >= 1.0:
        return False
    if chosen == "on":
        return True
    return density <= measured_crossover(numel, measure, root)
