"""Criterion names and scoring: ``parse`` checks a name (``snip``, ``meta:<path>``, ``grasp:T=50``,
``stacked(A, B)``, nested), ``score`` computes it, ``is_data_aware`` says whether it needs pruning batches.

Stacked Scoring, ``stacked(A, B)``, is 000's algorithm 1 (§3.3.2): S_a <- a(θ_0), S_b <- b(S_a), select by
S_b. B scores a copy of the model whose prunable weights are A's scores as they are (the thesis
"temporarily replace[s] the model weights with the intermediate scores"; the copy means the model is never
written to). As in 000's code base, whose SNIP and GraSP scorers normalise what they return, SNIP scores
(``snip``) are divided by their sum Σ S and GraSP scores (``grasp``, ``grasp_abs``, any temperature) by
|Σ S|, the sum over all layers, before they become weights (all-zero scores stay zero); no other scores are
rescaled. Which scores those are is decided by the criterion that produced them, so in a nested
``stacked(stacked(X, snip), B)`` B sees normalised SNIP scores. Nesting works because A and B are any
criterion names.

``stacked_signed(A, B)`` is the variant this library had first, not 000's algorithm: for a data-aware B
the copy's weights are |S_a| with the sign of the original weight, sign(w)·|S_a| (the sign transfer 000
uses for Scores as Weights, §5.4), for a data-free B S_a as it is; nothing is normalised.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from ticketlab.criteria.base import CRITERIA, DATA_AWARE, Criterion, Scores, ScoringContext
from ticketlab.masks import Mask, prunable_parameters
from ticketlab.registry import Registry, UnknownNameError, split_name

STACKED = "stacked(A,B)"
STACKED_SIGNED = "stacked_signed(A,B)"
# scores that 000's code base normalises before Stacked Scoring uses them as weights: SNIP ÷ Σ, GraSP ÷ |Σ|
NORMALISED = ("snip", "grasp", "grasp_abs")


class Stack(NamedTuple):
    """A parsed ``stacked(first, second)``, or ``stacked_signed(...)`` with ``signed``."""

    first: str
    second: str
    signed: bool = False


@dataclass(frozen=True)
class Parametric:
    """A criterion whose name carries an argument after a colon, ``meta:<path>``: ``build(argument)`` gives
    the criterion. The argument keeps its case (it may be a path); it must not contain ``,()`` inside
    ``stacked(A, B)``."""

    build: Callable[[str], Criterion]
    data_aware: bool
    usage: str
    check: Callable[[str], object] | None = None  # validates the argument when the name is parsed (fail early)
    canonical: Callable[[str], str] | None = None  # one spelling per value (``t=200.0`` -> ``T=200``)


PARAMETRIC: Registry[Parametric] = Registry("criterion with an argument")


def _split_top_level(text: str, name: str) -> list[str]:
    """Split at commas outside parentheses; unbalanced parentheses are a malformed name."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"malformed criterion {name!r}: unbalanced parentheses")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"malformed criterion {name!r}: unbalanced parentheses")
    return [*parts, text[start:]]


def parse(name: str) -> str | Stack:
    """``"snip"`` -> ``"snip"``; ``"stacked(A, B)"`` -> ``Stack(A, B)``, ``"stacked_signed(A, B)"`` ->
    ``Stack(A, B, signed=True)`` (each part checked recursively); ``"grasp:t=50.0"`` -> ``"grasp:T=50"``.

    Unknown base names raise :class:`~ticketlab.registry.UnknownNameError` listing the allowed names; a
    malformed ``stacked`` raises ``ValueError``.
    """
    text = name.strip()
    if text.lower().startswith("stacked"):
        signed = text.lower().startswith("stacked_signed")
        form = STACKED_SIGNED if signed else STACKED
        inner = text[len("stacked_signed" if signed else "stacked") :].strip()
        if not (inner.startswith("(") and inner.endswith(")")):
            raise ValueError(f"malformed criterion {name!r}: write {form.replace(',', ', ')}")
        inner = inner[1:-1]
        parts = [p.strip() for p in _split_top_level(inner, name)]
        if len(parts) != 2 or not all(parts):
            kind = form.partition("(")[0]
            raise ValueError(f"malformed criterion {name!r}: {kind} takes exactly two criteria, {form}")
        # names are case-insensitive, but a parametric argument (a path) keeps its case
        parts = [_part_name(p, parse(p)) for p in parts]
        return Stack(parts[0], parts[1], signed)
    key, arg = split_name(text)
    if arg is not None:
        if key in PARAMETRIC:
            entry = PARAMETRIC.get(key)
            if not arg:
                raise ValueError(f"malformed criterion {name!r}: write {entry.usage}")
            if entry.check is not None:
                entry.check(arg)
            return f"{key}:{entry.canonical(arg) if entry.canonical else arg}"
        if key in CRITERIA:
            raise ValueError(f"malformed criterion {name!r}: {key!r} takes no argument")
        raise UnknownNameError(f"{CRITERIA.unknown_message(name)} {_combinations()}")
    text = text.lower()
    if "(" in text or ")" in text or "," in text:
        raise ValueError(f"malformed criterion {name!r}: only stacked(A, B) takes arguments")
    if text not in CRITERIA:
        raise UnknownNameError(f"{CRITERIA.unknown_message(name)} {_combinations()}")
    return text


