"""What can change a run's numbers besides its spec, recorded with every run and every level.

The same spec can give different numbers under a different torch build, device, processor, BLAS, ticketlab
version or number of CPU threads (reported: one-shot SNIP on LeNet-300-100, one epoch, dense test accuracy
0.8442 on 1 thread and 0.8456 on 2; floating-point sums split over threads add in another order). The run
id stays the spec's; the environment is recorded beside it (``env.json``, and ``env`` in each level's ``metrics.json``)
and the results treat runs of different environments as different set-ups (``ticketlab.analysis.stats``).
"""

from __future__ import annotations

import re
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch

from ticketlab.hardware import blas
from ticketlab.hardware.cpu import cpu_model

FIELDS = ("torch", "device", "device_name", "cpu", "threads", "blas", "ticketlab")


def environment(device: torch.device) -> dict[str, Any]:
    """The environment of this process for a run on ``device``, as plain JSON values (``FIELDS``).

    ``threads`` is torch's intra-op thread count as set for the run (``--threads``, ``$TICKETLAB_THREADS``);
    ``blas`` the library that multiplies fully connected layers' matrices (``hardware.blas``); ``cpu`` the
    processor and the instruction set torch's kernels use on it; ``device_name`` the accelerator (None on CPU).
    """
    return {
        "torch": torch.__version__,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()})",
        "threads": torch.get_num_threads(),
        "blas": _blas(),
        "ticketlab": _version(),
    }


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``field before -> now`` for every field of ``FIELDS`` that differs."""
    return [f"{key} {before.get(key)} -> {now.get(key)}" for key in FIELDS if before.get(key) != now.get(key)]


def _blas() -> str:
    if blas.active():
        return "openblas"
    match = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    return f"torch:{match.group(1) if match else 'unknown'}"


@cache
def _version() -> str:
    try:
        return version("ticketlab")
    except PackageNotFoundError:
        return "unknown"
