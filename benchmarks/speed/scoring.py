"""(f) Scoring times: one SNIP or GraSP pruning to 1% density, and SynFlow's multi-round pruning to 1%,
on 10 batches of 100 random examples (SynFlow uses no data)."""

from __future__ import annotations

from typing import Any

import torch

from speed.timing import median_time, synced
from ticketlab.criteria import ScoringContext, score
from ticketlab.masks import Mask, select
from ticketlab.models import build_model, initialize
from ticketlab.schedules import multishot_densities

INPUT_SHAPES = {"lenet300": (1, 28, 28), "resnet20": (3, 32, 32)}


def scoring_times(
    repeats: int,
    synflow_rounds: int,
    models: tuple[str, ...] = ("lenet300", "resnet20"),
    device: torch.device | str = "cpu",
) -> list[dict[str, Any]]:
    rows = []
    for name in models:
        shape = INPUT_SHAPES.get(name, (1, 28, 28))
        model = initialize(build_model(name, input_shape=shape, num_classes=10), seed=0).to(device)
        g = torch.Generator().manual_seed(0)
        batches = [
            (torch.randn(100, *shape, generator=g).to(device), torch.randint(10, (100,), generator=g).to(device))
            for _ in range(10)
        ]
        ctx = ScoringContext(batches=batches, input_shape=shape, initial=None, seed=0, options={})
        for criterion, n_rounds in (("snip", 1), ("grasp", 1), ("synflow", synflow_rounds)):

            def run() -> None:
                mask = Mask.ones(model)
                for d in multishot_densities(0.01, n_rounds, "exponential", start=1.0):
                    mask.apply(model)
                    mask = select(score(criterion, model, mask, ctx), d, "global", previous=mask, seed=0)

            t = median_time(synced(run, device), repeats)
            rows.append(
                {
                    "model": name,
                    "criterion": criterion,
                    "rounds": n_rounds,
                    "seconds": t,
                    "batches": 0 if criterion == "synflow" else len(batches),
                }
            )
    return rows
