"""The small public API: ``ticketlab.train_dense``, ``ticketlab.prune``, ``ticketlab.load_results``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import torch

from ticketlab.data import load_dataset
from ticketlab.hardware.device import resolve_device
from ticketlab.experiment.progress import RunStatus
from ticketlab.experiment.run import RunResult, run_experiment
from ticketlab.models import build_model, initialize
from ticketlab.analysis.results import load_results
from ticketlab.config.recipe import Recipe
from ticketlab.config.spec import ExperimentSpec, MethodSpec
from ticketlab.training.loop import Progress, TrainResult, train
# MethodSpec fields prune() takes as keywords besides those it names
_EXTRA_METHOD_FIELDS = frozenset(MethodSpec.model_fields) - {"name", "criterion", "scope", "K", "rounds", "options"}


def to_stderr(message: str) -> None:
    """The default ``log`` of :func:`prune`: each line (one per finished level, with the time so far and an
    estimate of the time left) to stderr, unless the environment sets ``TICKETLAB_QUIET``; ``log=None`` is quiet."""
    if not os.environ.get("TICKETLAB_QUIET"):
        print(message, file=sys.stderr, flush=True)


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
) -> TrainResult:
    """Train one dense network from a seeded initialisation."""
    recipe = recipe or Recipe()
    device = resolve_device(device)
    data = load_dataset(dataset, root=data_root, val_size=val_size, seed=0, device=device)
    net = initialize(build_model(model, input_shape=data.input_shape, num_classes=data.num_classes), init, seed)
    return train(net, data, recipe, seed=seed, end_on_best=end_on_best, device=device, progress=progress)


def prune(
    model: str = "lenet300",
    dataset: str = "fashion-mnist",
    method: str = "lottery",
    density: float | tuple[float, ...] = 0.05,
    *,
    criterion: str | None = None,
    scope: str = "global",
    K: float = 0.8,
    rounds: int = 1,
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
        model=model, dataset=dataset, init=init, seed=seed, val_size=val_size, recipe=recipe or Recipe(),
        method=MethodSpec(
            name=method, criterion=criterion, scope=scope, K=K, rounds=rounds, options=options or {}, **method_fields
        ),
        densities=densities, controls=controls, end_on_best=end_on_best,
    )
    return run_experiment(spec, out, device=device, data_root=data_root, progress=progress, log=log, status=status)


__all__ = ["load_results", "prune", "train_dense"]
