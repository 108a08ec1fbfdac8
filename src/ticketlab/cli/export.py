"""``ticketlab export RUN --level N --format {state_dict,onnx,sparse} --out FILE``: a ticket out of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

_FLAGS = {"run": "RUN", "level": "--level", "control": "--control", "format": "--format", "out": "--out"}


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    run: Annotated[Path, typer.Argument(help="Run directory (runs/<run id>).")],
    level: Annotated[int | None, typer.Option(help="Level to export (0 = the dense network).")] = None,
    control: Annotated[
        str | None, typer.Option(help="Export this control of the level instead of its ticket ('ticket': the ticket).")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="state_dict (dense, zeros baked in; .safetensors or .pt), onnx (checked with onnxruntime) or sparse (CSR layers; .safetensors).",
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="File to write.")] = None,
    data_root: Annotated[
        Path | None,
        typer.Option(help="Dataset folder, only for runs without data.json (written before it existed)."),
    ] = None,
) -> None:
    """Write one level of a run (its final weights, mask applied) as a state dict, an ONNX file or a sparse module."""
    from ticketlab.cli.common import CliError, clean_errors, console
    from ticketlab.store import RunDir
    from ticketlab.tickets import FORMATS, TicketError, export_ticket, load_ticket
    from ticketlab.tickets.export import check_target
    from ticketlab.tickets.load import read_spec

    with clean_errors():
        try:
            if fmt is None:
                raise TicketError("format", f"give the format: {', '.join(FORMATS)}")
            if out is None:
                raise TicketError("out", "give the file to write")
            check_target(fmt, out)
            if level is None:
                read_spec(RunDir(run))  # a folder that is no run is the first thing to say
                finished = ", ".join(map(str, RunDir(run).levels())) or "none"
                raise TicketError("level", f"give the level to export (finished levels of {run}: {finished})")
            ticket = load_ticket(run, level, control, data_root=data_root)
            done = export_ticket(ticket, fmt, out)
        except TicketError as exc:
            raise CliError(f"{_FLAGS.get(exc.field, exc.field)}: {exc.message}") from None
    check = "" if done.max_abs_diff is None else f"; max |difference| to PyTorch {done.max_abs_diff:.2g}"
    console.print(
        f"wrote {done.path} ({done.format}, {done.bytes:,} bytes): level {ticket.level}"
        f"{f' [{ticket.control}]' if ticket.control else ''}, density {ticket.density:.4g}, "
        f"test acc {ticket.metrics.get('test_acc')}{check}",
        highlight=False,
        markup=False,
    )
