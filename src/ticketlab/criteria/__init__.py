"""Scoring criteria: (model, mask, context) -> one score tensor per masked weight, higher = keep.

``score("snip", model, mask, ctx)`` looks a name up in :data:`CRITERIA`; ``"stacked(A, B)"`` composes any
two names (nesting allowed). Every criterion scores the masked network from a clean state and leaves the
model's weights, buffers, gradients and train/eval mode exactly as they were (SPEC "Scoring criteria").
"""

from __future__ import annotations

from torch import nn

from ticketlab.criteria import grasp as _grasp  # noqa: F401  (registers)
from ticketlab.criteria import magnitude as _magnitude  # noqa: F401
from ticketlab.criteria import snip as _snip  # noqa: F401
from ticketlab.criteria import supermask as _supermask  # noqa: F401
from ticketlab.criteria import synflow as _synflow  # noqa: F401
from ticketlab.criteria.base import CRITERIA, DATA_AWARE, Criterion, Scores, ScoringContext
from ticketlab.criteria.stacked import stacked
from ticketlab.masks import Mask
from ticketlab.registry import UnknownNameError

__all__ = ["CRITERIA", "STACKED", "Criterion", "ScoringContext", "criterion_names", "is_data_aware", "parse", "score"]

STACKED = "stacked(A,B)"


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
    text = name.strip().lower()
    if text.startswith("stacked"):
        inner = text[len("stacked") :].strip()
        if not (inner.startswith("(") and inner.endswith(")")):
            raise ValueError(f"malformed criterion {name!r}: write stacked(A, B)")
        inner = inner[1:-1]
        parts = [p.strip() for p in _split_top_level(inner, name)]
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"malformed criterion {name!r}: stacked takes exactly two criteria, stacked(A, B)")
        for part in parts:
            parse(part)
        return parts[0], parts[1]
    if "(" in text or ")" in text or "," in text:
        raise ValueError(f"malformed criterion {name!r}: only stacked(A, B) takes arguments")
    if text not in CRITERIA:
        raise UnknownNameError(f"{CRITERIA.unknown_message(name)} Any two combine as {STACKED}.")
    return text


def score(criterion: str, model: nn.Module, mask: Mask, ctx: ScoringContext | None = None) -> Scores:
    """Scores of ``criterion`` for every entry of ``mask`` (same keys and shapes, on the weights' device)."""
    ctx = ScoringContext() if ctx is None else ctx
    parsed = parse(criterion)
    if isinstance(parsed, tuple):
        return stacked(parsed[0], parsed[1], model, mask, ctx)
    return CRITERIA.get(parsed)(model, mask, ctx)


def criterion_names() -> list[str]:
    """Every registered base name; any two of them (or stacked ones) combine as ``stacked(A,B)``."""
    return CRITERIA.names()


def is_data_aware(name: str) -> bool:
    """Whether ``name`` needs ``ScoringContext.batches`` (a stacked criterion does if either part does)."""
    parsed = parse(name)
    if isinstance(parsed, tuple):
        return is_data_aware(parsed[0]) or is_data_aware(parsed[1])
    return parsed in DATA_AWARE
