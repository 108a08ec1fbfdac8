"""``ticketlab results [DIR]``: the tidy results table (one row per run x level) as CSV/parquet + a summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer



def register(app: typer.Typer) -> None:
    app.command("results")(results)


def for_files(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with dict/list/tuple cells (layer densities, densities, empty layers) as JSON text, so
    CSV and parquet hold one plain value per cell and ``json.loads`` gives them back."""
    out = frame.copy()
    for col in out.columns:
        if out[col].map(lambda v: isinstance(v, (dict, list, tuple))).any():
            out[col] = out[col].map(lambda v: json.dumps(list(v) if isinstance(v, tuple) else v) if v is not None else None)
    return out


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of each ticket kind (one set-up, see ``ticketlab.analysis.stats``) and target
    density, with the number of seeds."""
    from ticketlab.analysis.stats import samples

    t = samples(frame, "test_acc")
    grouped = t.groupby(["label", "density_key"], sort=True)
    out = grouped.agg(
        seeds=("seed" if "seed" in t else "run_id", "nunique"), density=("density", "mean"),
        test_acc=("test_acc", "mean"), test_acc_std=("test_acc", "std"),
        early_stop_step=("early_stop_step", "mean"), wall_time=("wall_time", "mean"),
    ).reset_index()
    out = out.sort_values(["label", "density_key"], ascending=[True, False], kind="stable")
    return out.rename(columns={"label": "ticket", "density_key": "target"}).reset_index(drop=True)


def results(
    root: Annotated[Path, typer.Argument(help="Root folder of run directories.")] = Path("runs"),
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Write the tidy table here (CSV).")] = None,
    parquet: Annotated[Optional[Path], typer.Option("--parquet", help="Write the tidy table here (parquet; needs pyarrow).")] = None,
) -> None:
    """Collect every run under ROOT into one table; print a summary, write CSV/parquet on request."""
    from rich.table import Table

    from ticketlab.analysis.results import load_results
    from ticketlab.cli.common import CliError, clean_errors, fmt, console
    with clean_errors():
        if not root.is_dir():
            raise FileNotFoundError(f"results: {root} is not a folder of run directories")
        frame = load_results(root)
        if frame.empty:
            raise CliError(f"results: no finished level under {root}")
        if parquet is not None:
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise CliError("--parquet needs pyarrow: pip install 'ticketlab[parquet]'") from None
    files = for_files(frame)
    for path, write in ((csv, files.to_csv), (parquet, files.to_parquet)):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path, index=False)
            console.print(f"wrote {len(files)} rows x {len(files.columns)} columns to {path}")
    table = Table(title=f"{root}: {frame['run_id'].nunique()} runs, {len(frame)} levels (mean ± std over seeds per set-up)")
    groups = summary(frame)
    for col in groups.columns:
        table.add_column(col, justify="right")
    for _, row in groups.iterrows():
        cells = []
        for col in groups.columns:
            value = row[col]
            cells.append(fmt(None if isinstance(value, float) and value != value else value))
        table.add_row(*cells)
    console.print(table)
