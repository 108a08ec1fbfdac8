"""Criterion names and scoring: ``parse`` checks a name (``snip``, ``meta:<path>``, ``stacked(A, B)``, nested),
``score`` computes it, ``is_data_aware`` says whether it needs pruning batches.

Stacked Scoring (000 §3.3, algorithm 1): S_B = B(S_A), B applied to the weights replaced by A's scores.
The thesis "temporarily replace[s] the model weights with the intermediate scores"; here B runs on a copy, so
the model is never written to. For a data-aware B (whose loss depends on the weights' signs) the copy's
weights are |S_A| carrying the sign of the original weight, sign(w)·|S_A|; for a data-free B they are S_A as
it is. No rescaling (000 §3.3 has none; the [−1, 1] scaling belongs to SaW, §3.4). Nesting works because A
and B are any criterion names, ``stacked(...)`` included.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ticketlab.criteria.base import CRITERIA, DATA_AWARE, Criterion, Scores, ScoringContext
from ticketlab.masks import Mask, prunable_parameters
from ticketlab.registry import Registry, UnknownNameError, split_name

STACKED = "stacked(A,B)"


@dataclass(frozen=True)
class Parametric:
    """A criterion whose name carries an argument after a colon, ``meta:<path>``: ``build(argument)`` gives
    the criterion. The argument keeps its case (it may be a path); it must not contain ``,()`` inside
    ``stacked(A, B)``."""

    build: Callable[[str], Criterion]
    data_aware: bool
    usage: str
    check: Callable[[str], None] | None = None  # validates the argument when the name is parsed (fail early)


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


def parse(name: str) -> str | tuple[str, str]:
    """``"snip"`` -> ``"snip"``; ``"stacked(A, B)"`` -> ``(A, B)`` (each part checked recursively).

    Unknown base names raise :class:`~ticketlab.registry.UnknownNameError` listing the allowed names; a
    malformed ``stacked`` raises ``ValueError``.
    """
    text = name.strip()
    if text.lower().startswith("stacked"):
        inner = text[len("stacked") :].strip()
        if not (inner.startswith("(") and inner.endswith(")")):
            raise ValueError(f"malformed criterion {name!r}: write stacked(A, B)")
        inner = inner[1:-1]
        parts = [p.strip() for p in _split_top_level(inner, name)]
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"malformed criterion {name!r}: stacked takes exactly two criteria, stacked(A, B)")
        for part in parts:
            parse(part)
        # names are case-insensitive, but a parametric argument (a path) keeps its case
        parts = [p if ":" in p else p.lower() for p in parts]
        return parts[0], parts[1]
    key, arg = split_name(text)
    if arg is not None:
        if key in PARAMETRIC:
            entry = PARAMETRIC.get(key)
            if not arg:
                raise ValueError(f"malformed criterion {name!r}: write {entry.usage}")
            if entry.check is not None:
                entry.check(arg)
            return f"{key}:{arg}"
        if key in CRITERIA:
            raise ValueError(f"malformed criterion {name!r}: {key!r} takes no argument")
        raise UnknownNameError(f"{CRITERIA.unknown_message(name)} {_combinations()}")
    text = text.lower()
    if "(" in text or ")" in text or "," in text:
        raise ValueError(f"malformed criterion {name!r}: only stacked(A, B) takes arguments")
    if text not in CRITERIA:
        raise UnknownNameError(f"{CRITERIA.unknown_message(name)} {_combinations()}")
    return text


def _combinations() -> str:
    usage = "".join(f"; {PARAMETRIC.get(k).usage}" for k in PARAMETRIC.names())
    return f"Any two combine as {STACKED}{usage}."


def score(criterion: str, model: nn.Module, mask: Mask, ctx: ScoringContext | None = None) -> Scores:
    """Scores of ``criterion`` for every entry of ``mask`` (same keys and shapes, on the weights' device)."""
    ctx = ScoringContext() if ctx is None else ctx
    parsed = parse(criterion)
    if isinstance(parsed, tuple):
        return stacked(parsed[0], parsed[1], model, mask, ctx)
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
    if isinstance(parsed, tuple):
        return is_data_aware(parsed[0]) or is_data_aware(parsed[1])
    key, arg = split_name(parsed)
    if arg is not None:
        return PARAMETRIC.get(key).data_aware
    return parsed in DATA_AWARE


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


def stacked(first: str, second: str, model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    values = stacked_weights(model, score(first, model, mask, ctx), signed=is_data_aware(second))
    probe = copy.deepcopy(model)
    with torch.no_grad():
        for param in probe.parameters():
            param.grad = None
        for name, param in prunable_parameters(probe).items():
            if name in values:
                param.copy_(values[name])
    return score(second, probe, mask, ctx)
