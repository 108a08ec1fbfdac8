"""``ticketlab sweep sweep.yaml``: run a grid of specs with local worker processes or Ray."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import ProgressColumn, Task
from rich.text import Text


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
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or auto (default: the file's, else auto).")] = None,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Write TensorBoard curves under each run directory.")] = False,
    data_root: Annotated[Optional[Path], typer.Option(help="Folder holding the dataset files (else the usual lookup).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a base field: key=value, dotted path, YAML value (repeatable), e.g. --set recipe.steps=1ep.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the grid's runs and whether they are finished; run nothing.")] = False,
) -> None:
    """Expand the grid and run every unfinished point; a finished sweep does nothing and says so."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from ticketlab.experiment.progress import clock

    from ticketlab.cli.common import CliError, clean_errors, console, err
    from ticketlab.store import RunDir
    from ticketlab.sweep import grid_points, load_sweep, run_sweep, set_base
    with clean_errors():
        spec = set_base(load_sweep(sweep_file), set_ or ())
        overrides = {
            "executor": executor, "address": address, "workers": workers, "threads_per_worker": threads_per_worker,
            "batch": batch, "out": None if out is None else str(out), "device": device, "tensorboard": tensorboard or None,
        }
        spec = spec.model_validate({**spec.model_dump(), **{k: v for k, v in overrides.items() if v is not None}})
        try:  # a bad grid value is a mistake in the file
            grid = grid_points(spec)
        except ValueError as exc:
            raise CliError(f"{sweep_file}: {exc}") from None
        if dry_run:
            points = grid
            table = Table(title=f"{sweep_file.name}: {len(points)} runs")
            for col in ("run id", *spec.grid, "finished"):
                table.add_column(col)
            for point, s in points:
                table.add_row(s.run_id(), *(json.dumps(v) for v in point.values()), "yes" if RunDir(Path(spec.out) / s.run_id()).finished else "no")
            console.print(table)
            return
        points = {s.run_id(): point for point, s in grid}  # to name each run by its grid values
        started = time.monotonic()
        state = {"failed": 0, "done": 0, "pending": 0}

        def clock_text() -> str:
            elapsed = time.monotonic() - started
            done, pending = state["done"], state["pending"]
            left = f", ~{clock(elapsed / done * (pending - done))} left" if done and pending else ""
            return f"{clock(elapsed)} elapsed{left}"

        progress = Progress(
            TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            _SweepClock(clock_text), console=console, transient=True,
        )
        try:
            with progress:
                task = progress.add_task("sweep", total=None, info="")

                def on_start(pending: int, total: int) -> None:
                    state["pending"] = pending
                    progress.update(task, total=pending, info=f"{total - pending} of {total} already finished")

                def on_done(outcome) -> None:
                    state["done"] += 1
                    point = " ".join(f"{k}={json.dumps(v)}" for k, v in points.get(outcome.run_id, {}).items())
                    head = f"run {state['done']}/{state['pending']} {outcome.run_id}"
                    if outcome.ok:
                        progress.console.print(f"{head} finished ({outcome.wall_time:.1f} s) {point} · {clock_text()}",
                                               markup=False, highlight=False, soft_wrap=True)
                    else:
                        state["failed"] += 1
                        err.print(f"{head} failed: {outcome.error} ({point})", style="red", markup=False,
                                  highlight=False, soft_wrap=True)
                    progress.update(task, advance=1, info=f"{state['failed']} failed" if state["failed"] else "")

                report = run_sweep(spec, on_start=on_start, on_done=on_done, data_root=data_root)
        except KeyboardInterrupt:
            err.print(
                f"interrupted after {state['done']} of {state['pending']} runs; run the same command again to resume "
                "(finished runs are skipped, an unfinished one resumes from its last finished level)",
                style="red", markup=False, highlight=False, soft_wrap=True,
            )
            raise typer.Exit(130) from None
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


class _SweepClock(ProgressColumn):
    """Elapsed time and the estimate of the time left, computed when drawn (so they move between runs)."""

    def __init__(self, text: Callable[[], str]) -> None:
        super().__init__()
        self.text = text

    def render(self, task: Task) -> Text:
        return Text(self.text())
