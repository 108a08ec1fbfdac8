"""The small public API: ``ticketlab.train_dense``, ``ticketlab.prune``, ``ticketlab.load_results``,
``ticketlab.load_ticket``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ticketlab.analysis.results import load_results
from ticketlab.config.recipe import Recipe
from ticketlab.config.spec import ExperimentSpec, MethodSpec
from ticketlab.data import load_dataset
from ticketlab.experiment.run import RunResult, run_experiment, run_on
from ticketlab.hardware.device import resolve_device
from ticketlab.models import build_model, initialize
from ticketlab.tickets import Ticket, load_ticket
from ticketlab.training.loop import Progress, TrainResult, steps_per_epoch, train

# The recipe of ``train_dense`` and ``prune`` when none is given: the Recipe defaults, evaluated at least 10
# times per training (``eval_every: auto``), so the early-stop step and the winning flag are placed in
# short runs too. Recipe() itself keeps eval_every 1ep: run ids of specs that leave it out keep their meaning.
DEFAULT_RECIPE = Recipe(eval_every="auto")


@dataclass
class DenseRun(TrainResult):
    """A dense training written as a run directory (``path``): level 0 of a ``lottery`` spec with target
    density 1.0, which prunes nothing."""

    path: Path | None = None


def train_dense(
    model: str = "lenet300",
    dataset: str = "fashion-mnist",
    recipe: Recipe | None = None,
    *,
    seed: int = 0,
    init: str = "kaiming_normal",
    val_size: int = 5000,
    end_on_best: bool = False,
    device: str | torch.device | None = None,
    data_root: str | os.PathLike | None = None,
    progress: Progress | None = None,
    out: str | os.PathLike | None = None,
) -> TrainResult:
    """Train one dense network from a seeded initialisation.

    With ``out``, the training is a run like any other under ``out/<run id>`` (level 0 only; weights, mask and
    metrics written, resumed if already there), so ``load_ticket`` and ``ticketlab export`` work on it; the
    result is then a :class:`DenseRun` whose ``path`` is that directory."""
    recipe = recipe or DEFAULT_RECIPE
    device = resolve_device(device)
    data = load_dataset(dataset, root=data_root, val_size=val_size, seed=0, device=device)
    if out is not None:
        spec = ExperimentSpec(
            model=model,
            dataset=dataset,
            init=init,
            seed=seed,
            val_size=val_size,
            recipe=recipe,
            method=MethodSpec(name="lottery"),
            densities=(1.0,),
            end_on_best=end_on_best,
        )
        run = run_on(spec, data, out, device=device, progress=progress)
        return _dense_run(run, steps_per_epoch(len(data.x_train), recipe.batch_size))
    net = initialize(build_model(model, input_shape=data.input_shape, num_classes=data.num_classes), init, seed)
    return train(net, data, recipe, seed=seed, end_on_best=end_on_best, device=device, progress=progress)


def _dense_run(run: RunResult, spe: int) -> DenseRun:
    """The TrainResult of level 0 from its recorded row (also when the level was read back from disk)."""
    (row,) = run.rows
    history = row["history"]
    es = row["early_stop_step"]
    es = None if es is None else es + row["start_step"]
    early: dict[str, Any] = next((h for h in history if h["step"] == es), {}) if es is not None else {}
    final = dict(early) if run.spec.end_on_best and early else dict(history[-1]) if history else {}
    return DenseRun(
        start_step=row["start_step"],
        end_step=row["end_step"],
        history=history,
        early_stop_step=es,
        early_stop=dict(early),
        final=final,
        wall_time=row["train_time"],
        steps_per_epoch=spe,
        path=run.path,
    )


def prune(
    model: str = "lenet300",
    dataset: str = "fashion-mnist",
    method: str = "lottery",
    density: float | tuple[float, ...] = 0.05,
    *,
    criterion: str | None = None,
    scope: str = "global",
    K: float = 0.8,
    rounds: int | None = None,
    controls: tuple[str, ...] = (),
    recipe: Recipe | None = None,
    seed: int = 0,
    init: str = "kaiming_normal",
    val_size: int = 5000,
    end_on_best: bool = False,
    out: str | os.PathLike = "runs",
    device: str | torch.device | None = None,
    data_root: str | os.PathLike | None = None,
    progress: Progress | None = None,
    log: Any = None,
    **method_options: Any,
) -> RunResult:
    """Find tickets with one method and train them; returns the per-level results (``.table()``)."""
    densities = (density,) if isinstance(density, (int, float)) else tuple(density)
    spec = ExperimentSpec(
        model=model,
        dataset=dataset,
        init=init,
        seed=seed,
        val_size=val_size,
        recipe=recipe or DEFAULT_RECIPE,
        method=MethodSpec(name=method, criterion=criterion, scope=scope, K=K, rounds=rounds, **method_options),
        densities=densities,
        controls=controls,
        end_on_best=end_on_best,
    )
    return run_experiment(spec, out, device=device, data_root=data_root, progress=progress, log=log)


__all__ = ["DenseRun", "Ticket", "load_results", "load_ticket", "prune", "train_dense"]
