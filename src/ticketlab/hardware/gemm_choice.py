"""Which BLAS multiplies MLP layers under ``TICKETLAB_GEMM=auto``: measured once per machine, never a vendor rule.

Whether OpenBLAS's AVX-512 kernels (``hardware.blas``) beat PyTorch's own BLAS at the small float32
products of MLP training depends on the processor and on how torch was built: on a Zen 5 VM MKL took its
AVX2 path and OpenBLAS was about twice as fast, on an Intel Xeon with AVX-512 MKL is already fast. So
where the OpenBLAS path can apply at all (the wheel loads, the CPU has AVX-512), ``auto`` times both
(:func:`time_products`): the products of LeNet-300-100's three layers at batch 60 (``SHAPES``, ``BATCH``)
— forward, input gradient and weight gradient of each — a few repeats, median, each backend on the
threads it trains with. The faster wins. The verdict is cached in the user cache
(``files.user_cache_dir() / "gemm"``, one checksummed file per key) per CPU model, core count, torch
version and torch thread count (:func:`machine_key`), so a machine measures once; a file that does not
parse, fails its checksum or names another key is never used and is replaced by a fresh measurement.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ticketlab.files import CorruptFileError
from ticketlab.hardware import measured

SHAPES = ((784, 300), (300, 100), (100, 10))  # (in, out) of LeNet-300-100's layers
BATCH = 60
NAMES = ("openblas", "torch")
CACHE_VERSION = 1
REPS = 5
ROUNDS = 20

Product = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], object]  # out = a @ b, in place
Measure = Callable[[], Mapping[str, float]]  # seconds of each backend in NAMES


def machine_key(threads: int | None = None) -> dict[str, Any]:
    """What a verdict holds for: processor, cores, torch and torch's thread count (now, unless given)."""
    return measured.machine_key(CACHE_VERSION, threads)


def cache_file(key: Mapping[str, Any], root: Path | None = None) -> Path:
    return measured.cache_file("gemm", key, root)


def operands(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(a, b, out) of each timed product, with the strides training gives them (transposed views)."""
    gen = torch.Generator().manual_seed(seed)
    out: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for fan_in, fan_out in SHAPES:
        x = torch.randn(BATCH, fan_in, generator=gen)
        w = torch.randn(fan_out, fan_in, generator=gen)
        g = torch.randn(BATCH, fan_out, generator=gen)
        out.append((x, w.mT, torch.empty(BATCH, fan_out)))  # forward: x W^T
        out.append((g, w, torch.empty(BATCH, fan_in)))  # input gradient: g W
        out.append((g.mT, x, torch.empty(fan_out, fan_in)))  # weight gradient: g^T x
    return out


def time_products(product: Product, reps: int = REPS, rounds: int = ROUNDS) -> float:
    """Seconds for one pass over :func:`operands` with ``product``: median of ``reps`` repeats of ``rounds``
    passes each, after one pass of warm-up."""
    work = operands()
    for a, b, out in work:
        product(a, b, out)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(rounds):
            for a, b, out in work:
                product(a, b, out)
        times.append((time.perf_counter() - start) / rounds)
    return statistics.median(times)


@dataclass(frozen=True)
class Verdict:
    """The backend ``auto`` runs, the seconds it was chosen from and where they came from."""

    name: str  # "openblas" or "torch"
    seconds: dict[str, float] = field(default_factory=dict)
    source: str = "measured"  # "measured", "cache", "timing failed"
    note: str = ""  # e.g. a damaged cache file that was measured again

    def describe(self) -> str:
        if not self.seconds:
            return f"auto: timing failed ({self.note}); PyTorch's BLAS, not cached"
        figures = ", ".join(f"{name} {self.seconds[name] * 1e3:.3f} ms" for name in NAMES)
        where = "from the cache" if self.source == "cache" else "measured now"
        note = f"; {self.note}" if self.note else ""
        return f"auto: faster for LeNet-300-100's products at batch {BATCH} ({figures}; {where}{note})"


def faster(seconds: Mapping[str, float]) -> str:
    """The backend with the least time; PyTorch's own on a tie."""
    return min(NAMES, key=lambda name: (seconds[name], name != "torch"))


def _parsed(rows: Mapping[str, Any], path: Path) -> dict[str, float]:
    try:
        seconds = {name: float(rows[name]) for name in NAMES}
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptFileError(f"{path}: no time for each of {', '.join(NAMES)} ({err})") from None
    if any(not math.isfinite(s) or s <= 0 for s in seconds.values()):
        raise CorruptFileError(f"{path}: a cached time is not a positive number")
    return seconds


def decide(measure: Measure, key: Mapping[str, Any] | None = None, root: Path | None = None) -> Verdict:
    """The faster of ``NAMES`` for ``key`` (default :func:`machine_key`): from the cache, else timed by
    ``measure`` and cached. A failed timing gives PyTorch's BLAS, uncached."""
    key = machine_key() if key is None else key
    result = measured.cached(cache_file(key, root), key, measure, _parsed)
    if result.rows is None:  # a broken library or a failed timing: run on PyTorch's kernels
        error = result.error
        return Verdict("torch", {}, "timing failed", f"{type(error).__name__}: {error}")
    return Verdict(faster(result.rows), result.rows, result.source, result.note)
