"""``ticketlab models``: every model the registry holds (a plugin's too), with what it is and its other
spellings."""

from __future__ import annotations

import inspect
import re

import typer


def register(app: typer.Typer) -> None:
    app.command("models")(models)


def models() -> None:
    """List the models: name (as --model and specs write it), what it is, other spellings."""
    from rich.table import Table

    from ticketlab.cli.common import console

    table = Table(title="models (--model NAME; mlp takes its layer sizes: mlp:784-300-100-10)")
    for col in ("model", "what it is", "also written"):
        table.add_column(col)
    for name, text, aliases in model_rows():
        table.add_row(name, text, ", ".join(aliases))
    console.print(table)


def model_rows() -> list[tuple[str, str, list[str]]]:
    """(name, the first paragraph of the builder's docstring, other spellings) per registered model."""
    from ticketlab.models import MODELS

    rows = []
    for name in MODELS.names():
        doc = inspect.getdoc(MODELS.get(name)) or ""
        text = " ".join(doc.split("\n\n")[0].split()).replace("``", "")
        rows.append((name, re.sub(r"\s+", " ", text), MODELS.aliases(name)))
    return rows
