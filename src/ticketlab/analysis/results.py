"""The results table: one tidy row per run x level (x control), read from the run store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from ticketlab.experiment.run import TICKET
from ticketlab.files import load_json


def load_results(root: str | os.PathLike = "runs") -> pd.DataFrame:
    """One tidy row per run x level (x control) from every run directory under ``root``.

    Columns: ``run_id``; every spec field flattened with dotted names (``method.name``, ``recipe.lr``,
    ``method.options.regrow``); ``method`` and ``criterion`` as short aliases; then the level's metrics
    (density, accuracies, losses, early-stop step, ``wall_time`` = training + scoring time, ``winning``,
    ``layer_densities`` as a dict per row) and ``run_finished``. ``control`` is ``"ticket"`` for the ticket.
    """
    rows = []
    for spec_file in sorted(Path(root).glob("*/spec.json")):
        run_dir = spec_file.parent
        spec = load_json(spec_file)
        fields = _flatten(spec)
        finished = (run_dir / "done.json").exists()
        for metrics in sorted(run_dir.glob("level_*/**/metrics.json")):
            row = load_json(metrics)
            row["control"] = row.get("control") or TICKET
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


def is_ticket(control: object) -> bool:
    """Whether a ``control`` cell names the ticket itself: ``"ticket"``, or empty in tables of older versions."""
    return control is None or control in ("", TICKET) or (isinstance(control, float) and control != control)
