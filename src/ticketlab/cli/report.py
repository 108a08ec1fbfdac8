"""``ticketlab report DIR``: one self-contained HTML page (and PNGs) over every run under DIR."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        root: Annotated[Path, typer.Argument(help="Root folder of run directories (e.g. runs).")],
        baseline: Annotated[str, typer.Option(help="Method (its ticket) or table row the stars compare against.")] = "lottery",
        density: Annotated[Optional[float], typer.Option(help="Density at which masks are compared (default: the one most tickets reach).")] = None,
        metric: Annotated[str, typer.Option(help="Results column to compare, e.g. test_acc, val_acc, early_stop_test_acc.")] = "test_acc",
        alpha: Annotated[float, typer.Option(help="Significance level of Welch's t-test (000 §4.3).")] = 0.05,
        out: Annotated[Optional[Path], typer.Option(help="Folder for report.html and its PNGs (default: DIR/report).")] = None,
    ) -> None:
        """Write DIR/report/report.html: accuracy vs density (mean ± std), significance stars vs a baseline,
        winning tickets, mask overlap, initial values of kept weights, per-layer density, accuracy vs size."""
        from ticketlab.analysis.report import write_report
        from ticketlab.cli.common import clean_errors, console
        with clean_errors():
            if not root.is_dir():
                raise FileNotFoundError(f"{root}: no such results folder")
            result = write_report(root, out, baseline=baseline, density=density, metric=metric, alpha=alpha)
        console.print(f"baseline {result.baseline}; masks compared at density {result.density:g}")
        console.print(f"report: {result.html}")
        for path in result.images.values():
            console.print(f"  {path}")
