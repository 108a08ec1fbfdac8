"""The meta model's training table (000 §5.2.1): per-weight features at initialisation beside the target,
the reference ticket found from the very same initial weights.

000 takes the best ticket it found, SynFlow under the iterative multi-shot (IMS) schedule, as its
approximation of the ideal ticket; our default reference is the same: GIMP with weight rewinding to
initialisation (000's ISS resets the weights to their initial values) whose prune step is 10-round
multi-shot SynFlow. Any method spec can stand in (e.g. ``MethodSpec(name="synflow")``, 100-round SynFlow at
initialisation, which needs no training before its ticket). The reference is an ordinary experiment run
(``run_experiment``), so it resumes and is shared with other uses, and the features are computed on the
initial weights stored for (model, init, seed) under ``root/inits/`` (000 appendix A.1).

Target ``scores``: the reference's last scores (of its final prune round, pruned weights 0), min-max
scaled to [0, 1] per layer like the features; 000's table 5.1 MSEs (~6e-5, at 0.5% density) fit such a
heavy-tailed score target, not a 0/1 mask, whose variance would be ~5e-3. Target ``mask``: the ticket's
0/1 mask.

One row per prunable weight and seed: ``seed, layer, index`` (flat index in the layer), the feature
columns, ``target``. Saved as parquet (metadata in the frame's ``attrs``) or as CSV (``.csv``/``.csv.gz``)
whose first line is ``# {metadata json}``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from ticketlab.config.recipe import Recipe
from ticketlab.config.spec import ExperimentSpec, MethodSpec
from ticketlab.criteria import ScoringContext
from ticketlab.criteria.features import FeatureSpec, compute_features, feature_matrix, scale_per_layer
from ticketlab.data import load_dataset
from ticketlab.data.batches import pruning_batches
from ticketlab.experiment.run import initial_weights, run_experiment
from ticketlab.hardware.device import resolve_device
from ticketlab.masks import Mask
from ticketlab.models import build_model
from ticketlab.training.loop import Progress

Target = Literal["scores", "mask"]
TARGETS = ("scores", "mask")
REFERENCE = MethodSpec(name="lottery", criterion="synflow", rounds=10)  # IMS SynFlow (000 §5.2.1)
TABLE_FORMAT = "ticketlab-meta-table/1"


def build_table(
    model: str = "lenet300",
    dataset: str = "fashion-mnist",
    density: float = 0.01,
    *,
    seeds: Sequence[int] = (0,),
    reference: MethodSpec = REFERENCE,
    recipe: Recipe | None = None,
    target: Target = "scores",
    features: FeatureSpec = FeatureSpec(),
    init: str = "kaiming_normal",
    val_size: int = 5000,
    root: str | os.PathLike = "runs",
    device: str | torch.device | None = None,
    data_root: str | os.PathLike | None = None,
    progress: Progress | None = None,
    log: Any = None,
) -> pd.DataFrame:
    """Run (or reuse) the reference ticket for each seed and tabulate features at init against its target."""
    if target not in TARGETS:
        raise ValueError(f"target: {target!r} is not one of {', '.join(TARGETS)}")
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    device = resolve_device(device)
    frames, runs = [], []
    for seed in seeds:
        spec = ExperimentSpec(
            model=model,
            dataset=dataset,
            init=init,
            seed=seed,
            val_size=val_size,
            recipe=recipe or Recipe(),
            method=reference,
            densities=(density,),
            save_scores=target == "scores",
        )
        result = run_experiment(spec, root, device=device, data_root=data_root, progress=progress, log=log)
        last = max((r for r in result.rows if not r["control"]), key=lambda r: r["level"])
        level = result.path / f"level_{last['level']:02d}"
        runs.append({
            "seed": seed, "run": str(result.path), "level": last["level"], "density": last["density"],
            "test_acc": last["test_acc"],
        })  # fmt: skip
        frames.append(_seed_frame(spec, Path(root), level, target, features, device, data_root))
    frame = pd.concat(frames, ignore_index=True)
    frame.attrs["ticketlab"] = {
        "format": TABLE_FORMAT, "model": model, "dataset": dataset, "init": init, "density": density,
        "target": target, "reference": reference.model_dump(mode="json"), "features": features.columns(),
        "runs": runs,
    }  # fmt: skip
    return frame


def _seed_frame(
    spec: ExperimentSpec,
    root: Path,
    level: Path,
    target: Target,
    features: FeatureSpec,
    device: torch.device,
    data_root: str | os.PathLike | None,
) -> pd.DataFrame:
    """Features of the stored initial weights of ``spec`` beside the target read from ``level``."""
    from ticketlab.store import LevelDir

    data = load_dataset(spec.dataset, root=data_root, val_size=spec.val_size, seed=spec.split_seed, device=device)
    net = build_model(
        spec.model,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        bn_momentum=spec.bn_momentum,
        bn_eps=spec.bn_eps,
        dropout=spec.dropout,
    )
    init_state = initial_weights(net, spec, data.input_shape, data.num_classes, root)
    net.load_state_dict(init_state)
    net.to(device)
    method = spec.method
    ctx = ScoringContext(
        batches=pruning_batches(data, method.pruning_batches, method.pruning_samples_per_class, spec.seed),
        input_shape=data.input_shape,
        initial=init_state,
        seed=spec.seed,
        options={"include_bias": method.include_bias},
    )
    mask = Mask.ones(net, spec.exempt)
    values = compute_features(net, mask, ctx, features)
    stored = LevelDir(level)
    if target == "mask":
        goal = {k: v.to(torch.float64) for k, v in stored.mask().items()}
    else:
        if not stored.has("scores"):
            raise FileNotFoundError(f"{level}: no scores.safetensors (the reference run did not save its scores)")
        goal = scale_per_layer(stored.weights("scores"))
    params = list(mask)
    columns = features.columns()
    x = feature_matrix(values, columns, params)
    frame = pd.DataFrame(x, columns=columns)
    frame.insert(0, "seed", np.full(len(frame), spec.seed, dtype=np.int64))
    frame.insert(1, "layer", pd.Categorical(np.repeat(params, [mask[p].numel() for p in params]), categories=params))
    frame.insert(2, "index", np.concatenate([np.arange(mask[p].numel()) for p in params]))
    frame["target"] = np.concatenate([goal[p].flatten().cpu().numpy() for p in params]).astype(np.float32)
    return frame


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The feature columns of a table, in order."""
    meta = frame.attrs.get("ticketlab", {})
    if "features" in meta:
        return list(meta["features"])
    return [c for c in frame.columns if c not in ("seed", "layer", "index", "target")]


