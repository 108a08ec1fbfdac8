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
    name: Annotated[str | None, typer.Argument(help="A method: show its options in full.")] = None,
) -> None:
    """List the methods of --method and the options each takes as -o key=value (type, default, meaning)."""
    from ticketlab.cli.common import clean_errors, console
    from ticketlab.methods import METHODS, OPTIONS

    with clean_errors():
        if name is not None:
            key = name.strip().lower()
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
    console.print("ticketlab methods NAME: the options of one method, with their types, defaults and meaning")


def summary(key: str, width: int = 110) -> str:
    """The first sentence of the method function's docstring, else of its module's (shortened to ``width``)."""
    from ticketlab.methods import METHODS

    fn = METHODS.get(key)
    doc = fn.__doc__ or sys.modules[fn.__module__].__doc__ or "-"
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
