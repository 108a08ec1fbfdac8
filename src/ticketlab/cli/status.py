"""``ticketlab status DIR``: what a run folder holds (finished, in progress with owner, failed with reason,
interrupted, damaged files), from its small files and the tensor files' checksums."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("status")(status)


def status(
    folder: Annotated[Path, typer.Argument(help="Run folder (a sweep's 'out').")],
    all_runs: Annotated[bool, typer.Option("--all", help="List finished runs too.")] = False,
    verify: Annotated[bool, typer.Option(help="Check every tensor file's checksum (reads each file once).")] = True,
) -> None:
    """Summarise a run folder; exit code 1 when a file is damaged."""
    from rich.table import Table

    from ticketlab.cli.common import clean_errors, console, fmt
    from ticketlab.sweep.status import folder_status

    with clean_errors():
        found = folder_status(folder, verify=verify)
    states = ("finished", "in progress", "failed", "interrupted")
    counts = ", ".join(f"{found.count(s)} {s}" for s in states)
    shared = "".join(f", {n} {kind}" for kind, n in found.shared.items())
    console.print(f"{folder}: {len(found.runs)} runs: {counts}{shared}", highlight=False)
    shown = [r for r in found.runs if all_runs or r.state != "finished" or r.damaged]
    if shown:
        table = Table()
        for col in ("run", "state", "levels", "detail"):
            table.add_column(col)
        for r in shown:
            levels = f"{r.levels}/{fmt(r.expected)}"
            table.add_row(r.run_id, r.state, levels, r.detail + (f" [{len(r.damaged)} damaged]" if r.damaged else ""))
        console.print(table)
    if found.damaged:
        console.print(
            f"[red]{len(found.damaged)} damaged files[/red] (delete the level folders holding them and run the sweep again to recompute those levels):"
        )
        for line in found.damaged:
            console.print(f"  {line}", highlight=False, markup=False)
        raise typer.Exit(1)