def _part_name(part: str, parsed: str | Stack) -> str:
    """A part of ``stacked(A, B)`` as it is stored: a plain or parametric name in its parsed form, a nested
    stack as written (lower case unless it holds a parametric argument, which keeps its case)."""
    if isinstance(parsed, str):
        return parsed
    return part if ":" in part else part.lower()


def _combinations() -> str:
    usage = "".join(f"; {PARAMETRIC.get(k).usage}" for k in PARAMETRIC.names())
    return f"Any two combine as {STACKED} (or {STACKED_SIGNED}){usage}."


def score(criterion: str, model: nn.Module, mask: Mask, ctx: ScoringContext | None = None) -> Scores:
    """Scores of ``criterion`` for every entry of ``mask`` (same keys and shapes, on the weights' device)."""
    ctx = ScoringContext() if ctx is None else ctx
    parsed = parse(criterion)
    if isinstance(parsed, Stack):
        return stacked(parsed.first, parsed.second, model, mask, ctx, signed=parsed.signed)
    key, arg = split_name(parsed)
    if arg is not None:
        return PARAMETRIC.get(key).build(arg)(model, mask, ctx)
    return CRITERIA.get(parsed)(model, mask, ctx)


def criterion_names() -> list[str]:
    """Every registered base name; any two of them (or stacked ones) combine as ``stacked(A,B)``."""
    return CRITERIA.names()


def is_data_aware(name: str) -> bool:
    """Whether ``name`` needs ``ScoringContext.batches`` (a stacked criterion does if either part does)."""
    parsed = parse(name)
    if isinstance(parsed, Stack):
        return is_data_aware(parsed.first) or is_data_aware(parsed.second)
    key, arg = split_name(parsed)
    if arg is not None:
        return PARAMETRIC.get(key).data_aware
    return parsed in DATA_AWARE


def is_normalised(name: str) -> bool:
    """Whether Stacked Scoring normalises the scores of ``name`` before using them as weights: those of
    SNIP and GraSP, also when a stack's second criterion is one of them."""
    parsed = parse(name)
    if isinstance(parsed, Stack):
        return is_normalised(parsed.second)
    return split_name(parsed)[0] in NORMALISED


def normalised(scores: Scores) -> Scores:
    """S / |Σ S| with the sum over every layer (in float64), each tensor in its own dtype; all zero: as is."""
    total = sum(float(s.detach().to(torch.float64).sum()) for s in scores.values())
    if total == 0:
        return dict(scores)
    return {n: (s.detach().to(torch.float64) / abs(total)).to(s.dtype) for n, s in scores.items()}


def stacked_weights(model: nn.Module, scores: Scores, signed: bool) -> dict[str, torch.Tensor]:
    """The weights B sees: A's scores (signed like the model's weights if ``signed``), in the weights' dtype."""
    params = prunable_parameters(model)
    out = {}
    for name, s in scores.items():
        w = params[name].detach()
        value = torch.sign(w) * s.abs().to(w.dtype) if signed else s.to(w.dtype)
        if not torch.isfinite(value).all():
            raise ValueError(
                f"scores for {name!r} do not fit the weights' dtype {w.dtype} (overflow): cannot use them as weights"
            )
        out[name] = value
    return out


def stacked(
    first: str, second: str, model: nn.Module, mask: Mask, ctx: ScoringContext, *, signed: bool = False
) -> Scores:
    """S_b = B(S_a) on a copy of the model (see the module docstring); ``signed``: ``stacked_signed``."""
    scores = score(first, model, mask, ctx)
    if signed:
        values = stacked_weights(model, scores, signed=is_data_aware(second))
    else:
        values = stacked_weights(model, normalised(scores) if is_normalised(first) else scores, signed=False)
    probe = copy.deepcopy(model)
    with torch.no_grad():
        for param in probe.parameters():
            param.grad = None
        for name, param in prunable_parameters(probe).items():
            if name in values:
                param.copy_(values[name])
    return score(second, probe, mask, ctx)
