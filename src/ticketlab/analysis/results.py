"""The results table: one tidy row per run x level (x control), read from the run store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from ticketlab.config.spec import MethodSpec
from ticketlab.experiment.run import TICKET
from ticketlab.files import load_json
from ticketlab.methods import Resolved
from ticketlab.store import RunDir


def load_results(root: str | os.PathLike = "runs") -> pd.DataFrame:
    """One tidy row per run x level (x control) from every run directory under ``root``.

    Columns: ``run_id``; every spec field flattened with dotted names (``method.name``, ``recipe.lr``,
    ``method.options.regrow``); ``method`` (the spec's method name); what it ran as: ``method_key`` (the
    registered method), ``criterion`` (implied ones included: magnitude for iterative methods) and ``rounds``;
    the environment the level ran in (``env.torch``, ``env.device``, ``env.device_name``, ``env.cpu``,
    ``env.threads``, ``env.blas``, ``env.ticketlab``; empty for levels recorded before it was); then the
    level's metrics (density, accuracies, losses, early-stop step, ``wall_time`` = training + scoring time,
    ``winning``, ``layer_densities`` as a dict per row) and ``run_finished``. ``control`` is ``"ticket"``
    for the ticket itself.
    """
    rows = []
    for spec_file in sorted(Path(root).glob("*/spec.json")):
        run = RunDir(spec_file.parent)
        spec = run.spec()
        fields = _flatten(spec)
        resolved = _resolved(spec)  # for levels recorded before they recorded it
        finished = run.finished
        for metrics in sorted(run.path.glob("level_*/**/metrics.json")):
            row = load_json(metrics)
            row["control"] = row.get("control") or TICKET
            row.pop("history", None)
            env = row.pop("env", None) or {}
            row["wall_time"] = (row.get("train_time") or 0.0) + (row.get("score_time") or 0.0)
            rows.append(
                {
                    "run_id": run.path.name,
                    **fields,
                    "method": spec["method"]["name"],
                    **resolved,
                    **row,
                    **{f"env.{key}": value for key, value in env.items()},
                    "run_finished": finished,
                }
            )
    return pd.DataFrame(rows)


def _resolved(spec: dict[str, Any]) -> dict[str, Any]:
    """``method_key``, ``criterion`` and ``rounds`` of a recorded spec, as the levels now record them; the
    spec's criterion alone when its method cannot be resolved (e.g. a method of a plugin not loaded)."""
    try:
        r = Resolved.of(MethodSpec.model_validate(spec["method"]))
    except (ValueError, KeyError):
        return {"criterion": spec["method"].get("criterion")}
    return {"method_key": r.method_key, "criterion": r.criterion, "rounds": r.rounds}


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


def is_ticket(control: object) -> bool:
    """Whether a ``control`` cell names the ticket itself: ``"ticket"``, or empty in tables of older versions."""
    return control is None or control in ("", TICKET) or (isinstance(control, float) and control != control)
