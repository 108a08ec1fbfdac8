"""PHEW (Patil & Dovrolis 2021, "PHEW: Constructing Sparse Networks that Learn Fast and Generalize Well
without Training Data", ICML; the biased random walks of their method section): data-free.

Walks alternate: a forward walk starts at an input unit (round robin over the units), a backward walk at an
output unit (round robin); each step moves through one layer, taking weight (o, i, kernel position) with
probability ∝ |w| among the weights leaving the current unit (forward) or entering it (backward), so a walk
is an input-output path of kept weights. PHEW adds walks until the union of their weights reaches
the target count (their code: ``phew_masks``, direction alternating with ``i % 2``, ``select_seed_unit``
round robin, one kernel weight ∝ |w| per conv step (channel ∝ the kernel's Σ|w|, then a position ∝ |w|,
which is the same draw), a conv-to-linear step to a uniform feature of the channel, back by division).

Scores: a criterion does not know the target count, so PHEW's stopping rule is realised by the order in
which walks first take a weight. The walks are numbered in PHEW's order (forward 0, backward 0, forward 1,
...); a weight first taken by walk j scores (number of walks − j) + ½|w|/max|w|, so the exact top-k is the
union of the walks before the one that crosses k plus that walk's new weights by |w| (PHEW keeps the whole
last walk and overshoots by up to its length). The walks make about ``visits`` x N steps (N weights;
``visits`` · N / (2 · layers) walks each way, all run at once, layer by layer); weights no walk took rank
below every taken one, by |w|: a density beyond the walks' reach fills up by magnitude. With the default
``visits`` = 1 the walks take about 30% of the weights of lenet300, lenet5, resnet20 and wrn16_4 (50% with
2): up to about that density the walks alone decide the mask.

The walks follow the network's own graph, read from autograd on one forward pass of the model on detached
weights (hooks on its layers, removed afterwards). Where a walk can go several ways it takes each with equal
probability, but only ways that reach a layer before meeting another branch: an identity shortcut is never
taken, a block's body and its projection shortcut are taken half and half, as PHEW's ResNet code does.
Between two layers units are channels or features: equal counts map one to one, a Linear reading a
flattened conv map takes feature o·r + uniform(r) from channel o (r features per channel, channel-major).
A unit with no kept weight ends the walk: pruned weights are never walked (multi-shot PHEW re-enables
none) and score 0. Deterministic per ``ctx.seed``; the model is not touched.

Settings: ``phew:visits=1``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ticketlab.criteria.base import Scores, ScoringContext, functional_state, masked_weights, mode, register
from ticketlab.criteria.params import register_settings
from ticketlab.masks import Mask, prunable_parameters
from ticketlab.seeding import seed_for

DEFAULTS: dict[str, Any] = {"visits": 1.0}
INPUT, OUTPUT = "<input>", "<output>"
_TAG = 0x9E3  # keeps these draws apart from other uses of the same seed
Edges = dict[str, list[tuple[str, float]]]


@dataclass
class WalkGraph:
    """Prunable layers in call order and where a walk goes next: ``ahead[a]`` (forward, from ``INPUT`` or a
    layer's output) and ``behind[b]`` (backward, from ``OUTPUT`` or a layer's input), with probabilities."""

    order: list[str]
    ahead: Edges
    behind: Edges


def _input_shape(ctx: ScoringContext) -> tuple[int, ...]:
    if ctx.input_shape is not None:
        return tuple(ctx.input_shape)
    if ctx.batches:
        return tuple(ctx.batches[0][0].shape[1:])
    raise ValueError("phew needs ScoringContext.input_shape (one sample's shape, e.g. (1, 28, 28)) or a batch")


def layer_weights(model: nn.Module, mask: Mask) -> dict[str, torch.Tensor]:
    """|w ⊙ m| in float64 for every Linear and Conv layer, |w| for those the mask leaves out (kept dense by
    the spec): walks cross those too, but only masked weights are scored."""
    masked = masked_weights(model, mask)
    return {n: masked.get(n, p.detach()).abs().to(torch.float64) for n, p in prunable_parameters(model).items()}


def _trace(model: nn.Module, mask: Mask, input_shape: tuple[int, ...]) -> tuple[list[str], dict, Any, Any]:
    """One forward pass with hooks: (layer call order, layer output node -> name, input leaf, output node)."""
    modules = {f"{n}.weight" if n else "weight": m for n, m in model.named_modules()}
    weights = masked_weights(model, mask)
    layers = list(prunable_parameters(model))
    first = next(iter(weights.values()))
    x = torch.zeros((1, *input_shape), dtype=first.dtype, device=first.device, requires_grad=True)
    order: list[str] = []
    layer_at: dict[Any, str] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if name in order:
                raise ValueError(f"phew: layer {name!r} runs twice in one forward pass (shared weights)")
            order.append(name)
            layer_at[output.grad_fn] = name

        return record

    for name in layers:
        if getattr(modules[name], "groups", 1) != 1:
            raise ValueError(f"phew: grouped convolution {name!r}: its units do not connect channel to channel")
    handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
    try:
        with torch.enable_grad(), mode(model, False):
            out = functional_call(model, functional_state(model, weights), (x,))
    finally:
        for h in handles:
            h.remove()
    return order, layer_at, x, out.grad_fn


def _walk_back(start: Any) -> list[Any]:
    """Every autograd node reachable from ``start`` through ``next_functions`` (in no particular order)."""
    seen, stack, out = {start}, [start], []
    while stack:
        node = stack.pop()
        out.append(node)
        for nxt, _ in node.next_functions:
            if nxt is not None and nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return out


def _topological(out_node: Any) -> tuple[list[Any], dict[Any, list[Any]]]:
    """Nodes of the graph, producers before consumers, and each node's consumers (one entry per use)."""
    nodes = _walk_back(out_node)
    consumers: dict[Any, list[Any]] = defaultdict(list)
    pending = defaultdict(int)
    for node in nodes:
        for nxt, _ in node.next_functions:
            if nxt is not None:
                consumers[nxt].append(node)
                pending[node] += 1
    ready = [n for n in nodes if pending[n] == 0]
    topo = []
    while ready:
        node = ready.pop()
        topo.append(node)
        for c in consumers[node]:
            pending[c] -= 1
            if pending[c] == 0:
                ready.append(c)
    return topo, consumers


