"""Pruning batches: the class-balanced samples data-aware criteria (SNIP, GraSP) score on."""

from __future__ import annotations

import torch

from ticketlab.data.dataset import Dataset
from ticketlab.seeding import seed_for


def pruning_batches(data: Dataset, batches: int, per_class: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Class-balanced pruning batches from the training split: ``batches`` x (classes * per_class)
    examples (spec defaults: 10 x classes*10), drawn without replacement where the class is large enough."""
    g = torch.Generator().manual_seed(seed_for(seed, 7))
    y = data.y_train.cpu()
    need = batches * per_class
    columns = []
    for c in range(data.num_classes):
        idx = (y == c).nonzero().flatten()
        if len(idx) == 0:
            continue
        pick = (
            torch.randperm(len(idx), generator=g)[:need]
            if len(idx) >= need
            else torch.randint(len(idx), (need,), generator=g)
        )
        columns.append(idx[pick].reshape(batches, per_class))
    table = torch.cat(columns, dim=1).to(data.x_train.device)
    return [(data.x_train[row], data.y_train[row]) for row in table]
