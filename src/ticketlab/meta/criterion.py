"""``meta:<path>``: a fitted meta model used as a scoring criterion (000 §3.2.2, the four steps there).

The features the model was fitted on are computed for the network being pruned (the masked network, as
every criterion scores), the model predicts one score per weight, and selection does the rest. Pruned
weights score 0, like SNIP/GraSP/SynFlow give them. The model is read once per file version. The path must
exist when the name is parsed (a spec naming a missing model fails before any training). A run's id hashes
the name, not the file: refitting a model in place does not invalidate finished runs that used it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from torch import nn

from ticketlab.criteria import PARAMETRIC, Criterion, Parametric, ScoringContext
from ticketlab.criteria.base import Scores
from ticketlab.masks import Mask


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int):  # noqa: ANN202 - MetaModel, imported lazily
    from ticketlab.meta.fit import MetaModel

    return MetaModel.load(path)


def descriptor_path(path: str | os.PathLike) -> Path:
    """The descriptor ``<name>.json`` of a meta model given by it or by its model file; it must exist."""
    p = Path(path).expanduser()
    descriptor = p if p.suffix == ".json" else p.with_suffix(".json")
    if not descriptor.is_file():
        raise FileNotFoundError(f"criterion meta:{path}: no fitted meta model there (descriptor {descriptor})")
    return descriptor


def load_meta_model(path: str | os.PathLike):  # noqa: ANN201
    """The :class:`~ticketlab.meta.fit.MetaModel` at ``path`` (descriptor JSON or model file), cached."""
    descriptor = descriptor_path(path)
    return _load(str(descriptor.resolve()), descriptor.stat().st_mtime_ns)


def meta_scores(model: nn.Module, mask: Mask, ctx: ScoringContext, path: str | os.PathLike) -> Scores:
    """Predicted scores of the meta model at ``path`` for every entry of ``mask``."""
    from ticketlab.meta.features import FeatureSpec, compute_features, feature_matrix

    meta = load_meta_model(path)
    params = list(mask)
    features = compute_features(model, mask, ctx, FeatureSpec.needed_for(meta.columns))
    pred = meta.predict(feature_matrix(features, meta.columns, params))
    out, start = {}, 0
    for name in params:
        keep = mask[name]
        values = torch.as_tensor(pred[start : start + keep.numel()], dtype=torch.float64).reshape(keep.shape)
        start += keep.numel()
        out[name] = torch.where(keep.cpu(), values, torch.zeros_like(values)).to(keep.device)
    return out


def _build(path: str) -> Criterion:
    def criterion(model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
        return meta_scores(model, mask, ctx, path)

    return criterion


PARAMETRIC.register("meta")(
    Parametric(_build, data_aware=True, usage="meta:<path of a fitted meta model>", check=descriptor_path)
)
