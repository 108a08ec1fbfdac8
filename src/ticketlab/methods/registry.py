"""The method registry and what every method resolves from its spec: which method runs, with which
criterion, in how many scoring rounds, with which options. ``METHODS`` maps a name to ``fn(job) -> None``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from torch import nn

from ticketlab.config.spec import UPFRONT, ExperimentSpec, MethodSpec
from ticketlab.criteria import CRITERIA, parse
from ticketlab.registry import Registry, split_name

METHODS: Registry[Callable[..., None]] = Registry("method")
# A method with options of its own registers a frozen pydantic model for them under the same name; the
# spec validates ``method.options`` against it, so a typo names the field and the allowed ones.
OPTIONS: Registry[type[BaseModel]] = Registry("method options")
# A method whose criterion, when the spec names none, is not magnitude registers it here (supermask:
# large_final_same_sign); None: the method selects its masks by no criterion (tom learns them).
DEFAULT_CRITERIA: dict[str, str | None] = {}
# A method whose spec can only be checked against the built model registers ``fn(spec, model)`` here; it
# runs before a run writes anything and raises ``ValueError("<field>: ...")`` (edge_popup: its shares per
# prunable layer, its criterion with ``score_init: criterion``).
MODEL_CHECKS: dict[str, Callable[[ExperimentSpec, nn.Module], None]] = {}


def check_on_model(spec: ExperimentSpec, model: nn.Module) -> None:
    """The method's :data:`MODEL_CHECKS` entry, if it has one."""
    key, _ = split_name(spec.method.name)
    if key in MODEL_CHECKS:
        MODEL_CHECKS[key](spec, model)


def resolve_criterion(method: MethodSpec) -> str | None:
    """The criterion a method prunes with: explicit, the method's own name for the criterion shorthand
    (``--method snip``), the method's registered default (``DEFAULT_CRITERIA``), else magnitude for
    iterative methods. None: the method uses no criterion."""
    if method.criterion:
        return method.criterion
    key, _ = split_name(method.name)
    if key in METHODS:
        if key in UPFRONT:
            raise ValueError(f"method {method.name!r} needs a criterion (e.g. criterion: snip)")
        return DEFAULT_CRITERIA.get(key, "magnitude")
    return method.name


SYNFLOW_ROUNDS = 100  # Tanaka et al. 2020 prune with SynFlow in 100 rounds at initialisation


def resolve_method(method: MethodSpec) -> tuple[str, int]:
    """(registered method key, scoring rounds). ``rounds`` unset is the method's default: one round, except
    for the SynFlow shorthand, whose paper prunes in 100 rounds at initialisation (multi-shot); an explicit
    ``rounds: 1`` is one-shot SynFlow. A bare criterion is one-shot in one round, multi-shot in more."""
    key, _ = split_name(method.name)
    if key in METHODS:
        return key, method.rounds or 1
    if method.rounds is None and key == "synflow":
        return "multishot", SYNFLOW_ROUNDS
    rounds = method.rounds or 1
    return ("multishot" if rounds > 1 else "oneshot"), rounds


@dataclass(frozen=True)
class Resolved:
    """What a method spec runs as, recorded in every level (``metrics.json``): the registered method, the
    criterion it prunes with (None: none) and its scoring rounds."""

    method_key: str
    criterion: str | None
    rounds: int

    @classmethod
    def of(cls, method: MethodSpec) -> Resolved:
        key, rounds = resolve_method(method)
        return cls(key, resolve_criterion(method), rounds)


def options_of(method: MethodSpec) -> Any:
    """The validated options object of this method (its pydantic model), or None."""
    key, _ = split_name(method.name)
    return OPTIONS.get(key).model_validate(method.options) if key in OPTIONS else None


def check_method(method: MethodSpec) -> None:
    """The method's name, criterion and options against the registries; ``ValueError`` names the field."""
    key, _ = split_name(method.name)
    if not (key in METHODS or key in CRITERIA or key.startswith("stacked")):  # stacked(...), stacked_signed(...)
        raise ValueError(
            f"method: {METHODS.unknown_message(method.name)[:-1]}, or a criterion: {', '.join(CRITERIA.names())}"
        )
    for name in filter(None, (method.criterion, None if key in METHODS else method.name)):
        try:
            parse(name)
        except ValueError as exc:
            raise ValueError(f"method.criterion: {exc}") from None
    if key in OPTIONS:
        try:
            OPTIONS.get(key).model_validate(method.options)
        except ValidationError as exc:
            problems = "; ".join(
                f"method.options.{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                if e["loc"]
                else f"method.options: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            raise ValueError(problems) from None
    elif method.options:
        raise ValueError(f"method.options: method {method.name!r} takes no options, got {sorted(method.options)}")