def save_table(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a table as ``.parquet`` (needs pyarrow) or ``.csv``/``.csv.gz``; the file is replaced atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    kind = _kind(path)
    if kind == "parquet":
        _need_pyarrow(path)
        frame.to_parquet(tmp, index=False)
    else:
        text = "# " + json.dumps(frame.attrs.get("ticketlab", {})) + "\n" + frame.to_csv(index=False)
        tmp.write_bytes(gzip.compress(text.encode(), mtime=0) if kind == "csv.gz" else text.encode())
    os.replace(tmp, path)
    return path


def load_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by :func:`save_table`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"meta table {path} does not exist (write one with `ticketlab meta build`)")
    kind = _kind(path)
    if kind == "parquet":
        _need_pyarrow(path)
        return pd.read_parquet(path)
    raw = path.read_bytes()
    text = (gzip.decompress(raw) if kind == "csv.gz" else raw).decode()
    first, _, rest = text.partition("\n")
    frame = pd.read_csv(io.StringIO(rest))
    frame.attrs["ticketlab"] = json.loads(first[1:]) if first.startswith("#") else {}
    return frame


def _need_pyarrow(path: Path) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ValueError(
            f"meta table {path}: parquet needs pyarrow (pip install 'ticketlab[parquet]'); or name it .csv.gz"
        ) from None


def _kind(path: Path) -> str:
    name = path.name.lower()
    for kind in ("parquet", "csv.gz", "csv"):
        if name.endswith("." + kind):
            return kind
    raise ValueError(f"meta table {path}: name it .parquet, .csv or .csv.gz")
