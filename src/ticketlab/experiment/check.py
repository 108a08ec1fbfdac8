"""The names of a spec checked against the registries, where a run starts (the spec layer below checks
types and values only). Each problem is one ``ValueError`` whose message starts with the field."""

from __future__ import annotations

from ticketlab.config.spec import ExperimentSpec
from ticketlab.criteria.saw import is_saw, saw_criterion
from ticketlab.data import DATASETS
from ticketlab.methods import CONTROLS, check_method
from ticketlab.models import INITS, MODELS
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
    check_method(spec.method)
    sparse.mode()  # a bad $TICKETLAB_SPARSE_TRAINING fails here, before a run writes anything
    return spec
