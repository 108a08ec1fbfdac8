"""``ticketlab methods [NAME]``: the methods ``--method`` takes and the options ``-o key=value`` of each,
read from the registries (``methods.METHODS``, and the pydantic models in ``methods.OPTIONS``: each field's
type, default and description), so a new method is listed without touching the CLI."""

from __future__ import annotations

import re
import sys
import types
import typing
from typing import Annotated, Any

import typer
from rich.table import Table


def register(app: typer.Typer) -> None:
    app.command("methods")(methods)


def methods(
    name: Annotated[
        str | None, typer.Argument(help="A method (its options in full) or a criterion (its settings).")
    ] = None,
) -> None:
    """List the methods of --method and the options each takes as -o key=value (type, default, meaning)."""
    from ticketlab.cli.common import clean_errors, console
    from ticketlab.methods import METHODS, OPTIONS

    with clean_errors():
        if name is not None:
            key = name.strip().lower()
            criterion = criterion_key(key) if key not in METHODS else None
            if criterion is not None:
                show_criterion(criterion)
                return
            METHODS.get(key)  # an unknown name: one line with the close matches
            console.print(f"[bold]{key}[/bold]: {summary(key)}", highlight=False)
            if key not in OPTIONS:
                console.print("takes no -o options")
                return
            console.print(options_table(key))
            return
    table = Table(title="methods (--method NAME; a criterion name alone prunes once at initialisation)")
    for col in ("method", "what", "options (-o key=value)"):
        table.add_column(col)
    for key in METHODS.names():
        fields = ", ".join(OPTIONS.get(key).model_fields) if key in OPTIONS else "-"
        table.add_row(key, summary(key), fields)
    console.print(table)
    console.print(criteria_table())
    console.print(
        "ticketlab methods NAME: the options of one method (or the settings of one criterion), with their types, "
        "defaults and meaning"
    )


def criterion_key(name: str) -> str | None:
    """The registered criterion ``name`` is (``prospr`` or ``prospr:steps=5``), else None."""
    from ticketlab.criteria import CRITERIA
    from ticketlab.registry import split_name

    key = split_name(name)[0]
    return key if key in CRITERIA else None


def criterion_summary(key: str, width: int = 110) -> str:
    """The first sentence of the criterion's docstring, else of its module's."""
    from ticketlab.criteria import CRITERIA

    fn = CRITERIA.get(key)
    return first_sentence(fn.__doc__ or sys.modules[fn.__module__].__doc__ or "-", width)


def criterion_settings(key: str) -> str:
    from ticketlab.criteria.scoring import PARAMETRIC

    return PARAMETRIC.get(key).usage if key in PARAMETRIC else "-"


def criteria_table() -> Table:
    from ticketlab.criteria import CRITERIA

    table = Table(
        title="criteria (--method NAME: one shot at initialisation; --criterion NAME: the prune step of a method)"
    )
    for col in ("criterion", "what", "settings (NAME:key=value)"):
        table.add_column(col)
    for key in CRITERIA.names():
        table.add_row(key, criterion_summary(key), criterion_settings(key))
    return table


def show_criterion(key: str) -> None:
    from ticketlab.cli.common import console

    console.print(f"[bold]{key}[/bold] (criterion): {criterion_summary(key, width=400)}", highlight=False)
    console.print(
        f"--method {key}: scores the network at initialisation once and prunes to each --density"
        + (" (100 rounds for synflow)" if key == "synflow" else "")
        + f"; --method multishot --criterion {key} --rounds R: R rounds; --method lottery --criterion {key}: "
        "the prune step of iterative pruning.",
        highlight=False,
    )
    usage = criterion_settings(key)
    console.print(f"settings: {usage}" if usage != "-" else "takes no settings", highlight=False)


def summary(key: str, width: int = 110) -> str:
    """The first sentence of the method function's docstring, else of its module's (shortened to ``width``)."""
    from ticketlab.methods import METHODS

    fn = METHODS.get(key)
    return first_sentence(fn.__doc__ or sys.modules[fn.__module__].__doc__ or "-", width)


def first_sentence(doc: str, width: int) -> str:
    """The first sentence of ``doc``'s first paragraph, shortened to ``width``."""
    text = " ".join(doc.strip().split("\n\n")[0].split())
    # a sentence ends at ". " - not at "et al. " or "e.g. "
    end = re.search(r"(?<!\bal)(?<!e\.g)(?<!i\.e)\.(\s|$)", text)
    text = text[: end.start()] if end else text
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def options_table(key: str) -> Table:
    from ticketlab.methods import OPTIONS

    model = OPTIONS.get(key)
    table = Table(title=f"-o options of {key}")
    for col in ("option", "type", "default", "meaning"):
        table.add_column(col)
    for field, info in model.model_fields.items():
        default = info.get_default(call_default_factory=True)
        table.add_row(
            field, type_name(info.annotation), "-" if default is None else str(default), info.description or "-"
        )
    return table


def type_name(annotation: Any) -> str:
    """A field's type as a user writes its value: ``exponential|linear``, ``duration (5ep, 200it)``, ``int``."""
    from ticketlab.config.duration import Duration

    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        parts = [type_name(a) for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(parts)
    if annotation is Duration:
        return "duration (5ep, 200it)"
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(annotation) if a is not Ellipsis)
        return f"list of {args}" if origin in (list, tuple) else str(annotation)
    return getattr(annotation, "__name__", str(annotation))
