"""Per-weight features of the meta model (000 §3.2.2, §5.2.1, appendix B), one value per prunable weight.

Base features are the scores of the four criteria 000 combines (magnitude, SNIP, GraSP, SynFlow; GraSP
signed, as 000's figure 5.7a shows negative scores), each min-max scaled to [0, 1] *per layer*: 000 §5.2.1
scales every feature to [0, 1] because the criteria live on very different ranges, and per layer because
a layer's scores share a scale (SynFlow's sum per layer is conserved, so its values shrink with layer
size). Optional ranks (000 §5.2.1 "rank all of the values for a feature") are per-layer average ranks
mapped to [0, 1]: (rank − 1) / (N − 1).

Extended features (000 appendix B): the weight itself, its layer's Frobenius norm, and the max and mean
activation of the weight's input and output neuron over the pruning batches. "Activation" of the input
neuron is the value the weight multiplies (the layer's input, after the previous non-linearity); of the
output neuron, the layer's output it adds to (pre-activation). For a Conv layer a neuron is a channel and
its statistics run over the batch and all spatial positions. The layer norm is constant inside a layer, so
extended features are min-max scaled over the *whole network* instead.

Everything is computed on the masked network (pruned weights are zero), in eval mode, and never writes to
the model: the same functions serve the table (``build`` in :mod:`ticketlab.metalearn.table`) and the criterion
``meta:<path>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn
from torch.func import functional_call

from ticketlab.criteria.base import Scores, ScoringContext, functional_state, masked_weights, mode, require_batches
from ticketlab.criteria.scoring import score
from ticketlab.masks import Mask, prunable_parameters

SCORE_CRITERIA: tuple[str, ...] = ("magnitude", "snip", "grasp", "synflow")
EXTENDED: tuple[str, ...] = ("weight", "layer_norm", "in_max", "in_mean", "out_max", "out_mean")
RANK_PREFIX = "rank_"


@dataclass(frozen=True)
class FeatureSpec:
    """Which feature columns to compute: scores of ``criteria`` [+ their ranks] [+ the extended six]."""

    criteria: tuple[str, ...] = SCORE_CRITERIA
    ranks: bool = False
    extended: bool = False

    def columns(self) -> list[str]:
        cols = list(self.criteria)
        if self.ranks:
            cols += [RANK_PREFIX + c for c in self.criteria]
        if self.extended:
            cols += list(EXTENDED)
        return cols

    @classmethod
    def needed_for(cls, columns: Sequence[str]) -> FeatureSpec:
        """The smallest spec that computes ``columns`` (a fitted model's inputs)."""
        criteria: list[str] = []
        ranks = extended = False
        for col in columns:
            if col in EXTENDED:
                extended = True
                continue
            if col.startswith(RANK_PREFIX):
                ranks, col = True, col[len(RANK_PREFIX) :]
            if col not in criteria:
                criteria.append(col)
        return cls(tuple(criteria), ranks, extended)


def scale_per_layer(values: Scores) -> Scores:
    """Min-max scale each tensor to [0, 1] (a constant tensor becomes all zeros)."""
    values = {name: v.detach() for name, v in values.items()}
    return {name: _minmax(v, v.min(), v.max()) for name, v in values.items()}


def scale_global(values: Scores) -> Scores:
    """Min-max scale all tensors together to [0, 1] (one min and max over the whole network)."""
    values = {name: v.detach() for name, v in values.items()}
    lo = min(v.min() for v in values.values())
    hi = max(v.max() for v in values.values())
    return {name: _minmax(v, lo, hi) for name, v in values.items()}


def _minmax(v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    v = v.to(torch.float64)
    span = float(hi) - float(lo)
    return (v - float(lo)) / span if span > 0 else torch.zeros_like(v)


def rank_per_layer(values: Scores) -> Scores:
    """Per-layer average ranks in [0, 1]: tied values share a rank, never ordered by their position."""
    out = {}
    for name, v in values.items():
        flat = v.detach().to(torch.float64).flatten().cpu().numpy()
        r = (rankdata(flat, method="average") - 1.0) / max(flat.size - 1, 1)
        out[name] = torch.as_tensor(r, dtype=torch.float64).reshape(v.shape).to(v.device)
    return out


def activation_stats(
    model: nn.Module, mask: Mask, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, Scores]:
    """``{"in_max"|"in_mean"|"out_max"|"out_mean": {param: tensor shaped like the weight}}``.

    The masked network runs in eval mode over ``batches`` (a functional call: the model is not touched);
    forward hooks record each prunable layer's input and output per neuron (per channel for Conv).
    """
    modules = dict(model.named_modules())
    owners = {name: name.rpartition(".")[0] for name in mask}
    acc: dict[str, dict[str, torch.Tensor]] = {}
    hooks = []

    def hook_for(param: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            x = inputs[0].detach().to(torch.float64)
            y = output.detach().to(torch.float64)
            channel = -1 if isinstance(module, nn.Linear) else 1
            for side, t in (("in", x), ("out", y)):
                t = t.movedim(channel, -1).reshape(-1, t.shape[channel])
                a = acc.setdefault(param, {})
                a[f"{side}_max"] = (
                    torch.maximum(a[f"{side}_max"], t.max(0).values) if f"{side}_max" in a else t.max(0).values
                )
                a[f"{side}_sum"] = a.get(f"{side}_sum", 0) + t.sum(0)
                a[f"{side}_n"] = a.get(f"{side}_n", 0) + t.shape[0]

        return record

    for param, owner in owners.items():
        module = modules[owner]
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            raise ValueError(f"activation features: transposed convolution {owner!r} is not supported")
        hooks.append(module.register_forward_hook(hook_for(param)))
    state = functional_state(model, masked_weights(model, mask))
    try:
        with torch.no_grad(), mode(model, False):
            for x, _ in batches:
                functional_call(model, state, (x,))
    finally:
        for h in hooks:
            h.remove()

    weights = prunable_parameters(model)
    out: dict[str, Scores] = {k: {} for k in ("in_max", "in_mean", "out_max", "out_mean")}
    for param, a in acc.items():
        w = weights[param]
        stats = {
            "in_max": a["in_max"], "in_mean": a["in_sum"] / a["in_n"],
            "out_max": a["out_max"], "out_mean": a["out_sum"] / a["out_n"],
        }  # fmt: skip
        for key, per_neuron in stats.items():
            out[key][param] = _broadcast(per_neuron, w, modules[owners[param]], key.startswith("in"))
    return out


def _broadcast(per_neuron: torch.Tensor, weight: torch.Tensor, module: nn.Module, input_side: bool) -> torch.Tensor:
    """Spread one value per neuron over the weights touching it. Linear weight [out, in]; Conv weight
    [out, in/groups, *kernel], whose input channel for (o, j) is group(o)·(in/groups) + j."""
    shape = weight.shape
    if not input_side:
        return per_neuron.reshape(shape[0], *([1] * (len(shape) - 1))).expand(shape).clone()
    if isinstance(module, nn.Linear):
        return per_neuron.reshape(1, shape[1]).expand(shape).clone()
    out_c, per_group = shape[0], shape[1]
    groups = getattr(module, "groups", 1)
    group = torch.arange(out_c, device=per_neuron.device) // (out_c // groups)
    index = group[:, None] * per_group + torch.arange(per_group, device=per_neuron.device)[None, :]
    return per_neuron[index].reshape(out_c, per_group, *([1] * (len(shape) - 2))).expand(shape).clone()


def compute_features(
    model: nn.Module, mask: Mask, ctx: ScoringContext, spec: FeatureSpec = FeatureSpec()
) -> dict[str, Scores]:
    """``{column: {param: float64 tensor shaped like the weight}}`` for every column of ``spec``."""
    raw = {c: score(c, model, mask, ctx) for c in spec.criteria}
    out: dict[str, Scores] = {c: scale_per_layer(s) for c, s in raw.items()}
    if spec.ranks:
        out.update({RANK_PREFIX + c: rank_per_layer(s) for c, s in raw.items()})
    if spec.extended:
        weights = masked_weights(model, mask)
        extended: dict[str, Scores] = {
            "weight": weights,
            "layer_norm": {n: torch.full_like(w, float(torch.linalg.vector_norm(w))) for n, w in weights.items()},
        }
        extended.update(activation_stats(model, mask, require_batches(ctx, "meta (activation features)")))
        out.update({c: scale_global(v) for c, v in extended.items()})
    return {c: out[c] for c in spec.columns()}


def feature_matrix(features: dict[str, Scores], columns: Sequence[str], params: Sequence[str]) -> np.ndarray:
    """Rows = the weights of ``params`` in order, flattened; columns = ``columns``. float32."""
    return np.stack(
        [np.concatenate([features[c][p].detach().flatten().cpu().numpy() for p in params]) for c in columns], axis=1
    ).astype(np.float32)
