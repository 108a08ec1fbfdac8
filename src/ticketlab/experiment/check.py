"""The names of a spec checked against the registries, where a run starts (the spec layer below checks
types and values only). Each problem is one ``ValueError`` whose message starts with the field."""

from __future__ import annotations

import difflib

from pydantic import ValidationError

from ticketlab.config.problems import problem
from ticketlab.config.spec import ExperimentSpec, MethodSpec
from ticketlab.criteria.saw import is_saw, saw_criterion
from ticketlab.data import DATASETS
from ticketlab.hardware import adam_choice
from ticketlab.methods import CONTROLS, OPTIONS, check_method
from ticketlab.models import INITS, MODELS
from ticketlab.registry import split_name
from ticketlab.training import sparse


def check_spec(spec: ExperimentSpec) -> ExperimentSpec:
    """``spec`` itself if every name in it is registered, else ``ValueError("<field>: ...")``."""
    for field, registry, name in (("model", MODELS, spec.model), ("dataset", DATASETS, spec.dataset)):
        if name not in registry:
            raise ValueError(f"{field}: {registry.unknown_message(name)}")
    if is_saw(spec.init):
        try:
            saw_criterion(spec.init)
        except ValueError as exc:
            raise ValueError(f"init: {exc}") from None
    elif spec.init not in INITS:
        raise ValueError(f"init: {INITS.unknown_message(spec.init)}")
    for name in spec.controls:
        if name not in CONTROLS:
            raise ValueError(f"controls: {CONTROLS.unknown_message(name)}")
    _check_options(spec.method)
    check_method(spec.method)
    sparse.mode()  # a bad $TICKETLAB_SPARSE_TRAINING fails here, before a run writes anything
    adam_choice.mode()  # and a bad $TICKETLAB_COMPACT_ADAM
    return spec


def _check_options(method: MethodSpec) -> None:
    """``method.options`` against the method's options model: an unknown option lists the allowed ones,
    each problem one ``method.options.<name>: ...`` (joined by '; ')."""
    key, _ = split_name(method.name)
    if key not in OPTIONS or not method.options:
        return
    model = OPTIONS.get(key)
    try:
        model.model_validate(method.options)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            if error["type"] == "extra_forbidden":
                allowed = ", ".join(model.model_fields)
                close = difflib.get_close_matches(str(error["loc"][-1]), list(model.model_fields), n=1, cutoff=0.6)
                guess = f" Did you mean {close[0]!r}?" if close else ""
                lines.append(
                    f"method.options.{error['loc'][-1]}: method {key} has no option {error['loc'][-1]!r}.{guess} Allowed: {allowed}"
                )
            else:
                lines.append(
                    f"method.options.{problem(error)}" if error["loc"] else f"method.options: {problem(error)}"
                )
        raise ValueError("; ".join(lines)) from None
