"""Whether K trainings of one MLP run faster stacked (one ``train_many``) than one after another
(``train``), measured on the machine at hand, never assumed (issue 21, item 2: a job smaller than the
machine still fills it, e.g. a single run's controls trained alongside each other).

The measurement steps the real steppers on random batches of the run's shapes: one stacked stepper of the K
models against each model's own stepper, ``ROUNDS`` interleaved rounds of ``STEPS`` steps after a warm-up,
the fastest round of each kept (the machine is shared: the minimum is the least disturbed). The masks are
the trainings' own (a mask can send a lone model down the sparse path, ``training.sparse``). The verdict is
cached in the user cache (``files.user_cache_dir() / "stack"``, one checksummed file per key) per processor,
core count, torch, thread count, device, architecture (parameter shapes), batch size, optimiser and K,
and, where the sparse path is on or auto, its mode and the masks' per-layer density buckets; a damaged
cache file is measured again, a failed timing falls back to one at a time, uncached.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ticketlab.config.recipe import Recipe
from ticketlab.files import CorruptFileError
from ticketlab.hardware import measured
from ticketlab.models.mlp import MLP
from ticketlab.training import sparse
from ticketlab.training.core import Stepper
from ticketlab.training.loop import _OneModel
from ticketlab.training.stacked import _Stacked

CACHE_VERSION = 1
WARMUP, STEPS, ROUNDS = 3, 15, 3
NAMES = ("stacked", "sequential")


def cache_key(
    model: nn.Module,
    recipe: Recipe,
    k: int,
    device: torch.device,
    threads: int | None = None,
    masks: Sequence[Mapping[str, torch.Tensor] | None] = (),
) -> dict[str, Any]:
    """What a verdict holds for: the machine, torch's threads, the device, the model's parameter shapes,
    the batch size, the optimiser, how many trainings, and where a lone model can take the sparse path
    (``training.sparse`` not off): the masks' per-layer density buckets, which decide it."""
    key = measured.machine_key(
        CACHE_VERSION,
        threads,
        device=device.type,
        arch=[[n, list(p.shape)] for n, p in model.named_parameters()],
        batch=recipe.batch_size,
        optimizer=recipe.optimizer,
        k=k,
    )
    if sparse.mode() != "off":
        key["sparse"] = sparse.mode()
        key["densities"] = sorted(
            {tuple((n, sparse.bucket(float(v.float().mean()))) for n, v in sorted((m or {}).items())) for m in masks}
        )
    return key


def sparse_may_win(model: nn.Module, masks: Sequence[Mapping[str, torch.Tensor] | None], device: torch.device) -> bool:
    """Whether models with these masks could take the sparse path (``training.sparse``), alone or stacked:
    MLPs on a CPU with a layer whose density the mode considers (``sparse.considered``)."""
    if device.type != "cpu" or type(model) is not MLP:
        return False
    return any(sparse.considered(float(v.float().mean())) for m in masks if m for v in m.values())


def cache_file(key: Mapping[str, Any], root: Path | None = None) -> Path:
    return measured.cache_file("stack", key, root)


def _parsed(rows: Mapping[str, Any], path: Path) -> dict[str, float]:
    try:
        seconds = {n: float(rows[n]) for n in NAMES}
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptFileError(f"{path}: no time for each of {', '.join(NAMES)} ({err})") from None
    if not all(s > 0 for s in seconds.values()):
        raise CorruptFileError(f"{path}: a time is not positive")
    return seconds


def _seconds_per_step(stepper: Stepper, batches: list[tuple[torch.Tensor, torch.Tensor]], lr: float) -> float:
    with stepper.running():
        for step, (xb, yb) in enumerate(batches[:WARMUP]):
            stepper.step(step, xb, yb, lr)
        started = time.perf_counter()
        for step, (xb, yb) in enumerate(batches[WARMUP:]):
            stepper.step(step, xb, yb, lr)
        return (time.perf_counter() - started) / (len(batches) - WARMUP)


def time_stacking(
    model: nn.Module,
    masks: Sequence[Mapping[str, torch.Tensor] | None],
    recipe: Recipe,
    input_shape: Sequence[int],
    num_classes: int,
    device: torch.device,
) -> dict[str, float]:
    """Seconds per step of the K = len(masks) trainings: ``stacked`` (one stepper of K copies of ``model``)
    and ``sequential`` (the sum of the K models' own steppers); ``model`` itself is not changed."""
    k, b = len(masks), recipe.batch_size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(WARMUP + STEPS, k, b, *input_shape, generator=g).to(device)
    y = torch.randint(0, num_classes, (WARMUP + STEPS, k, b), generator=g).to(device)
    best = dict.fromkeys(NAMES, float("inf"))
    for _ in range(ROUNDS):
        copies = [copy.deepcopy(model).to(device) for _ in masks]
        stacked = _Stacked(copies, list(masks), [0] * k, recipe, 0, device)
        best["stacked"] = min(best["stacked"], _seconds_per_step(stacked, list(zip(x, y)), recipe.lr))
        total = 0.0
        for i, mask in enumerate(masks):
            one = _OneModel(copy.deepcopy(model).to(device), mask, recipe, 0, 0, device, None)
            total += _seconds_per_step(one, [(xs[i : i + 1], ys[i : i + 1]) for xs, ys in zip(x, y)], recipe.lr)
        best["sequential"] = min(best["sequential"], total)
    return best


@dataclass(frozen=True)
class Verdict:
    """Whether to stack, the seconds per step behind it and where they came from."""

    stack: bool
    seconds: dict[str, float] = field(default_factory=dict)
    source: str = "measured"  # "measured", "cache", "timing failed"
    note: str = ""

    def describe(self, what: str = "controls") -> str:
        """One line: how ``what`` (the trainings) run and why."""
        if self.source == "timing failed":
            return f"{what} one at a time: timing failed ({self.note})"
        ms = ", ".join(f"{n} {1000 * s:.2f} ms" for n, s in self.seconds.items())
        way = "stacked" if self.stack else "one at a time"
        return f"{what} {way} ({ms} per step, {'from the cache' if self.source == 'cache' else 'measured now'})"


def decide(
    model: nn.Module,
    masks: Sequence[Mapping[str, torch.Tensor] | None],
    recipe: Recipe,
    input_shape: Sequence[int],
    num_classes: int,
    device: torch.device,
    root: Path | None = None,
) -> Verdict:
    """Stack the trainings where the stacked step measures faster than the K steps one after another:
    from the cache, else timed (:func:`time_stacking`) and cached."""
    key = cache_key(model, recipe, len(masks), device, masks=masks)

    def timing() -> dict[str, float]:
        return time_stacking(model, masks, recipe, input_shape, num_classes, device)

    # e.g. out of memory: the trainings still run, one at a time
    result = measured.cached(cache_file(key, root), key, timing, _parsed, failures=(RuntimeError,))
    if result.rows is None:
        return Verdict(False, {}, "timing failed", str(result.error).splitlines()[0])
    seconds = result.rows
    return Verdict(seconds["stacked"] < seconds["sequential"], seconds, result.source, result.note)
