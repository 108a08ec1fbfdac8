"""``ticketlab results [DIR]``: the tidy results table (one row per run x level) as CSV/parquet + a summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

FORMATS = ("table", "csv", "markdown")


def register(app: typer.Typer) -> None:
    app.command("results")(results)


def for_files(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with dict/list/tuple cells (layer densities, densities, empty layers) as JSON text, so
    CSV and parquet hold one plain value per cell and ``json.loads`` gives them back."""
    out = frame.copy()
    for col in out.columns:
        if out[col].map(lambda v: isinstance(v, (dict, list, tuple))).any():
            out[col] = out[col].map(
                lambda v: json.dumps(list(v) if isinstance(v, tuple) else v) if v is not None else None
            )
    return out


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of each ticket kind (one set-up, see ``ticketlab.analysis.stats``) and target
    density, with the number of seeds."""
    from ticketlab.analysis.stats import samples

    t = samples(frame, "test_acc")
    grouped = t.groupby(["label", "density_key"], sort=True)
    out = grouped.agg(
        seeds=("seed" if "seed" in t else "run_id", "nunique"),
        density=("density", "mean"),
        test_acc=("test_acc", "mean"),
        test_acc_std=("test_acc", "std"),
        early_stop_step=("early_stop_step", "mean"),
        wall_time=("wall_time", "mean"),
    ).reset_index()
    out = out.sort_values(["label", "density_key"], ascending=[True, False], kind="stable")
    return out.rename(columns={"label": "ticket", "density_key": "target"}).reset_index(drop=True)


HEADER = {
    "ticket": "ticket",
    "target": "target",
    "seeds": "seeds",
    "density": "density",
    "test_acc": "test acc",
    "test_acc_std": "± std",
    "early_stop_step": "early-stop step",
    "wall_time": "time (s)",
}


def cells(groups: pd.DataFrame) -> list[list[str]]:
    """The summary's rows as printed: densities and accuracies to 4 decimals, target densities as given
    (``0.0512``), counts and steps whole, times to 0.1 s."""
    from ticketlab.cli.common import fmt, fmt_count

    return [
        [
            str(row["ticket"]),
            f"{row['target']:g}",
            fmt_count(row["seeds"]),
            fmt(row["density"]),
            fmt(row["test_acc"]),
            fmt(row["test_acc_std"]),
            fmt_count(row["early_stop_step"]),
            fmt(row["wall_time"], 1),
        ]
        for _, row in groups.iterrows()
    ]


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table (numbers right-aligned)."""
    from ticketlab.cli.common import is_number

    right = [bool(rows) and all(is_number(row[j]) for row in rows) for j in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def results(
    root: Annotated[Path, typer.Argument(help="Root folder of run directories.")] = Path("runs"),
    csv: Annotated[Path | None, typer.Option("--csv", help="Write the tidy table here (CSV).")] = None,
    parquet: Annotated[
        Path | None, typer.Option("--parquet", help="Write the tidy table here (parquet; needs pyarrow).")
    ] = None,
    format_: Annotated[
        str, typer.Option("--format", help="How to print the summary: table, csv (full precision) or markdown.")
    ] = "table",
) -> None:
    """Collect every run under ROOT into one table; print a summary, write CSV/parquet on request."""
    from ticketlab.analysis.results import load_results
    from ticketlab.cli.common import CliError, clean_errors, console, err, print_table

    with clean_errors():
        if format_ not in FORMATS:
            raise CliError(f"--format must be one of {', '.join(FORMATS)}; got {format_!r}")
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
            (console if format_ == "table" else err).print(
                f"wrote {len(files)} rows x {len(files.columns)} columns to {path}"
            )
    title = f"{root}: {frame['run_id'].nunique()} runs, {len(frame)} levels (mean ± std over seeds per set-up)"
    groups = summary(frame)
    if format_ == "csv":
        typer.echo(groups.to_csv(index=False), nl=False)
    elif format_ == "markdown":
        typer.echo(f"{title}\n\n{markdown([HEADER[c] for c in groups.columns], cells(groups))}")
    else:
        print_table(title, [HEADER[c] for c in groups.columns], cells(groups))
