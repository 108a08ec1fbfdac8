"""``ticketlab tune tune.yaml``: search spec fields with Optuna (successive halving prunes weak trials)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)


def tune(
    tune_file: Annotated[
        Path,
        typer.Argument(
            help="YAML: 'base' spec, 'search' of field paths/template variables to distributions, 'objective', 'trials'."
        ),
    ],
    trials: Annotated[int | None, typer.Option(help="Number of trials (default: the file's).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Root folder of run directories (default: the file's, else runs).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto (default: the file's, else auto).")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch.")] = None,
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
) -> None:
    """Run the study and print every trial and the best one."""
    # long: one typer option per parameter
    from rich.table import Table

    from ticketlab.cli.common import clean_errors, console
    from ticketlab.hardware.device import set_threads
    from ticketlab.sweep.tune import load_tune, set_tune_base
    from ticketlab.sweep.tune import tune as run_tune

    with clean_errors():
        set_threads(threads)
        spec = set_tune_base(load_tune(tune_file), set_ or ())
        overrides = {"trials": trials, "out": None if out is None else str(out), "device": device}
        spec = spec.model_validate(
            {**spec.model_dump(by_alias=True), **{k: v for k, v in overrides.items() if v is not None}}
        )

        def on_trial(trial) -> None:
            value = "-" if trial.value is None else f"{trial.value:.4f}"
            why = f" ({trial.error})" if trial.error else ""
            console.print(
                f"trial {trial.number}: {trial.state} {json.dumps(trial.params)} {spec.objective} {value}{why}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )

        with console.status(f"tuning {', '.join(spec.search)} ({spec.trials} trials)"):
            result = run_tune(spec, on_trial=on_trial, data_root=data_root)
    table = Table(title=f"{tune_file.name}: {spec.objective} ({result.direction})")
    for col in ("trial", *spec.search, "state", "evaluations", spec.objective, "run id"):
        table.add_column(col, justify="right")
    for t in result.trials:
        table.add_row(
            str(t.number),
            *(_short(t.params.get(k)) for k in spec.search),
            t.state,
            str(t.evaluations),
            "-" if t.value is None else f"{t.value:.4f}",
            t.run_id or "-",
        )
    console.print(table)
    if result.repeats:
        console.print(
            f"{result.repeats} proposals repeated a tried point: not trained again, not counted",
            highlight=False,
            soft_wrap=True,
        )
    if result.stopped:
        console.print(
            f"stopped after {len(result.trials)} of {spec.trials} trials: {result.stopped}",
            highlight=False,
            soft_wrap=True,
        )
    best = result.best
    if best is None:
        console.print("no trial completed")
        raise typer.Exit(1)
    console.print(
        f"best: trial {best.number} {json.dumps(best.params)} {spec.objective} {best.value:.4f} (run {best.run_id})",
        highlight=False,
    )


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)
