"""Methods: procedures that compose criterion, selection, schedule and training into tickets.

``METHODS`` maps a method name to ``fn(job) -> None``; the function records each level through the job
(``context``). Every module of this package registers its methods on import: a new method is one new file.
"""

from __future__ import annotations

import importlib
import pkgutil

from ticketlab.methods.context import Job
from ticketlab.methods.controls import CONTROLS
from ticketlab.methods.registry import (
    METHODS,
    OPTIONS,
    Resolved,
    check_method,
    check_on_model,
    options_of,
    resolve_criterion,
    resolve_method,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "CONTROLS",
    "METHODS",
    "OPTIONS",
    "Job",
    "Resolved",
    "check_method",
    "check_on_model",
    "options_of",
    "resolve_criterion",
    "resolve_method",
]
