"""(b) the plain loop, (c) ticketlab's single-model trainer and (d) its K-model trainer.

Each ``*_runner`` builds its models, warms up for ``warmup`` steps and returns the call to time
(``steps`` more steps). The trainers get the dataset without validation and test splits
(``workload.without_eval``), so no evaluation pass is timed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from speed.timing import synced
from speed.workload import build, plain_model, random_masks
from ticketlab.config.recipe import Recipe
from ticketlab.data.dataset import Dataset
from ticketlab.training.loop import train
from ticketlab.training.stacked import train_many


def plain_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, steps: int, lr: float = 0.1) -> None:
    """What anyone would write: the data as one tensor, a randperm per epoch, slices, SGD."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    perm = torch.randperm(len(x), device=x.device)
    pos = 0
    for _ in range(steps):
        if pos + batch > len(x):
            perm, pos = torch.randperm(len(x), device=x.device), 0
        idx = perm[pos : pos + batch]
        pos += batch
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def plain_runner(
    name: str, data: Dataset, batch: int, steps: int, warmup: int, device: torch.device | str = "cpu"
) -> Callable[[], object]:
    """(b): the plain loop on ``plain_model(name)``, warmed up."""
    model = plain_model(name).to(device)
    plain_loop(model, data.x_train, data.y_train, batch, warmup)
    return synced(lambda: plain_loop(model, data.x_train, data.y_train, batch, steps), device)


def single_runner(
    name: str,
    data: Dataset,
    batch: int,
    steps: int,
    warmup: int,
    masked: bool = True,
    device: torch.device | str = "cpu",
) -> Callable[[], object]:
    """(c): one model (random 20% mask if ``masked``) through ``ticketlab.training.loop.train``."""
    base = build(name)
    mask = random_masks(base, 1, 0.2)[0] if masked else None
    recipe = Recipe(steps=f"{steps + warmup}it", batch_size=batch, lr=0.1, eval_every=None)
    train(copy.deepcopy(base), data, recipe, mask=mask, end_step=warmup, device=device)
    return synced(lambda: train(copy.deepcopy(base), data, recipe, mask=mask, start_step=warmup, device=device), device)


def many_runner(
    name: str, data: Dataset, batch: int, k: int, steps: int, warmup: int, device: torch.device | str = "cpu"
) -> Callable[[], object]:
    """(d): K stacked models with random 20% masks through ``ticketlab.training.stacked.train_many``."""
    base = build(name)
    masks = random_masks(base, k, 0.2)
    recipe = Recipe(steps=f"{steps + warmup}it", batch_size=batch, lr=0.1, eval_every=None)

    def run(start: int, end: int | None) -> None:
        train_many(
            [copy.deepcopy(base) for _ in range(k)],
            data,
            recipe,
            masks=masks,
            seeds=list(range(k)),
            start_step=start,
            end_step=end,
            device=device,
        )

    run(0, warmup)
    return synced(lambda: run(warmup, None), device)
