"""Masks: one boolean tensor per prunable weight, kept beside a plain ``nn.Module``.

A mask is data, not a layer: rewinding is "load the snapshot, apply the mask", and the same mask can be
saved, compared (Jaccard) or shuffled without touching any model code.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import torch
from torch import nn

from ticketlab.files import CorruptFileError, load_tensors, save_tensors

Scope = Literal["global", "layerwise"]
SCOPES: tuple[str, ...] = ("global", "layerwise")


class LayerCollapseError(RuntimeError):
    """Raised when a spec asks to fail on layer collapse and a mask has it."""


def prunable_parameters(model: nn.Module, exempt: Iterable[str] = ()) -> dict[str, nn.Parameter]:
    """Weights of every Linear and Conv layer, by parameter name, in model order.

    Biases and BatchNorm parameters are never prunable; ``exempt`` names layers (module
    names such as ``"fc3"``, or parameter names such as ``"fc3.weight"``) that a spec keeps dense.
    """
    exempt = set(exempt)
    found: dict[str, nn.Parameter] = {}
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            name = f"{module_name}.weight" if module_name else "weight"
            if module_name in exempt or name in exempt:
                continue
            found[name] = cast(nn.Parameter, module.weight)  # torch annotates layer weights as plain Tensors
    return found


def model_fingerprint(model_or_shapes: nn.Module | Mapping[str, torch.Size]) -> str:
    """A short hash of the prunable parameters' names and shapes: a mask only fits models with the same."""
    if isinstance(model_or_shapes, nn.Module):
        shapes = {k: tuple(p.shape) for k, p in prunable_parameters(model_or_shapes).items()}
    else:
        shapes = {k: tuple(v) for k, v in model_or_shapes.items()}
    return hashlib.sha256(json.dumps(sorted(shapes.items())).encode()).hexdigest()[:16]


class Mask(Mapping[str, torch.Tensor]):
    """Mapping parameter name -> bool tensor (True = kept)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self._tensors = {name: t.detach().to(torch.bool) for name, t in tensors.items()}

    # -- construction --------------------------------------------------------------------------------
    @classmethod
    def ones(cls, model: nn.Module, exempt: Iterable[str] = ()) -> Mask:
        """The dense mask over the model's prunable weights."""
        return cls({n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_parameters(model, exempt).items()})

    @classmethod
    def from_nonzero(cls, model: nn.Module, exempt: Iterable[str] = ()) -> Mask:
        return cls({n: p.detach() != 0 for n, p in prunable_parameters(model, exempt).items()})

    # -- mapping -------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping) or set(self) != set(other):
            return False
        return all(torch.equal(self[k].cpu(), other[k].cpu().to(torch.bool)) for k in self)

    def __and__(self, other: Mapping[str, torch.Tensor]) -> Mask:
        return Mask({k: self[k] & other[k].to(self[k].device) for k in self})

    def __repr__(self) -> str:
        return f"Mask({len(self)} tensors, density={self.density():.4g})"

    def to(self, device: torch.device | str) -> Mask:
        return Mask({k: v.to(device) for k, v in self.items()})

    def clone(self) -> Mask:
        return Mask({k: v.clone() for k, v in self.items()})

    # -- statistics ----------------------------------------------------------------------------------
    def kept(self) -> int:
        return int(sum(int(t.sum()) for t in self.values()))

    def total(self) -> int:
        return int(sum(t.numel() for t in self.values()))

    def density(self) -> float:
        return self.kept() / max(self.total(), 1)

    def sparsity(self) -> float:
        return 1.0 - self.density()

    def layer_densities(self) -> dict[str, float]:
        return {k: float(t.float().mean()) if t.numel() else 1.0 for k, t in self.items()}

    def empty_layers(self) -> list[str]:
        """Layers with no weight left (the plain form of layer collapse)."""
        return [k for k, t in self.items() if t.numel() and not bool(t.any())]

    # -- use -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def apply(self, model: nn.Module) -> nn.Module:
        """Zero the pruned weights of ``model`` in place."""
        params = prunable_parameters(model)
        self._check_fits(params)
        for name, keep in self.items():
            params[name].mul_(keep.to(params[name].device, params[name].dtype))
        return model

    def _check_fits(self, params: Mapping[str, torch.Tensor]) -> None:
        missing = [k for k in self if k not in params]
        if missing:
            raise ValueError(f"mask has parameters the model lacks: {missing[:5]}")
        wrong = [k for k in self if tuple(params[k].shape) != tuple(self[k].shape)]
        if wrong:
            k = wrong[0]
            raise ValueError(f"mask shape {tuple(self[k].shape)} for {k!r} != parameter {tuple(params[k].shape)}")

    def fingerprint(self) -> str:
        return model_fingerprint({k: v.shape for k, v in self.items()})

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        return save_tensors(
            path, {k: v.to(torch.uint8) for k, v in self.items()}, {"kind": "mask", "model": self.fingerprint()}
        )

    @classmethod
    def load(cls, path: str | os.PathLike, model: nn.Module | None = None) -> Mask:
        """Load a mask; with ``model`` given, reject a mask made for another architecture."""
        tensors, meta = load_tensors(path)
        if meta.get("kind") != "mask":
            raise CorruptFileError(f"{path}: not a ticketlab mask file (kind={meta.get('kind')!r})")
        mask = cls(tensors)
        if mask.fingerprint() != meta.get("model"):
            raise CorruptFileError(f"{path}: mask shapes do not match the fingerprint stored with them")
        if model is not None:
            expected = {k: p.shape for k, p in prunable_parameters(model).items() if k in mask}
            if set(mask) - set(expected) or model_fingerprint(expected) != mask.fingerprint():
                raise ValueError(f"{path}: mask was made for another model (its prunable layers or shapes differ)")
        return mask


