"""``ticketlab sweep sweep.yaml``: run a grid of specs with local worker processes or Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)


def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="YAML sweep: 'base' spec + 'grid' of dotted field paths to value lists.")],
    executor: Annotated[Optional[str], typer.Option(help="local (worker processes) or ray (default: the file's, else local).")] = None,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address, e.g. auto or 10.0.0.1:6379 (default: a local instance).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Local worker processes (default: cores // threads per worker).")] = None,
    threads_per_worker: Annotated[Optional[int], typer.Option(help="torch threads per worker / CPUs per Ray task.")] = None,
    batch: Annotated[Optional[int], typer.Option(help="Runs per worker task, trained stacked (default: stacked on CUDA and for MLPs on OpenBLAS CPUs, else 1 on CPU).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Root folder of run directories (default: the file's, else runs).")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or auto (default: the file's, else cpu).")] = None,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Write TensorBoard curves under each run directory.")] = False,
    data_root: Annotated[Optional[Path], typer.Option(help="Folder holding the dataset files (else the usual lookup).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a base field: key=value, dotted path, YAML value (repeatable), e.g. --set recipe.steps=1ep.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the grid's runs and whether they are finished; run nothing.")] = False,
) -> None:
    """Expand the grid and run every unfinished point; a finished sweep does nothing and says so."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from ticketlab.cli.common import clean_errors, console, err
    from ticketlab.store import RunDir
    from ticketlab.sweep import grid_points, load_sweep, run_sweep, set_base
    with clean_errors():
        spec = set_base(load_sweep(sweep_file), set_ or ())
        overrides = {
            "executor": executor, "address": address, "workers": workers, "threads_per_worker": threads_per_worker,
            "batch": batch, "out": None if out is None else str(out), "device": device, "tensorboard": tensorboard or None,
        }
        spec = spec.model_validate({**spec.model_dump(), **{k: v for k, v in overrides.items() if v is not None}})
        if dry_run:
            points = grid_points(spec)
            table = Table(title=f"{sweep_file.name}: {len(points)} runs")
            for col in ("run id", *spec.grid, "finished"):
                table.add_column(col)
            for point, s in points:
                table.add_row(s.run_id(), *(json.dumps(v) for v in point.values()), "yes" if RunDir(Path(spec.out) / s.run_id()).finished else "no")
            console.print(table)
            return
        progress = Progress(
            TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), console=console, transient=True,
        )
        state = {"failed": 0}
        with progress:
            task = progress.add_task("sweep", total=None, info="")

            def on_start(pending: int, total: int) -> None:
                progress.update(task, total=pending, info=f"{total - pending} of {total} already finished")

            def on_done(outcome) -> None:
                if not outcome.ok:
                    state["failed"] += 1
                    err.print(f"[red]failed[/red] {outcome.run_id} {outcome.spec}: {outcome.error}", highlight=False)
                progress.update(task, advance=1, info=f"{state['failed']} failed" if state["failed"] else "")

            report = run_sweep(spec, on_start=on_start, on_done=on_done, data_root=data_root)
    if not report.outcomes:
        console.print(f"nothing to do: all {report.total} runs of {sweep_file.name} are finished ({spec.out})")
        return
    ok = len(report.outcomes) - len(report.failed)
    console.print(
        f"{ok} runs finished, {len(report.failed)} failed, {report.skipped} already finished before\n"
        f"results: ticketlab results {spec.out}"
    )
    if report.failed:
        raise typer.Exit(1)
