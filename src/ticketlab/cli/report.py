"""``ticketlab report DIR``: one self-contained HTML page (and PNGs) over every run under DIR."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        root: Annotated[Path, typer.Argument(help="Root folder of run directories (e.g. runs).")],
        baseline: Annotated[
            str | None,
            typer.Option(
                help="Method, criterion (snip finds oneshot(snip)) or table row the stars compare against (default: the lottery ticket, else the ticket with the most samples)."
            ),
        ] = None,
        density: Annotated[
            float | None,
            typer.Option(
                help="Density at which masks are compared, each ticket at its closest level within a factor 1.5 (default: the one most tickets reach)."
            ),
        ] = None,
        metric: Annotated[
            str, typer.Option(help="Results column to compare, e.g. test_acc, val_acc, early_stop_test_acc.")
        ] = "test_acc",
        alpha: Annotated[float, typer.Option(help="Significance level of Welch's t-test (000 §4.3).")] = 0.05,
        out: Annotated[
            Path | None, typer.Option(help="Folder for report.html and its PNGs (default: DIR/report).")
        ] = None,
    ) -> None:
        """Write DIR/report/report.html: accuracy vs density (mean ± std), significance stars vs a baseline,
        winning tickets, mask overlap, initial values of kept weights, per-layer density, accuracy vs size."""
        from ticketlab.analysis.report import density_statement, write_report
        from ticketlab.cli.common import clean_errors, console

        with clean_errors():
            if not root.is_dir():
                raise FileNotFoundError(f"{root}: no such results folder")
            result = write_report(root, out, baseline=baseline, density=density, metric=metric, alpha=alpha)
        reason = f" ({result.baseline_reason})" if result.baseline_reason else ""
        console.print(f"baseline {result.baseline}{reason}; masks compared {density_statement(result)}", markup=False)
        console.print(f"report: {result.html}")
        for path in result.images.values():
            console.print(f"  {path}")
