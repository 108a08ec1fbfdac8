"""``ticketlab data list``: which datasets are available, and where."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(no_args_is_help=True, help="Datasets: where they are found.")
    data_app.command("list")(data_list)
    app.add_typer(data_app, name="data")


def data_list() -> None:
    """Show which datasets are available, and where."""
    from ticketlab.cli.common import print_table
    from ticketlab.data import dataset_status

    print_table(
        "datasets",
        ("dataset", "found", "where", "source"),
        [
            [row["name"], "yes" if row["found"] else "no", str(row.get("where") or "-"), str(row.get("source") or "-")]
            for row in dataset_status()
        ],
    )
