"""The stacked fused Adam step of the IMP job (3 LeNet-300-100 models, batch 60, Fashion-MNIST) at a few
densities, three ways, interleaved: the hand-written backward + ``torch.optim.Adam(fused=True)`` (how
``FusedAdam`` stepped before it called the kernel itself), the kernel called directly over every weight
(``TICKETLAB_COMPACT_ADAM=off``), and the measured choice (``auto``: kept weights only below the crossover).

    PYTHONPATH=src python benchmarks/compact_adam.py --threads 1 --steps 300 --rounds 5 --densities 1,0.1,0.01

Prints the median ms per 3-model step of each way and the ratios (compare ratios from one run only).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from ticketlab.config.recipe import Recipe
from ticketlab.data import load_dataset
from ticketlab.hardware import adam_choice
from ticketlab.hardware.device import set_threads
from ticketlab.masks import prunable_parameters, select
from ticketlab.models import build_model, initialize
from ticketlab.training.core import Batches
from ticketlab.training.fused_sgd import FusedAdam, FusedSGD
from ticketlab.training.stacked import _Stacked

RECIPE = Recipe(optimizer="adam", lr=1.2e-3, batch_size=60, steps="2ep")
SEEDS = [0, 1, 2]


class TorchAdam(FusedAdam):
    """The hand-written backward's masked gradients as ``.grad``, stepped by ``torch.optim.Adam(fused=True)``."""

    def step(self, x, y, lr, dropout=None):
        if self.compacted is None:
            self.compacted = [False] * len(self.weights)
            tensors = self.weights + self.biases
            for t in tensors:
                t.grad = self._grads[id(t)]
            self.optimizer = torch.optim.Adam(tensors, lr=lr, betas=self.betas, fused=True)
        losses = FusedSGD.step(self, x, y, lr, dropout)
        self.optimizer.param_groups[0]["lr"] = lr
        self.optimizer.step()
        return losses


def stepper(density: float, way: str) -> _Stacked:
    models = [initialize(build_model("lenet300"), seed=s) for s in SEEDS]
    masks = []
    for s in SEEDS:
        g = torch.Generator().manual_seed(10 + s)
        scores = {k: torch.rand(p.shape, generator=g) for k, p in prunable_parameters(models[0]).items()}
        masks.append(dict(select(scores, density).items()) if density < 1 else None)
    os.environ[adam_choice.ENV] = "auto" if way == "auto" else "off"
    stacked = _Stacked(models, masks, SEEDS, RECIPE, 0, torch.device("cpu"))
    if way == "torch":
        stacked.fused.__class__ = TorchAdam
    return stacked


def ms_per_step(stacked: _Stacked, batches: list, warmup: int = 10) -> float:
    with stacked.running():
        for i in range(warmup):
            stacked.step(i, *batches[i], RECIPE.lr)
        start = time.perf_counter()
        for i, (x, y) in enumerate(batches):
            stacked.step(i, x, y, RECIPE.lr)
        return (time.perf_counter() - start) / len(batches) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--densities", default="1,0.1,0.01")
    args = parser.parse_args()
    set_threads(args.threads)
    data = load_dataset("fashion-mnist", val_size=5000, seed=0)
    make = Batches(data, RECIPE.batch_size, SEEDS)
    batches = [make(i) for i in range(args.steps)]
    densities = [float(d) for d in args.densities.split(",")]
    ways = ("torch", "off", "auto")
    times: dict[tuple[float, str], list[float]] = {}
    chosen: dict[float, list[bool] | None] = {}
    for _ in range(args.rounds):
        for density in densities:
            for way in ways:
                stacked = stepper(density, way)
                times.setdefault((density, way), []).append(ms_per_step(stacked, batches))
                if way == "auto":
                    chosen[density] = stacked.fused.compacted
    print(f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    for density in densities:
        old, dense, auto = (statistics.median(times[(density, way)]) for way in ways)
        print(
            f"density {density:g}: torch.optim.Adam {old:.3f} ms, kernel over every weight {dense:.3f} ms, "
            f"measured choice {auto:.3f} ms (kept weights only per layer: {chosen[density]}); "
            f"{old / dense:.2f}x, {old / auto:.2f}x"
        )


if __name__ == "__main__":
    main()
