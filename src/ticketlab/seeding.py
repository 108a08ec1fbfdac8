"""Derived seeds and the data order: every random choice of a run is a function of the spec's seed and
where it happens (level, round, step), never of what ran before in the process."""

from __future__ import annotations

import torch


def seed_for(*parts: int) -> int:
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value * 6364136223846793005 + part + 1442695040888963407) % (1 << 63)
    return value


def epoch_order(num_train: int, seed: int, epoch: int) -> torch.Tensor:
    """The example order of one epoch: a function of (seed, epoch) only, so a run restarted at any step
    (resume, LR rewinding) sees the same batches as an uninterrupted one."""
    return torch.randperm(num_train, generator=torch.Generator().manual_seed(seed_for(seed, epoch)))
