"""``meta:<path>``: a fitted meta model used as a scoring criterion (000 §3.2.2, the four steps there).

The features the model was fitted on are computed for the network being pruned (the masked network, as
every criterion scores), the model predicts one score per weight, and selection does the rest. Pruned
weights score 0, like SNIP/GraSP/SynFlow give them. The model is read once per file version. The path must
exist when the name is parsed (a spec naming a missing model fails before any training). A run's id hashes
the name, not the file: refitting a model in place does not invalidate finished runs that used it.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ticketlab.criteria.base import Criterion, Scores, ScoringContext
from ticketlab.criteria.scoring import PARAMETRIC, Parametric
from ticketlab.files import atomic_write_json
from ticketlab.masks import Mask

MODEL_FORMAT = "ticketlab-meta-model/1"
# skops refuses to load types it does not know; these are the only extra ones our estimators hold.
SKOPS_TRUSTED = {"sklearn.tree._tree.Tree"}


class MetaMLP(nn.Module):
    """n-64-32-1, ReLU between layers, sigmoid out (000 §5.2.2 "Multi Layer Perceptron")."""

    def __init__(self, inputs: int, hidden: Sequence[int] = (64, 32)) -> None:
        super().__init__()
        sizes = [inputs, *hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


@dataclass
class MetaModel:
    """A fitted regressor with the feature columns it reads, in order."""

    name: str
    columns: list[str]
    estimator: Any
    info: dict[str, Any] = field(default_factory=dict)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted scores for rows of ``x`` (columns = :attr:`columns`), float64."""
        x = np.asarray(x, dtype=np.float32)
        if isinstance(self.estimator, nn.Module):
            with torch.inference_mode():
                return self.estimator(torch.tensor(x)).double().numpy()
        return np.asarray(self.estimator.predict(x), dtype=np.float64)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``<name>.json`` and the model file beside it; returns the JSON's path."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if isinstance(self.estimator, nn.Module):
            file = directory / f"{self.name}.safetensors"
            save_file({k: v.contiguous() for k, v in self.estimator.state_dict().items()}, str(file))
            kind = "torch"
        else:
            file, kind = _save_sklearn(self.estimator, directory / self.name)
        descriptor = {"format": MODEL_FORMAT, "name": self.name, "kind": kind, "file": file.name,
                      "columns": self.columns, **self.info}  # fmt: skip
        return atomic_write_json(directory / f"{self.name}.json", descriptor)

    @classmethod
    def load(cls, path: str | os.PathLike) -> MetaModel:
        """Load from the descriptor ``<name>.json`` or from the model file beside it."""
        path = Path(path)
        descriptor_path = path if path.suffix == ".json" else path.with_suffix(".json")
        if not descriptor_path.exists():
            raise FileNotFoundError(
                f"meta model {path}: no descriptor {descriptor_path} (fit one with `ticketlab meta fit`)"
            )
        info = json.loads(descriptor_path.read_text())
        if info.get("format") != MODEL_FORMAT:
            raise ValueError(f"{descriptor_path} is not a ticketlab meta model (format {info.get('format')!r})")
        file = descriptor_path.parent / info["file"]
        if info["kind"] == "torch":
            from safetensors.torch import load_file

            state = load_file(str(file))
            estimator: Any = MetaMLP(len(info["columns"]), info["params"]["hidden"])
            estimator.load_state_dict(state)
            estimator.eval()
        else:
            estimator = _load_sklearn(file, info["kind"])
        extra = {k: v for k, v in info.items() if k not in ("format", "name", "kind", "file", "columns")}
        return cls(info["name"], list(info["columns"]), estimator, extra)


def _save_sklearn(estimator: Any, stem: Path) -> tuple[Path, str]:
    try:
        import skops.io as sio
    except ImportError:
        import joblib

        file = stem.with_suffix(".joblib")
        joblib.dump(estimator, file)
        return file, "joblib"
    file = stem.with_suffix(".skops")
    sio.dump(estimator, file)
    return file, "skops"


def _load_sklearn(file: Path, kind: str) -> Any:
    if kind == "joblib":
        import joblib  # pickle: only load files you wrote yourself

        return joblib.load(file)
    import skops.io as sio

    untrusted = set(sio.get_untrusted_types(file=file))
    if untrusted - SKOPS_TRUSTED:
        raise ValueError(f"{file}: refusing to load untrusted types {sorted(untrusted - SKOPS_TRUSTED)}")
    return sio.load(file, trusted=sorted(untrusted))


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int):
    return MetaModel.load(path)


def descriptor_path(path: str | os.PathLike) -> Path:
    """The descriptor ``<name>.json`` of a meta model given by it or by its model file; it must exist."""
    p = Path(path).expanduser()
    descriptor = p if p.suffix == ".json" else p.with_suffix(".json")
    if not descriptor.is_file():
        raise FileNotFoundError(f"criterion meta:{path}: no fitted meta model there (descriptor {descriptor})")
    return descriptor


def load_meta_model(path: str | os.PathLike):
    """The :class:`~ticketlab.metalearn.fit.MetaModel` at ``path`` (descriptor JSON or model file), cached."""
    descriptor = descriptor_path(path)
    return _load(str(descriptor.resolve()), descriptor.stat().st_mtime_ns)


def meta_scores(model: nn.Module, mask: Mask, ctx: ScoringContext, path: str | os.PathLike) -> Scores:
    """Predicted scores of the meta model at ``path`` for every entry of ``mask``."""
    from ticketlab.criteria.features import FeatureSpec, compute_features, feature_matrix

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
