"""The small public API: ``ticketlab.train_dense``, ``ticketlab.prune``, ``ticketlab.load_results``,
``ticketlab.load_ticket``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ticketlab.analysis.results import load_results
from ticketlab.config.recipe import Recipe
from ticketlab.config.spec import ExperimentSpec, MethodSpec
from ticketlab.data import load_dataset
from ticketlab.experiment.progress import RunStatus
from ticketlab.experiment.run import RunResult, run_experiment, run_on
from ticketlab.hardware.device import resolve_device
from ticketlab.models import build_model, initialize
from ticketlab.tickets import Ticket, load_ticket
from ticketlab.training.loop import Progress, TrainResult, steps_per_epoch, train

# The recipe of ``train_dense`` and ``prune`` when none is given: the Recipe defaults, evaluated at least 10
# times per training (``eval_every: auto``), so the early-stop step and the winning flag are placed in
# short runs too. Recipe() itself keeps eval_every 1ep: run ids of specs that leave it out keep their meaning.
DEFAULT_RECIPE = Recipe(eval_every="auto")

# MethodSpec fields prune() takes as keywords besides those it names
_EXTRA_METHOD_FIELDS = frozenset(MethodSpec.model_fields) - {"name", "criterion", "scope", "K", "rounds", "options"}


def to_stderr(message: str) -> None:
    """The default ``log`` of :func:`prune`: each line (one per finished level, with the time so far and an
    estimate of the time left) to stderr, unless the environment sets ``TICKETLAB_QUIET``; ``log=None`` is quiet."""
    if not os.environ.get("TICKETLAB_QUIET"):
        print(message, file=sys.stderr, flush=True)


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
    log: Callable[[str], None] | None = to_stderr,
    status: RunStatus | None = None,
    options: dict[str, Any] | None = None,
    **method_fields: Any,
) -> RunResult:
    """Find tickets with one method and train them; returns the per-level results (``.table()``).

    ``log`` gets one line per finished level (default: stderr, see :func:`to_stderr`); ``progress`` gets
    every training step (``progress(step, end_step, row)``); ``status`` follows the run for a live display.

    ``options`` are the method's own options (``options={"regrow": 0.1}`` for ``double_pruning``); further
    keywords set other :class:`MethodSpec` fields (``rewind_params="1ep"``, ``pruning_batches=5`` ...)."""
    stray = sorted(set(method_fields) - _EXTRA_METHOD_FIELDS)
    if stray:
        raise TypeError(
            f"prune() got unexpected keyword argument{'s' if len(stray) > 1 else ''} {', '.join(map(repr, stray))}: "
            f"a method's options go in options={{{', '.join(f'{k!r}: ...' for k in stray)}}}; other keywords are "
            f"MethodSpec fields: {', '.join(sorted(_EXTRA_METHOD_FIELDS))}"
        )
    densities = (density,) if isinstance(density, (int, float)) else tuple(density)
    spec = ExperimentSpec(
        model=model,
        dataset=dataset,
        init=init,
        seed=seed,
        val_size=val_size,
        recipe=recipe or DEFAULT_RECIPE,
        method=MethodSpec(
            name=method, criterion=criterion, scope=scope, K=K, rounds=rounds, options=options or {}, **method_fields
        ),
        densities=densities,
        controls=controls,
        end_on_best=end_on_best,
    )
    return run_experiment(spec, out, device=device, data_root=data_root, progress=progress, log=log, status=status)


__all__ = ["DenseRun", "Ticket", "load_results", "load_ticket", "prune", "train_dense"]
