"""The small public API: ``ticketlab.train_dense``, ``ticketlab.prune``, ``ticketlab.load_results``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ticketlab.data import load_dataset
from ticketlab.device import resolve_device
from ticketlab.experiment import RunResult, run_experiment
from ticketlab.models import build_model, initialize
from ticketlab.recipe import Recipe
from ticketlab.spec import ExperimentSpec, MethodSpec
from ticketlab.train import Progress, TrainResult, train


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
    log: Any = None,
    **method_options: Any,
) -> RunResult:
    """Find tickets with one method and train them; returns the per-level results (``.table()``)."""
    densities = (density,) if isinstance(density, (int, float)) else tuple(density)
    spec = ExperimentSpec(
        model=model, dataset=dataset, init=init, seed=seed, val_size=val_size, recipe=recipe or Recipe(),
        method=MethodSpec(name=method, criterion=criterion, scope=scope, K=K, rounds=rounds, **method_options),
        densities=densities, controls=controls, end_on_best=end_on_best,
    )
    return run_experiment(spec, out, device=device, data_root=data_root, progress=progress, log=log)


def load_results(root: str | os.PathLike = "runs") -> pd.DataFrame:
    """One tidy row per run x level (x control) from every run directory under ``root``.

    Columns: ``run_id``; every spec field flattened with dotted names (``method.name``, ``recipe.lr``,
    ``method.options.regrow``); ``method`` and ``criterion`` as short aliases; then the level's metrics
    (density, accuracies, losses, early-stop step, ``wall_time`` = training + scoring time, ``winning``,
    ``layer_densities`` as a dict per row) and ``run_finished``.
    """
    rows = []
    for spec_file in sorted(Path(root).glob("*/spec.json")):
        run_dir = spec_file.parent
        spec = json.loads(spec_file.read_text())
        fields = _flatten(spec)
        finished = (run_dir / "done.json").exists()
        for metrics in sorted(run_dir.glob("level_*/**/metrics.json")):
            row = json.loads(metrics.read_text())
            row.pop("history", None)
            row["wall_time"] = (row.get("train_time") or 0.0) + (row.get("score_time") or 0.0)
            rows.append({
                "run_id": run_dir.name, **fields, "method": spec["method"]["name"],
                "criterion": spec["method"].get("criterion"), **row, "run_finished": finished,
            })
    return pd.DataFrame(rows)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"method": {"name": "snip"}}`` -> ``{"method.name": "snip"}``; lists become tuples."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out