def masked_state(state: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of a state dict with the pruned weights zeroed."""
    out = {k: v.clone() for k, v in state.items()}
    for name, keep in mask.items():
        out[name] = out[name] * keep.to(out[name].device, out[name].dtype)
    return out


# -- selection ---------------------------------------------------------------------------------------
def _topk_exact(scores: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of the k largest entries of a flat tensor; ties broken by a seeded random order.

    A stable sort over a random permutation orders equal scores randomly, never by position (a bare
    threshold keeps all tied weights and misses the target density: 000 appendix A.2).
    """
    n = scores.numel()
    perm = torch.randperm(n, generator=generator).to(scores.device)
    order = torch.sort(scores[perm], descending=True, stable=True).indices[:k]
    return perm[order]


def top_k(
    scores: Mapping[str, torch.Tensor],
    counts: int | Mapping[str, int],
    allowed: Mapping[str, torch.Tensor] | None = None,
    seed: int = 0,
) -> Mask:
    """Exactly ``counts`` entries with the highest scores among the ``allowed`` ones (all, if None): one
    ranking over every layer for an int, else ``counts[name]`` in each layer. Ties break by a seeded random
    order (exact k with seeded ties: 000 appendix A.2); one generator runs through the layers in the mapping's order, so callers that
    need an order-independent result pass the scores in a canonical order (``select`` sorts them)."""
    names = list(scores)
    generator = torch.Generator().manual_seed(seed)
    flat = []
    for name in names:
        s = scores[name].detach().reshape(-1).to(torch.float64)
        if allowed is not None:
            s = torch.where(allowed[name].reshape(-1).to(s.device, torch.bool), s, torch.full_like(s, -torch.inf))
        flat.append(s)

    def check(k: int, which: list[int], what: str) -> None:
        n = sum(flat[i].numel() if allowed is None else int(allowed[names[i]].sum()) for i in which)
        if k > n:
            raise ValueError(f"asked for {k} weights of {what} but only {n} are allowed")

    if isinstance(counts, int):
        check(counts, list(range(len(flat))), "the model")
        allscores = torch.cat([s.to(flat[0].device) for s in flat])
        everything = torch.zeros(allscores.numel(), dtype=torch.bool, device=allscores.device)
        everything[_topk_exact(allscores, counts, generator)] = True
        parts = list(torch.split(everything, [s.numel() for s in flat]))
    else:
        parts = []
        for i, s in enumerate(flat):
            check(counts[names[i]], [i], repr(names[i]))
            keep = torch.zeros(s.numel(), dtype=torch.bool, device=s.device)
            keep[_topk_exact(s, counts[names[i]], generator)] = True
            parts.append(keep)
    return Mask({name: p.reshape(scores[name].shape).to(scores[name].device) for name, p in zip(names, parts)})


def select(
    scores: Mapping[str, torch.Tensor],
    density: float,
    scope: Scope = "global",
    previous: Mapping[str, torch.Tensor] | None = None,
    seed: int = 0,
) -> Mask:
    """Keep exactly ``round(density * N)`` weights with the highest scores (higher = keep).

    ``scope="global"``: one ranking over all layers; ``"layerwise"``: ``round(density * N_l)`` per layer.
    Weights pruned in ``previous`` stay pruned: methods that regrow weights build their masks themselves.
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    # a canonical order: the ranking (and its seeded tie-break) must not depend on the mapping's order,
    # which a mask loaded from disk does not keep (safetensors returns its keys in hash order)
    ordered = {name: scores[name] for name in sorted(scores)}
    for name, s in ordered.items():
        if torch.isnan(s).any():
            raise ValueError(f"scores for {name!r} contain NaN")

    def budget(names: list[str], what: str) -> int:
        k = round(density * sum(scores[n].numel() for n in names))
        available = sum(scores[n].numel() if previous is None else int(previous[n].sum()) for n in names)
        if k > available:
            raise ValueError(f"density {density} keeps {k} weights of {what} but only {available} are still unpruned")
        return k

    counts: int | dict[str, int] = (
        budget(list(ordered), "the model") if scope == "global" else {n: budget([n], repr(n)) for n in ordered}
    )
    kept = top_k(ordered, counts, previous, seed)
    return Mask({name: kept[name] for name in scores})


# -- layer collapse ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CollapseReport:
    empty_layers: list[str]
    disconnected: bool  # no path with all kept weights from input to output

    @property
    def collapsed(self) -> bool:
        return bool(self.empty_layers) or self.disconnected


@torch.no_grad()
def layer_collapse(model: nn.Module, mask: Mask, input_shape: tuple[int, ...]) -> CollapseReport:
    """Detect empty layers and networks with no input-output path left (Tanaka et al. 2020).

    The path check runs the network linearised as in SynFlow: kept weights set to 1/fan-in (positive, so
    no path can cancel another), biases and BatchNorm shifts zeroed, an all-ones input. The output is zero
    exactly when no path of kept weights connects input to output.
    """
    probe = copy.deepcopy(model).double().eval()
    params = prunable_parameters(probe)
    for name, param in probe.named_parameters():
        if name in mask:
            keep = mask[name].to(param.device, param.dtype)
            param.copy_(keep / max(keep[0].numel(), 1))
        elif name.endswith("bias"):
            param.zero_()
        else:
            param.fill_(1.0)  # BatchNorm scale
    device = next(probe.parameters()).device
    for module in probe.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            # statistics mean 0, variance 1, also in a layer that tracks none (it would normalise the
            # constant probe by its own statistics, to zero, and hide every path)
            module.running_mean = torch.zeros(module.num_features, dtype=torch.float64, device=device)
            module.running_var = torch.ones(module.num_features, dtype=torch.float64, device=device)
    del params
    out = probe(torch.ones((1, *input_shape), dtype=torch.float64, device=device))
    return CollapseReport(mask.empty_layers(), disconnected=not bool((out.abs() > 0).any()))
