"""Settings in a criterion's name: ``prospr:steps=5:lr=0.05:first_order`` (``key=value`` or a bare switch,
separated by colons, so the name also fits inside ``stacked(A, B)``, which splits at commas).

A criterion with settings registers its plain name (the paper's defaults) in ``CRITERIA`` and the same key
in ``PARAMETRIC`` (see :func:`register_settings`), whose ``check`` rejects a bad setting when the name is
parsed, before any run starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ticketlab.criteria.base import Criterion, Scores, ScoringContext
from ticketlab.criteria.scoring import PARAMETRIC, Parametric
from ticketlab.masks import Mask


def parse_settings(name: str, text: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``"steps=5:first_order"`` -> the defaults with ``steps`` = 5 and ``first_order`` = True.

    Every key must be one of ``defaults``; a value takes the type of its default (a bare key is a
    switch, allowed for boolean defaults only). Unknown keys and bad values raise ``ValueError``.
    """
    out = dict(defaults)
    for part in text.split(":"):
        key, sep, value = (s.strip() for s in part.partition("="))
        key = key.lower()
        if key not in defaults:
            raise ValueError(f"criterion {name!r}: unknown setting {key!r}; settings: {', '.join(defaults)}")
        default = defaults[key]
        if isinstance(default, bool):
            if sep and value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"criterion {name!r}: {key} is a switch (write {key} or {key}=false)")
            out[key] = not sep or value.lower() in ("true", "1")
            continue
        if not sep:
            raise ValueError(f"criterion {name!r}: write {key}=<{type(default).__name__}>")
        try:
            out[key] = type(default)(value)
        except ValueError:
            raise ValueError(f"criterion {name!r}: {key}={value!r} is not a {type(default).__name__}") from None
    return out


def register_settings(
    name: str,
    score: Callable[[nn.Module, Mask, ScoringContext, Mapping[str, Any]], Scores],
    defaults: Mapping[str, Any],
    data_aware: bool,
    check: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Register ``name:<settings>`` in ``PARAMETRIC``: ``score(model, mask, ctx, settings)``; ``check``
    validates the parsed settings' values (ranges) and raises ``ValueError``."""

    def settings(arg: str) -> dict[str, Any]:
        parsed = parse_settings(name, arg, defaults)
        if check is not None:
            check(parsed)
        return parsed

    def build(arg: str) -> Criterion:
        parsed = settings(arg)

        def criterion(model: nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
            return score(model, mask, ctx, parsed)

        return criterion

    usage = f"{name}:" + ":".join(k if isinstance(v, bool) else f"{k}=<{v}>" for k, v in defaults.items())
    PARAMETRIC.register(name)(Parametric(build, data_aware=data_aware, usage=usage, check=settings))
