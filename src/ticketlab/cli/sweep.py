"""``ticketlab sweep sweep.yaml``: run a grid of specs with local worker processes or Ray."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)


def sweep(
    sweep_file: Annotated[
        Path, typer.Argument(help="YAML sweep: 'base' spec + 'grid' of dotted field paths to value lists.")
    ],
    executor: Annotated[
        str | None, typer.Option(help="local (worker processes) or ray (default: the file's, else local).")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address, e.g. auto or 10.0.0.1:6379 (default: a local instance).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Local worker processes (default: measured, see --layout).")
    ] = None,
    threads_per_worker: Annotated[
        int | None, typer.Option(help="torch threads per worker (default: measured) / CPUs per Ray task (default 1).")
    ] = None,
    batch: Annotated[
        int | None, typer.Option(help="Runs per worker task, trained stacked (default: measured, see --layout).")
    ] = None,
    layout: Annotated[
        str | None,
        typer.Option(
            help="Local layout PROCESSESxTHREADSxSTACK, e.g. 2x1x4, or auto (default; also $TICKETLAB_LAYOUT): "
            "auto times the candidates once per machine and workload and caches the fastest "
            "($TICKETLAB_CACHE_DIR, else ~/.cache/ticketlab); remeasure times them again."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Root folder of run directories (default: the file's, else runs).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto (default: the file's, else auto).")] = None,
    tensorboard: Annotated[
        bool, typer.Option("--tensorboard", help="Write TensorBoard curves under each run directory.")
    ] = False,
    data_root: Annotated[
        Path | None, typer.Option(help="Folder holding the dataset files (else the usual lookup).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a base field: key=value, dotted path, YAML value (repeatable), e.g. --set recipe.steps=1ep.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the grid's runs and whether they are finished; run nothing.")
    ] = False,
) -> None:
    """Expand the grid and run every unfinished point; a finished sweep does nothing and says so."""
    # long: one typer option per parameter
    from rich.table import Table

    from ticketlab.cli.common import CliError, clean_errors, console
    from ticketlab.store import RunDir
    from ticketlab.sweep import grid_points, load_sweep, run_sweep, set_base

    with clean_errors():
        spec = set_base(load_sweep(sweep_file), set_ or ())
        overrides = {
            "executor": executor,
            "address": address,
            "workers": workers,
            "threads_per_worker": threads_per_worker,
            "batch": batch,
            "layout": layout,
            "out": None if out is None else str(out),
            "device": device,
            "tensorboard": tensorboard or None,
        }
        spec = spec.model_validate({**spec.model_dump(), **{k: v for k, v in overrides.items() if v is not None}})
        try:  # a bad grid value is a mistake in the file
            points = grid_points(spec)
        except ValueError as exc:
            raise CliError(f"{sweep_file}: {exc}") from None
        if dry_run:
            table = Table(title=f"{sweep_file.name}: {len(points)} runs")
            for col in ("run id", *spec.grid, "finished"):
                table.add_column(col)
            for point, s in points:
                table.add_row(
                    s.run_id(),
                    *(json.dumps(v) for v in point.values()),
                    "yes" if RunDir(Path(spec.out) / s.run_id()).finished else "no",
                )
            console.print(table)
            return
        report = _run_with_progress(spec, run_sweep, data_root)
    if not report.outcomes:
        console.print(f"nothing to do: all {report.total} runs of {sweep_file.name} are finished ({spec.out})")
        return
    ok = len(report.outcomes) - len(report.failed) - len(report.elsewhere)
    elsewhere = f", {len(report.elsewhere)} finished by another sweep" if report.elsewhere else ""
    console.print(
        f"{ok} runs finished, {len(report.failed)} failed, {report.skipped} already finished before{elsewhere}\n"
        f"results: ticketlab results {spec.out}"
    )
    if report.failed:
        raise typer.Exit(1)


def _run_with_progress(spec: Any, run_sweep: Any, data_root: Path | None) -> Any:  # long: callbacks sharing a bar
    """Run the sweep under one bar counting levels (finished runs count all their levels; runs in flight
    the levels already on disk, which for Ray tasks arrive when the task ends), with runs done / total, in
    flight and failed beside it, and the time left estimated from the levels' pace. Every run that ends
    prints one line (``run 3/12 <id> finished (41.0 s) seed=2 · 0:02:05 elapsed, ~0:06:10 left``, or why it
    failed), which is all a pipe or a log file gets; each run another sweep holds is printed once. Ctrl-C
    says that the same command resumes."""
    from ticketlab.cli.common import err, progress_bar
    from ticketlab.experiment.progress import clock
    from ticketlab.sweep import grid_points
    from ticketlab.sweep.plan import expected_levels

    root = Path(spec.out)
    named = {s.run_id(): (point, s) for point, s in grid_points(spec)}
    expected = {run_id: expected_levels(s) for run_id, (_, s) in named.items()}
    state: dict[str, Any] = {
        "done": set(),
        "flight": set(),
        "failed": 0,
        "ended": 0,
        "pending": 0,
        "total": 0,
        "levels": 0,
        "counted": 0,  # levels on the bar at its last refresh
        "before": 0,  # of them, finished before this sweep started
        "announced": set(),
    }
    started = time.monotonic()
    stop = threading.Event()

    def on_disk(run_id: str) -> int:
        return min(expected[run_id], sum((d / "metrics.json").exists() for d in (root / run_id).glob("level_*")))

    def point_text(run_id: str) -> str:
        point = named[run_id][0] if run_id in named else {}
        return " ".join(f"{k}={json.dumps(v)}" for k, v in point.items())

    bar = progress_bar()
    try:
        with bar:
            task = bar.add_task("sweep", total=None, info="")

            def refresh() -> None:
                done = sum(expected[r] for r in state["done"]) + sum(on_disk(r) for r in list(state["flight"]))
                state["counted"] = done
                info = f"runs {len(state['done'])}/{state['total']}, {len(state['flight'])} in flight"
                info += f", {state['failed']} failed" if state["failed"] else ""
                bar.update(task, completed=done, total=state["levels"], info=info)

            def clock_text() -> str:
                elapsed, ended, pending = time.monotonic() - started, state["ended"], state["pending"]
                left = None
                if 0 < ended < pending:  # this sweep's pace in levels so far, else in runs
                    levels = state["counted"] - state["before"]
                    if levels > 0:
                        left = elapsed / levels * max(0, state["levels"] - state["counted"])
                    else:
                        left = elapsed / ended * (pending - ended)
                return f"{clock(elapsed)} elapsed" + (f", ~{clock(left)} left" if left is not None else "")

            def on_start(pending: int, total: int) -> None:
                finished = [r for r in expected if (root / r / "done.json").exists()]
                before = sum(expected[r] for r in finished)
                state.update(total=total, pending=pending, levels=sum(expected.values()), done=set(finished))
                # the levels finished before this sweep (an unfinished run's too) do not count towards its pace
                state.update(before=before + sum(on_disk(r) for r in expected if r not in finished), counted=before)
                bar.reset(task, total=state["levels"], completed=before)
                refresh()

            def on_submit(run_ids: list[str]) -> None:
                state["flight"].update(run_ids)
                refresh()

            def on_done(outcome: Any) -> None:
                state["flight"].discard(outcome.run_id)
                state["ended"] += 1
                head = f"run {state['ended']}/{state['pending']} {outcome.run_id}"
                if outcome.ok:
                    state["done"].add(outcome.run_id)
                    refresh()
                    how = "finished by another sweep" if outcome.elsewhere else f"finished ({outcome.wall_time:.1f} s)"
                    bar.console.print(
                        f"{head} {how} {point_text(outcome.run_id)} · {clock_text()}",
                        markup=False,
                        highlight=False,
                        soft_wrap=True,
                    )
                else:
                    state["failed"] += 1
                    refresh()
                    err.print(
                        f"{head} failed: {outcome.error} ({point_text(outcome.run_id)})",
                        style="red",
                        markup=False,
                        highlight=False,
                        soft_wrap=True,
                    )

            def on_wait(held: dict[str, Any]) -> None:
                for run_id in sorted(set(held) - state["announced"]):
                    state["announced"].add(run_id)
                    owner = held[run_id].describe() if held[run_id] is not None else "?"
                    err.print(
                        f"{run_id} is being computed by another sweep ({owner}): skipped, waited for at the end",
                        highlight=False,
                    )

            def poll() -> None:
                while not stop.wait(1.0):
                    refresh()

            watcher = threading.Thread(target=poll, daemon=True)
            watcher.start()
            try:
                return run_sweep(
                    spec,
                    on_start=on_start,
                    on_done=on_done,
                    on_submit=on_submit,
                    on_wait=on_wait,
                    data_root=data_root,
                    log=lambda message: err.print(message, markup=False, highlight=False, soft_wrap=True),
                )
            finally:
                stop.set()
                watcher.join()
    except KeyboardInterrupt:
        err.print(
            f"interrupted after {state['ended']} of {state['pending']} runs; run the same command again to resume "
            "(finished runs are skipped, an unfinished one resumes from its last finished level)",
            style="red",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
