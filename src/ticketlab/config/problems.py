"""Validation errors said in a person's terms: one line per problem, ``<field>: <what is wrong>``; a field
that does not exist lists the allowed ones (with the closest as a guess) and says where a field of that
name does belong (``K`` at the top of a spec belongs under ``method``)."""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ValidationError

# keys a model reads but does not keep (a before-validator turns them into a field)
INPUT_ONLY = {"ExperimentSpec": ("density", "sparsity")}


def field_problems(exc: ValidationError, prefix: str = "", root: type[BaseModel] | None = None) -> str:
    """One line per problem of ``exc``: ``<prefix><field>: <message>``. ``root`` is the model validated (to
    name the allowed fields where one is unknown)."""
    return "\n".join(prefix + problem(error, root) for error in exc.errors())


def problem(error: Any, root: type[BaseModel] | None = None) -> str:
    """``<field>: <message>`` for one pydantic error (a model-level error: its message alone)."""
    loc = [str(p) for p in error["loc"]]
    message = error["msg"].removeprefix("Value error, ")
    if loc and message.startswith(f"{loc[-1]}: "):  # a validator that names its field already
        message = message[len(loc[-1]) + 2 :]
    if error["type"] == "extra_forbidden" and root is not None:
        message = unknown_field(root, loc)
    named = re.match(r"(\w+): ", message)
    model = _model_at(root, loc) if root is not None else None
    if named and model is not None and named.group(1) in model.model_fields:  # a model-level check naming a field
        loc, message = [*loc, named.group(1)], message[named.end() :]
    return f"{'.'.join(loc)}: {message}" if loc else message


def unknown_field(root: type[BaseModel], loc: list[str]) -> str:
    """The message for field ``loc`` that ``root`` (walked down ``loc``) does not have."""
    model = _model_at(root, loc[:-1])
    if model is None:
        return "unknown field"
    name = loc[-1]
    allowed = [f.alias or n for n, f in model.model_fields.items()]
    text = "unknown field"
    elsewhere = [".".join(path) for path in _paths_of(model, name)]
    if elsewhere:
        parents = [p.rpartition(".")[0] for p in elsewhere]
        text += f"; {name} belongs under {' or '.join(parents)}"
        text += f" ({parents[0]}: {{{name}: ...}})" if len(parents) == 1 else ""
    else:
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        text += f"; did you mean {close[0]!r}" if close else ""
    return f"{text}. Allowed here: {', '.join(allowed + list(INPUT_ONLY.get(model.__name__, ())))}"


def _submodels(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    elif isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            yield from _submodels(arg)


def _model_at(root: type[BaseModel], path: list[str]) -> type[BaseModel] | None:
    model = root
    for part in path:
        field = model.model_fields.get(part)
        found = next(_submodels(field.annotation), None) if field is not None else None
        if found is None:
            return None
        model = found
    return model


def _paths_of(model: type[BaseModel], name: str) -> list[list[str]]:
    """Where, below ``model``, a field called ``name`` exists (one level of nesting)."""
    return [
        [field, name]
        for field, info in model.model_fields.items()
        for sub in _submodels(info.annotation)
        if name in sub.model_fields
    ]
