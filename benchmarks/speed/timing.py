"""Wall-clock timing: ``time.perf_counter`` around a call, median of repeats."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synced(fn: Callable[[], object], device: torch.device | str = "cpu") -> Callable[[], object]:
    """``fn`` followed by waiting for the device: CUDA calls return before the work is done."""
    if torch.device(device).type != "cuda":
        return fn

    def run():
        fn()
        torch.cuda.synchronize(device)

    return run


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` (warm it up before)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
