"""Methods: procedures that compose criterion, selection, schedule and training into tickets.

``METHODS`` maps a method name to ``fn(job) -> None``; the function records each level through the job.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from pydantic import BaseModel

from ticketlab.methods.controls import CONTROLS
from ticketlab.methods.job import Job, pruning_batches
from ticketlab.registry import Registry, split_name
from ticketlab.spec import UPFRONT, MethodSpec

METHODS: Registry[Callable[[Job], None]] = Registry("method")
# A method with options of its own registers a frozen pydantic model for them under the same name; the
# spec validates ``method.options`` against it, so a typo names the field and the allowed ones.
OPTIONS: Registry[type[BaseModel]] = Registry("method options")


def resolve_criterion(method: MethodSpec) -> str:
    """The criterion a method prunes with: explicit, the method's own name for the criterion shorthand
    (``--method snip``), else magnitude for iterative methods."""
    if method.criterion:
        return method.criterion
    key, _ = split_name(method.name)
    if key in METHODS:
        if key in UPFRONT:
            raise ValueError(f"method {method.name!r} needs a criterion (e.g. criterion: snip)")
        return "magnitude"
    return method.name


def resolve_method(method: MethodSpec) -> tuple[str, int]:
    """(registered method key, scoring rounds). A bare criterion is one-shot, except SynFlow, whose
    paper prunes in 100 rounds at initialisation (multi-shot) unless ``rounds`` says otherwise."""
    key, _ = split_name(method.name)
    if key in METHODS:
        return key, method.rounds
    if key == "synflow" and method.rounds == 1:
        return "multishot", 100
    return ("multishot" if method.rounds > 1 else "oneshot"), method.rounds


# Every module of this package registers its methods on import: a new method is one new file.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["CONTROLS", "METHODS", "OPTIONS", "Job", "pruning_batches", "resolve_criterion", "resolve_method"]
