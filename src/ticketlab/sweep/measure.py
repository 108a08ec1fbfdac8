"""Timing candidate layouts (``ticketlab.sweep.layout``) of one workload: a few dozen training steps each.

Each layout ``PxTxK`` is timed as it would run: ``P`` spawned processes (no inherited torch threads) with
``T`` intra-op threads each, every one training ``K`` stacked models of the workload's architecture with
its recipe (optimiser, batch size) on random data of its input shape, all started together, at each
density point asked for (``sweep.layout.density_points``): unmasked at 1, else every prunable layer keeping
that share of its weights at random, so that the masked step and the sparse path (``training.sparse``, in
the mode the job will use) are what is timed. After two warm-up steps a short probe sizes the timed run to
about ``budget`` seconds (at least ``MIN_STEPS``, at most ``MAX_STEPS`` steps, the same count in every
process); the layout's figure at a point is the slowest process's seconds per step. Values of the data do
not change the time of a float32 step.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ticketlab.config.spec import ExperimentSpec
from ticketlab.sweep.layout import Layout
from ticketlab.training import sparse

MIN_STEPS, MAX_STEPS = 5, 200
DEFAULT_BUDGET = 0.5  # seconds of timed steps per layout and process


@dataclass(frozen=True)
class Workload:
    """What a layout is timed on: one stack group of a job (picklable, for the spawned processes)."""

    model: str
    input_shape: tuple[int, int, int]
    num_classes: int
    recipe: dict[str, Any]  # the spec's recipe as JSON
    exempt: tuple[str, ...] = ()
    dropout: float = 0.0
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    device: str = "cpu"
    sparse_training: str = "auto"  # the sparse path's mode (``training.sparse``) the job runs with

    @classmethod
    def of(cls, spec: ExperimentSpec, input_shape: tuple[int, int, int], num_classes: int, device: str) -> Workload:
        return cls(
            spec.model,
            (int(input_shape[0]), int(input_shape[1]), int(input_shape[2])),
            num_classes,
            spec.recipe.model_dump(mode="json"),
            tuple(spec.exempt),
            spec.dropout,
            spec.bn_momentum,
            spec.bn_eps,
            device,
            sparse.mode(),
        )


def workload_key(spec: ExperimentSpec, device: torch.device) -> dict[str, Any]:
    """The cache key's workload: architecture and data (model, dataset: input shape and classes, dropout),
    batch size, optimiser, dtype, device and the sparse training mode (it changes masked steps' times)."""
    return {
        "model": spec.model,
        "dataset": spec.dataset,
        "dropout": spec.dropout,
        "batch_size": spec.recipe.batch_size,
        "optimizer": spec.recipe.optimizer,
        "dtype": "float32",
        "device": device.type,
        "sparse_training": sparse.mode(),
    }


def time_layouts(
    workload: Workload, layouts: list[Layout], densities: Sequence[float] = (1.0,), budget: float = DEFAULT_BUDGET
) -> dict[float, dict[Layout, float]]:
    """Seconds per step of each layout at each density (see the module docstring); one set of processes per
    process count, timing every layout at every density."""
    densities = list(densities)
    ctx = mp.get_context("spawn")
    out: dict[float, dict[Layout, float]] = {}
    by_processes: dict[int, list[Layout]] = {}
    for layout in layouts:
        by_processes.setdefault(layout.processes, []).append(layout)
    for p, group in sorted(by_processes.items()):
        jobs = [(layout.threads, layout.stack, density) for layout in group for density in densities]
        barrier, steps, queue = ctx.Barrier(p), ctx.Array("i", p), ctx.Queue()
        procs = [
            ctx.Process(target=_worker, args=(workload, jobs, rank, budget, barrier, steps, queue), daemon=True)
            for rank in range(p)
        ]
        for proc in procs:
            proc.start()
        seconds: dict[int, float] = {}
        try:
            for _ in range(p * len(jobs)):
                _, i, value = queue.get(timeout=600)
                if isinstance(value, str):
                    raise RuntimeError(f"timing layout {group[i // len(densities)]} failed: {value}")
                seconds[i] = max(seconds.get(i, 0.0), value)
        finally:
            barrier.abort()
            for proc in procs:
                proc.join(timeout=10)
                if proc.is_alive():
                    proc.terminate()
        for i, (layout, density) in enumerate((layout, density) for layout in group for density in densities):
            out.setdefault(density, {})[layout] = seconds[i]
    return out


def _worker(
    workload: Workload,
    jobs: list[tuple[int, int, float]],
    rank: int,
    budget: float,
    barrier: Any,
    steps: Any,
    queue: Any,
) -> None:
    for i, (threads, stack, density) in enumerate(jobs):
        try:
            torch.set_num_threads(threads)
            run = runner(workload, stack, density)
            run(2)  # warm-up: first-call allocations
            probe = max(run(2) / 2, 1e-6)
            steps[rank] = max(MIN_STEPS, min(MAX_STEPS, math.ceil(budget / probe)))
            barrier.wait()
            n = min(steps[:])
            barrier.wait()
            queue.put((rank, i, run(n) / n))
        except Exception as err:  # reported by the parent, which stops the others
            queue.put((rank, i, f"{type(err).__name__}: {err}"))
            return


def runner(workload: Workload, stack: int, density: float = 1.0) -> Any:
    """A function ``run(n)`` training ``stack`` models of the workload for ``n`` steps, returning its seconds;
    below ``density`` 1 each model is masked to keep that share of every prunable layer (at random)."""
    from ticketlab.config.recipe import Recipe
    from ticketlab.data.dataset import Dataset
    from ticketlab.models import build_model
    from ticketlab.training.loop import train
    from ticketlab.training.stacked import train_many

    device = torch.device(workload.device)
    sparse.set_mode(workload.sparse_training)
    recipe = Recipe.model_validate({**workload.recipe, "steps": "1000000it", "eval_every": None, "early_stop": None})
    n = max(4096, 4 * recipe.batch_size)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *workload.input_shape, generator=g)
    y = torch.randint(workload.num_classes, (n,), generator=g)
    data = Dataset("layout-probe", x, y, x[:0], y[:0], x[:0], y[:0], workload.num_classes, None).to(device)
    models = [
        build_model(
            workload.model,
            input_shape=workload.input_shape,
            num_classes=workload.num_classes,
            dropout=workload.dropout,
            bn_momentum=workload.bn_momentum,
            bn_eps=workload.bn_eps,
        ).to(device)
        for _ in range(stack)
    ]
    masks = [random_mask(m, workload.exempt, density, seed) for seed, m in enumerate(models)]
    done = [0]

    def run(steps: int) -> float:
        start, end = done[0], done[0] + steps
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        if stack == 1:
            train(models[0], data, recipe, mask=masks[0], start_step=start, end_step=end, device=device)
        else:
            train_many(
                models,
                data,
                recipe,
                masks=masks,
                seeds=list(range(stack)),
                start_step=start,
                end_step=end,
                device=device,
            )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        done[0] = end
        return time.perf_counter() - t0

    return run


def random_mask(model: Any, exempt: Sequence[str], density: float, seed: int) -> Any:
    """A mask keeping ``round(density * n)`` (at least one) of each prunable layer's ``n`` weights at random;
    all of them at density 1."""
    from ticketlab.masks import Mask, prunable_parameters

    if density >= 1.0:
        return Mask.ones(model, exempt)
    g = torch.Generator().manual_seed(seed)
    kept = {}
    for name, weight in prunable_parameters(model, exempt).items():
        keep = torch.zeros(weight.numel(), dtype=torch.bool)
        keep[torch.randperm(weight.numel(), generator=g)[: max(1, round(density * weight.numel()))]] = True
        kept[name] = keep.view(weight.shape).to(weight.device)
    return Mask(kept)
