"""Mask overlap between tickets (000 §5.1: Jaccard similarity of the kept weights of two methods).

Tickets are read back from run directories: for each ticket kind and seed, the level whose density is
closest (in log density) to the chosen one, and only if it is within a factor :data:`CLOSE` of it: a kind
without such a level is left out rather than compared at another density. Two tickets are compared only on the same seed, i.e. the
same initial weights (000 appendix A.1), and the heatmap cell is the mean over the seeds both have.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ticketlab.analysis.results import is_ticket
from ticketlab.analysis.stats import tidy
from ticketlab.files import load_tensors
from ticketlab.masks import Mask

CLOSE = 1.5  # a level is compared at a density d only if its own density is within d / 1.5 .. d x 1.5


def jaccard(a: Mask, b: Mask) -> float:
    """|A ∩ B| / |A ∪ B| over all prunable weights together; 1.0 when both keep nothing."""
    if set(a) != set(b):
        raise ValueError(f"masks cover different parameters: {sorted(set(a) ^ set(b))}")
    inter = union = 0
    for name in a:
        x, y = a[name].bool(), b[name].bool()
        if x.shape != y.shape:
            raise ValueError(f"mask {name!r}: shapes {tuple(x.shape)} and {tuple(y.shape)} differ")
        inter += int((x & y).sum())
        union += int((x | y).sum())
    return 1.0 if union == 0 else inter / union


def level_path(root: str | os.PathLike, row: pd.Series) -> Path:
    """The level directory of a results row: ``root/<run_id>/level_XX[/<control>]``."""
    path = Path(root) / str(row["run_id"]) / f"level_{int(row['level']):02d}"
    control = row.get("control")
    return path if is_ticket(control) else path / str(control)


def closest_levels(frame: pd.DataFrame, density: float, factor: float | None = CLOSE) -> pd.DataFrame:
    """Per (label, seed) the row whose measured density is closest to ``density`` in log scale; with a
    ``factor``, only rows within that factor of it (a ticket kind with no level between density / factor
    and density x factor has no row)."""
    t = tidy(frame)
    t = t[t["density"].astype(float) > 0]
    if t.empty:
        return t
    t = t.assign(_dist=(np.log(t["density"].astype(float)) - math.log(density)).abs())
    picked = t.sort_values(["_dist", "level"], kind="stable").groupby(["label", "seed"], sort=True).head(1)
    if factor is not None:
        picked = picked[picked["_dist"] <= math.log(factor) + 1e-9]
    return picked.drop(columns="_dist").sort_values(["label", "seed"]).reset_index(drop=True)


def far_levels(frame: pd.DataFrame, density: float, factor: float = CLOSE) -> pd.DataFrame:
    """The ticket kinds :func:`closest_levels` leaves out: per label its measured density closest to
    ``density`` (columns ``label``, ``density``), for saying what was not compared and why."""
    near = set(closest_levels(frame, density, factor)["label"]) if len(frame) else set()
    closest = closest_levels(frame, density, None)
    if closest.empty:
        return pd.DataFrame(columns=["label", "density"])
    far = closest[~closest["label"].isin(near)]
    return far.groupby("label", sort=True)["density"].first().reset_index()


def overlap_matrix(
    frame: pd.DataFrame, root: str | os.PathLike, density: float, factor: float | None = CLOSE
) -> pd.DataFrame:
    """Mean Jaccard overlap (over shared seeds) between the tickets of every pair of ticket kinds at the
    level closest to ``density`` (within ``factor``); NaN where two kinds share no seed or their masks
    differ in shape."""
    picked = closest_levels(frame, density, factor)
    masks: dict[tuple[str, object], Mask] = {}
    for _, row in picked.iterrows():
        path = level_path(root, row) / "mask.safetensors"
        if path.exists():
            masks[(row["label"], row["seed"])] = Mask.load(path)
    names = sorted({label for label, _ in masks})
    out = pd.DataFrame(np.nan, index=names, columns=names)
    for i, a in enumerate(names):
        for b in names[i:]:
            values = []
            for (label, seed), mask in masks.items():
                other = masks.get((b, seed))
                if label == a and other is not None:
                    with contextlib.suppress(ValueError):  # different models: no overlap defined
                        values.append(jaccard(mask, other))
            if values:
                out.loc[a, b] = out.loc[b, a] = float(np.mean(values))
    return out


def kept_initial_values(
    frame: pd.DataFrame, root: str | os.PathLike, density: float, factor: float | None = CLOSE
) -> dict[str, torch.Tensor]:
    """Per ticket kind, the initial values of the weights its tickets keep at the level closest to
    ``density`` (within ``factor``), concatenated over seeds. Initial values come from level 0's ``start.safetensors`` (the
    shared initialisation of the run; a control's own fresh weights are its level's ``start``)."""
    picked = closest_levels(frame, density, factor)
    out: dict[str, list[torch.Tensor]] = {}
    for _, row in picked.iterrows():
        level = level_path(root, row)
        mask_file = level / "mask.safetensors"
        init_file = (
            level if not is_ticket(row["control"]) else Path(root) / str(row["run_id"]) / "level_00"
        ) / "start.safetensors"
        if not (mask_file.exists() and init_file.exists()):
            continue
        mask = Mask.load(mask_file)
        init, _ = load_tensors(init_file)
        values = [init[name].flatten()[mask[name].flatten()] for name in sorted(mask) if name in init]
        out.setdefault(row["label"], []).append(torch.cat(values) if values else torch.empty(0))
    return {label: torch.cat(parts) for label, parts in out.items()}