def _merge(parts: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for part in parts:
        for target, p in part.items():
            out[target] += p / len(parts)
    return dict(out)


def walk_graph(model: nn.Module, mask: Mask, input_shape: tuple[int, ...]) -> WalkGraph:
    """Where a walk goes from each layer, read from the autograd graph of one forward pass (see module doc)."""
    order, layer_at, x, out_node = _trace(model, mask, input_shape)
    topo, consumers = _topological(out_node)
    source = next(node for node in topo if getattr(node, "variable", None) is x)

    def producers(node: Any) -> list[Any]:
        return [n for n, _ in node.next_functions if n is not None]

    # A branch "has weights" if it reaches a layer before it meets another branch (a join going forward,
    # a fork going backward); a walk takes such a branch whenever there is one, so it never bypasses a
    # block's layers through an identity shortcut (PHEW's ResNet code), but picks between a block's body
    # and a projection shortcut.
    weighted_ahead: dict[Any, bool] = {}
    for node in reversed(topo):
        weighted_ahead[node] = len(producers(node)) < 2 and (
            node in layer_at or (node is not out_node and any(weighted_ahead[c] for c in consumers[node]))
        )
    weighted_behind: dict[Any, bool] = {}
    for node in topo:
        weighted_behind[node] = len(consumers[node]) < 2 and (
            node in layer_at or (node is not source and any(weighted_behind[p] for p in producers(node)))
        )
    ahead_of: dict[Any, dict[str, float]] = {}
    for node in reversed(topo):  # consumers first
        uses = [c for c in consumers[node] if weighted_ahead[c]] or consumers[node]
        ahead_of[node] = (
            {OUTPUT: 1.0}
            if node is out_node
            else _merge([{layer_at[c]: 1.0} if c in layer_at else ahead_of[c] for c in uses])
        )
    behind_of: dict[Any, dict[str, float]] = {}

    def back(node: Any) -> dict[str, float]:
        inputs = [p for p in producers(node) if weighted_behind[p]] or producers(node)
        return _merge([behind_of[p] for p in inputs])

    for node in topo:  # producers first
        if node is source:
            behind_of[node] = {INPUT: 1.0}
        else:
            behind_of[node] = {layer_at[node]: 1.0} if node in layer_at else back(node)
    nodes = {name: node for node, name in layer_at.items()}
    ahead = {INPUT: ahead_of[source], **{n: ahead_of[nodes[n]] for n in order}}
    behind = {OUTPUT: behind_of[out_node], **{n: back(nodes[n]) for n in order}}
    return WalkGraph(
        order, {k: sorted(v.items()) for k, v in ahead.items()}, {k: sorted(v.items()) for k, v in behind.items()}
    )


def _pick(
    rows_by_cols: torch.Tensor, rows: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """For a walk at each of ``rows``: a column drawn ∝ ``rows_by_cols[row]`` (non-negative, float64), by
    inverse CDF on one flat cumulative sum; and whether the row had any mass (else the walk ends)."""
    cols = rows_by_cols.shape[1]
    cdf = torch.cat([rows_by_cols.new_zeros(1), rows_by_cols.reshape(-1).cumsum(0)])
    base, end = cdf[rows * cols], cdf[(rows + 1) * cols]
    u = torch.rand(rows.shape, generator=generator, dtype=torch.float64).to(rows.device)
    target = torch.minimum(base + u * (end - base), torch.nextafter(end, base))
    ascending, order = torch.sort(target)  # sorted queries search the CDF about twice as fast (cache)
    flat = torch.empty_like(rows)
    flat[order] = torch.searchsorted(cdf[1:], ascending, right=True)
    flat = torch.minimum(torch.maximum(flat, rows * cols), (rows + 1) * cols - 1)
    return flat - rows * cols, end > base


def _choose(edges: list[tuple[str, float]], n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """For each of n walks, the index of the edge it takes (edges drawn by their probabilities)."""
    cumulative = torch.tensor([p for _, p in edges], dtype=torch.float64).cumsum(0)
    u = torch.rand(n, generator=generator, dtype=torch.float64) * cumulative[-1]
    return torch.searchsorted(cumulative, u, right=True).clamp(max=len(edges) - 1).to(device)


def _ratio(weights: Mapping[str, torch.Tensor], upstream: str, downstream: str) -> int:
    """Input units of ``downstream`` per output unit of ``upstream``: 1, or a flattened map's size."""
    n_out, n_in = weights[upstream].shape[0], weights[downstream].shape[1]
    if n_in % n_out:
        raise ValueError(f"phew: cannot map the {n_out} outputs of {upstream!r} to the {n_in} inputs of {downstream!r}")
    return n_in // n_out


def walks(
    graph: WalkGraph, absw: Mapping[str, torch.Tensor], n: int, forward: bool, generator: torch.Generator
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Run n walks in one direction, all at once, layer by layer. Returns, per layer, the walks that took a
    weight there (their numbers: forward walk t is 2t, backward walk t is 2t + 1, PHEW's alternation) and
    the weights they took (flat indices)."""
    device = next(iter(absw.values())).device
    index = {name: i for i, name in enumerate(graph.order)}
    visits = {}
    t = torch.arange(n, device=device)
    ids = 2 * t + (0 if forward else 1)
    pos, unit = torch.full((n,), -1, device=device), torch.zeros(n, dtype=torch.long, device=device)
    start = INPUT if forward else OUTPUT
    edges = graph.ahead[start] if forward else graph.behind[start]
    choice = _choose(edges, n, generator, device)
    for e, (target, _) in enumerate(edges):  # round robin over the input (output) units
        units = absw[target].shape[1] if forward else absw[target].shape[0]
        pos, unit = torch.where(choice == e, index[target], pos), torch.where(choice == e, t % units, unit)
    for name in graph.order if forward else reversed(graph.order):
        w = absw[name]
        n_out, n_in, k = w.shape[0], w.shape[1], math.prod(w.shape[2:])
        at = torch.nonzero(pos == index[name]).flatten()
        # forward: rows are input units, columns (output unit, kernel position); backward the weight as it is
        matrix = w.transpose(0, 1).reshape(n_in, -1) if forward else w.reshape(n_out, -1)
        col, alive = _pick(matrix, unit[at], generator)
        if forward:
            here, flat = col // k, col // k * n_in * k + unit[at] * k + col % k
        else:
            here, flat = col // k, unit[at] * n_in * k + col
        visits[name] = (ids[at][alive], flat[alive])
        edges = graph.ahead[name] if forward else graph.behind[name]
        choice = _choose(edges, len(at), generator, device)
        new_pos, new_unit = torch.full_like(at, -1), torch.zeros_like(at)
        for e, (target, _) in enumerate(edges):
            taken = alive & (choice == e)
            if target in (INPUT, OUTPUT):
                continue  # the walk is done
            r = _ratio(absw, name, target) if forward else _ratio(absw, target, name)
            spread = torch.randint(r, at.shape, generator=generator).to(device)
            mapped = here * r + spread if forward else here // r
            new_pos, new_unit = torch.where(taken, index[target], new_pos), torch.where(taken, mapped, new_unit)
        pos[at], unit[at] = new_pos, new_unit
    return visits


def phew_walks(
    model: nn.Module, mask: Mask, ctx: ScoringContext, settings: Mapping[str, Any]
) -> tuple[int, list[dict[str, tuple[torch.Tensor, torch.Tensor]]]]:
    """(walks each way, [forward visits, backward visits]) as :func:`walks` gives them, from ``ctx.seed``.
    The walks run on the CPU whatever the model's device: a CUDA cumulative sum may round differently and
    send a walk elsewhere, and the masks must be the same on every device."""
    absw = {name: w.cpu() for name, w in layer_weights(model, mask).items()}
    graph = walk_graph(model, mask, _input_shape(ctx))
    total = sum(w.numel() for w in absw.values())
    n = max(1, math.ceil(float(settings["visits"]) * total / (2 * len(absw))))
    generator = torch.Generator().manual_seed(seed_for(ctx.seed, _TAG))
    return n, [walks(graph, absw, n, forward, generator) for forward in (True, False)]


def phew_scores(model: nn.Module, mask: Mask, ctx: ScoringContext, settings: Mapping[str, Any]) -> Scores:
    n, visits = phew_walks(model, mask, ctx, settings)
    absw = {name: w.abs().to(torch.float64).cpu() for name, w in masked_weights(model, mask).items()}
    device = {name: w.device for name, w in mask.items()}
    never = 2 * n
    first = {name: torch.full((w.numel(),), never, dtype=torch.long, device=w.device) for name, w in absw.items()}
    for direction in visits:
        for name, (ids, flat) in direction.items():
            if name in first:  # layers left dense are walked, not scored
                first[name].scatter_reduce_(0, flat, ids, "amin")
    largest = max(float(w.max()) for w in absw.values()) or 1.0
    # walk order first (forward and backward walks alternate, as PHEW runs them), then 1/2 |w| / max|w|
    return {
        name: ((never - first[name]).to(torch.float64).reshape(w.shape) + 0.5 * w / largest).to(device[name])
        for name, w in absw.items()
    }


@register("phew")
def phew(model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    return phew_scores(model, mask, ctx, DEFAULTS)


def _check(settings: dict[str, Any]) -> None:
    if not settings["visits"] > 0:
        raise ValueError(f"phew: need visits > 0; got {settings}")


register_settings("phew", phew_scores, DEFAULTS, data_aware=False, check=_check)
