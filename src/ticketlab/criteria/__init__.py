"""Scoring criteria: (model, mask, context) -> one score tensor per masked weight, higher = keep.

``score("snip", model, mask, ctx)`` looks a name up in :data:`CRITERIA`; ``"stacked(A, B)"`` composes any
two names (nesting allowed). Every criterion scores the masked network from a clean state and leaves the
model's weights, buffers, gradients and train/eval mode exactly as they were (SPEC "Scoring criteria").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ticketlab.criteria import grasp as _grasp  # noqa: F401  (registers)
from ticketlab.criteria import magnitude as _magnitude  # noqa: F401
from ticketlab.criteria import snip as _snip  # noqa: F401
from ticketlab.criteria import supermask as _supermask  # noqa: F401
from ticketlab.criteria import synflow as _synflow  # noqa: F401
from ticketlab.criteria.base import CRITERIA, DATA_AWARE, Criterion, Scores, ScoringContext
from ticketlab.criteria.stacked import stacked
from ticketlab.masks import Mask
from ticketlab.registry import Registry, UnknownNameError, split_name

__all__ = [
    "CRITERIA", "PARAMETRIC", "STACKED", "Criterion", "Parametric", "ScoringContext", "criterion_names",
    "is_data_aware", "parse", "score",
]  # fmt: skip

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


# Parametric criteria register last: their modules import this package's names.
from ticketlab.meta import criterion as _meta  # noqa: E402,F401  (registers meta:<path>)
