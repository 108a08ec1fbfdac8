"""Scores as Weights, SaW (000 §3.4, §5.4): a criterion's scores become the initial weights.

``init: saw:<criterion>`` (``saw:snip``, ``saw:stacked(magnitude,synflow)``) initialises the model with the
base initialisation (Kaiming normal, seeded), scores it with the criterion on the dense network, and
replaces every prunable weight by sign(w)·|s| / max_layer |s|: "we transfer the sign of the original
weight to the score ... [and] scale all scores to fall in the range [−1, 1]" (000 §5.4), per layer (our
reading: 000 does not say over which weights the maximum is taken). A signed score (GraSP) contributes its
magnitude; biases, BatchNorm and exempt layers keep the base initialisation. Any method then prunes and
trains that model ("SynFlow on SNIP", 000 fig 5.13).

Data-aware criteria score on the spec's pruning batches, so SaW needs the dataset: it runs where the
shared initial weights are made (``ticketlab.experiment.run.initial_weights``), not through ``INITS``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from ticketlab.criteria.base import ScoringContext
from ticketlab.criteria.scoring import is_data_aware, parse, score
from ticketlab.data import Dataset
from ticketlab.masks import Mask, prunable_parameters
from ticketlab.models import initialize
from ticketlab.registry import split_name

PREFIX = "saw"
BASE_INIT = "kaiming_normal"  # 000 §5.4: "pruning scores obtained on the kaiming initialized weights"


def is_saw(init: str) -> bool:
    return split_name(init)[0] == PREFIX


def saw_criterion(init: str) -> str:
    """``"saw:stacked(magnitude, synflow)"`` -> ``"stacked(magnitude,synflow)"``, checked by the criteria
    parser; the normalised form (lower case, no spaces) keeps run ids and stored inits unique."""
    key, arg = split_name(init)
    if key != PREFIX or not arg:
        raise ValueError(f"init {init!r}: scores as weights are written saw:<criterion>, e.g. saw:snip")
    criterion = "".join(arg.lower().split())
    parse(criterion)
    return criterion


def scores_as_weights(
    weights: Mapping[str, torch.Tensor], scores: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """sign(w) · |s| / max|s| per layer, in the weights' dtype: the signs of the weights, the ordering of
    the scores, the largest magnitude of every layer exactly 1. The division runs in float64 so that
    SynFlow's huge scores scale without overflow."""
    out = {}
    for name, s in scores.items():
        w = weights[name]
        magnitude = s.detach().to(torch.float64).abs()
        top = magnitude.max() if magnitude.numel() else torch.tensor(0.0, dtype=torch.float64)
        if not torch.isfinite(top) or top == 0:
            raise ValueError(
                f"SaW: the scores of {name!r} are all zero or not finite; they cannot initialise the layer"
            )
        sign = torch.where(w >= 0, 1.0, -1.0).to(torch.float64)  # a weight of exactly 0 counts as positive
        out[name] = (sign * magnitude.to(sign.device) / top).to(w.dtype)
    return out


@torch.no_grad()
def saw_initialize(
    model: nn.Module,
    criterion: str,
    data: Dataset,
    *,
    seed: int = 0,
    exempt: Iterable[str] = (),
    pruning_batches: int = 10,
    samples_per_class: int = 10,
    include_bias: bool = False,
) -> nn.Module:
    """Initialise ``model`` in place with SaW of ``criterion`` (see the module docstring); returns it."""
    from ticketlab.data.batches import pruning_batches as make_batches
    from ticketlab.models import snapshot

    criterion = saw_criterion(f"{PREFIX}:{criterion}")
    initialize(model, BASE_INIT, seed=seed)
    model.to(data.x_train.device)
    mask = Mask.ones(model, exempt)
    batches = make_batches(data, pruning_batches, samples_per_class, seed) if is_data_aware(criterion) else []
    ctx = ScoringContext(
        batches=batches,
        input_shape=data.input_shape,
        initial=snapshot(model),
        seed=seed,
        options={"include_bias": include_bias},
    )
    with torch.enable_grad():
        scores = score(criterion, model, mask, ctx)
    params = prunable_parameters(model)
    for name, value in scores_as_weights({n: params[n].detach() for n in scores}, scores).items():
        params[name].copy_(value)
    return model
