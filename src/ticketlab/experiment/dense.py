"""The dense baseline shared between runs: level 0 of every run that would train the same dense network
the same way is computed once and copied into each run directory, as the initial weights are shared.

The key holds everything that changes level 0's files: data (dataset, validation split), architecture,
initialisation and seed, recipe, exempt layers, ``end_on_best``, and what the method does at level 0. That
last part differs between families: pruning at initialisation and supermasks train the whole recipe and
keep no snapshot; iterative pruning (and the regrowth methods built on it) trains ``train`` steps and
keeps the snapshot ``rewind_params`` steps before the end; TOM keeps the snapshot at its pretraining
point. Durations enter the key as written, so ``1ep`` and the same number of steps written in ``it`` are
different keys (the run is then computed twice, never wrongly shared). A method not listed here keeps its
own level 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from ticketlab.config.spec import ExperimentSpec
from ticketlab.criteria.saw import is_saw
from ticketlab.methods.registry import options_of, resolve_method
from ticketlab.registry import split_name
from ticketlab.store import Shared

DENSE_DIR = "dense"
_FULL = ("oneshot", "multishot", "supermask")  # level 0: the recipe's whole training, no snapshot
_GIMP = ("gimp", "finetune", "lottery", "late_rewind", "lr_rewind", "sgimp")
_ON_GIMP = ("double_pruning", "scored_pruning")  # level 0 of their ``base`` GIMP preset


def _rewind_point(name: str, explicit: Any) -> Any:
    """Where a GIMP preset keeps its rewind snapshot, in the spec's own terms."""
    if explicit is not None:
        return ["rewind_params", explicit]
    key, arg = split_name(name)
    if key in ("finetune", "lr_rewind"):
        return "end"
    if key in ("lottery", "gimp"):
        return "start"
    return [key, arg]  # late_rewind:k (snapshot at k), sgimp:X% (X% of training before the end)


def level0(spec: ExperimentSpec) -> dict[str, Any] | None:
    """What ``spec``'s method does at level 0, or None for a method whose dense level is not shared."""
    key, _ = resolve_method(spec.method)
    method = spec.method.model_dump(mode="json")
    if key in _FULL:
        return {"train": "recipe", "snapshot": None}
    if key in _GIMP or key in _ON_GIMP:
        preset = spec.method.name if key in _GIMP else options_of(spec.method).base
        return {"train": method["train"], "snapshot": _rewind_point(preset, method["rewind_params"])}
    if key == "tom":
        return {"train": "recipe", "snapshot": ["pretrain", options_of(spec.method).pretrain]}
    return None


def dense_key(spec: ExperimentSpec) -> str | None:
    """The text naming ``spec``'s dense level among all runs (None: not shared)."""
    plan = level0(spec)
    if plan is None:
        return None
    fields = (
        "model",
        "dataset",
        "val_size",
        "split_seed",
        "init",
        "seed",
        "bn_momentum",
        "bn_eps",
        "dropout",
        "exempt",
        "recipe",
        "end_on_best",
    )
    key: dict[str, Any] = {"level0": plan, **spec.model_dump(mode="json", include=set(fields))}
    if is_saw(spec.init):  # scores as initial weights depend on the pruning batches
        m = spec.method
        key["saw"] = [m.pruning_batches, m.pruning_samples_per_class, m.include_bias]
    return json.dumps(key, sort_keys=True)


def dense_name(spec: ExperimentSpec) -> str | None:
    """The shared entry's folder name under ``root/dense/``."""
    key = dense_key(spec)
    if key is None:
        return None
    model = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.model)
    return f"{model}-seed{spec.seed}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def dense_store(root: str | os.PathLike, spec: ExperimentSpec) -> Shared | None:
    """Where ``spec``'s dense level is shared under ``root`` (None: not shared)."""
    key, name = dense_key(spec), dense_name(spec)
    if key is None or name is None:
        return None
    return Shared(Path(root) / DENSE_DIR / name, key)
