"""What ``prune`` and ``run`` show: the live line ``level 3/14 ━━━━━━ step 200/916 · 0:01:02 elapsed, ~0:04:10
left`` while they work, then the table of levels and the accuracy-vs-density plot.

In a terminal the line redraws itself (elapsed time advances between progress calls, the estimate counts
down); every finished level also prints one line above it, and those lines are all a pipe or a log file
gets. Ctrl-C ends with a line saying that the same command resumes from the last finished level.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.progress import BarColumn, Progress, ProgressColumn, Task
from rich.text import Text

from ticketlab.cli.common import console, err, fmt, fmt_count, print_table
from ticketlab.experiment.progress import RunStatus, clock


class _Level(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(task.fields["status"].label(), style="bold")


class _Steps(ProgressColumn):
    def render(self, task: Task) -> Text:
        status: RunStatus = task.fields["status"]
        if not status.step_total:
            return Text("done" if status.done else "starting")
        steps = f"step {status.step_done}/{status.step_total}"
        return Text(f"{steps} · evaluating" if status.evaluating else steps)


class _Clock(ProgressColumn):
    def render(self, task: Task) -> Text:
        status: RunStatus = task.fields["status"]
        left = status.remaining()
        return Text(f"{clock(status.elapsed())} elapsed" + (f", ~{clock(left)} left" if left is not None else ""))


@contextmanager
def run_display() -> Iterator[tuple[RunStatus, Callable[[str], None]]]:
    """(status to pass to the run, log that prints a line above the live one). Ctrl-C inside: one line on
    how to resume, exit code 130."""
    status = RunStatus()
    bar = Progress(_Level(), BarColumn(), _Steps(), _Clock(), console=console, transient=True)
    try:
        with bar:
            task = bar.add_task("run", total=None, status=status)

            def changed(s: RunStatus) -> None:
                # an evaluation is drawn when it starts, however short (the bar's own refresh could miss it)
                bar.update(task, completed=s.step_done, total=s.step_total or None, refresh=s.evaluating)

            status.on_change = changed
            yield status, lambda message: bar.console.print(message, markup=False, highlight=False, soft_wrap=True)
    except KeyboardInterrupt:
        err.print(interrupted(status), style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


def interrupted(status: RunStatus) -> str:
    """What Ctrl-C leaves behind, and how to go on."""
    levels = sorted({r["level"] for r in status.rows if not r.get("control")})
    if not levels:
        return "interrupted before the first level finished; run the same command again to start it over"
    return (
        f"interrupted after {status.label(levels[-1])} (saved in {status.path}); run the same command again to "
        "resume from the last finished level (finished levels are read back, not retrained)"
    )


def plot_levels(result: Any, title: str) -> None:
    """Test accuracy vs density of the run's levels, written beside them (``accuracy_vs_density.png``); says where."""
    from ticketlab.analysis.plots import plot_accuracy_vs_density

    png = plot_accuracy_vs_density(result.table(), result.path / "accuracy_vs_density.png", title=title)
    console.print(f"run directory: {result.path}\nplot: {png}")


def print_levels(frame: Any, title: str) -> None:
    """The table of a run's levels (``RunResult.table()``): one row per level and control."""
    header = (
        "level",
        "control",
        "density",
        "sparsity",
        "test acc",
        "early-stop step",
        "winning",
        "collapsed",
        "time (s)",
    )
    print_table(
        title,
        header,
        [
            [
                str(row["level"]),
                row["control"] or "ticket",
                f"{row['density']:.4f}",
                f"{row['sparsity']:.4f}",
                fmt(row["test_acc"]),
                fmt_count(row["early_stop_step"]),
                fmt(row["winning"]),
                fmt(bool(row["collapsed"])),
                f"{row['train_time'] + row['score_time']:.1f}",
            ]
            for _, row in frame.iterrows()
        ],
    )
