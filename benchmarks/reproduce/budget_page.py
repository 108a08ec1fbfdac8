"""The compute page of one budget suite (budget.sh): how many of its runs are finished, how many
model-epochs they trained and how long the suite's sessions took on this machine.

    python benchmarks/reproduce/budget_page.py SUITE.yaml RUNS_DIR SESSIONS.tsv OUT.md [--set key=value ...]

Model-epochs: every training a level records (tickets and controls: double pruning's complement runs
too), from its start step to the step it stopped at (early stopping included), times the batch size,
over the training-set size; a dense level shared between runs (ticketlab.experiment.dense) counts once.
TOM's mask phase and the scoring passes are not trainings of the model and are not counted (scoring
seconds are listed apart). Wall time: the sum of the sessions budget.sh logged (SESSIONS.tsv: start,
seconds, exit status, load average, CPU), resumed sessions included.
"""

from __future__ import annotations

import argparse
from functools import cache
from pathlib import Path

import pandas as pd

from ticketlab.api import load_results
from ticketlab.data import load_dataset
from ticketlab.store import RunDir
from ticketlab.sweep import grid_points, load_sweep, set_base

SESSION_COLUMNS = ["start", "seconds", "status", "load", "cpu"]


@cache
def train_size(dataset: str, val_size: int) -> int:
    return len(load_dataset(dataset, val_size=val_size, download=False).x_train)


def trainings(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per training: a dense level copied into several runs (same seed, set-up of level 0 and
    figures) is one training."""
    if frame.empty:
        return frame
    stopped = frame["stopped_step"].where(frame["stopped_step"].notna(), frame["end_step"])
    out = frame.assign(steps=stopped.astype(float) - frame["start_step"].astype(float))
    dense = out["level"] == 0
    keys = ["seed", "dataset", "model", "init", "train_time", "val_loss", "test_acc", "steps"]
    return pd.concat([out[~dense], out[dense].drop_duplicates(subset=[k for k in keys if k in out])])


def model_epochs(frame: pd.DataFrame) -> float:
    t = trainings(frame)
    if t.empty:
        return 0.0
    sizes = t.apply(lambda r: train_size(str(r["dataset"]), int(r["val_size"])), axis=1)
    return float((t["steps"] * t["recipe.batch_size"].astype(float) / sizes).sum())


def sessions(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame(columns=SESSION_COLUMNS)
    return pd.read_csv(path, sep="\t", names=SESSION_COLUMNS)


def page(suite: Path, runs: Path, log: Path, sets: list[str]) -> tuple[str, bool]:
    """The markdown of the compute page, and whether every run of the suite is finished."""
    spec = set_base(load_sweep(suite), sets)
    points = grid_points(spec)
    done = sum(RunDir(runs / s.run_id()).finished for _, s in points)
    frame = load_results(runs) if runs.exists() else pd.DataFrame()
    log_rows = sessions(log)
    epochs = model_epochs(frame)
    trained = trainings(frame)
    worker = float(trained["train_time"].sum()) if not trained.empty else 0.0
    scoring = float(frame["score_time"].fillna(0).sum()) if not frame.empty else 0.0
    wall = float(log_rows["seconds"].sum())
    lines = [
        f"# `{suite.stem}`: compute",
        "",
        f"- runs finished: {done} of {len(points)}" + ("" if done == len(points) else " (**incomplete**)"),
        f"- trainings: {len(trained)}; model-epochs trained: {epochs:,.0f}",
        f"- training seconds (sum over workers): {worker:,.0f}; scoring seconds: {scoring:,.0f}",
        f"- wall time of the sessions on this machine: {wall:,.0f} s ({wall / 3600:.2f} h) in {len(log_rows)} session(s)",
        f"- command: `bash benchmarks/reproduce/budget.sh {suite.stem}`"
        + (f" with `--set {' --set '.join(sets)}`" if sets else ""),
        "",
        "| session start (UTC) | seconds | exit status | load average at start | CPU |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r.start} | {r.seconds} | {r.status} | {r.load} | {r.cpu} |" for r in log_rows.itertuples()]
    return "\n".join(lines) + "\n", done == len(points)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", type=Path)
    parser.add_argument("runs", type=Path)
    parser.add_argument("sessions", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--set", dest="sets", action="append", default=[], help="as ticketlab sweep --set")
    args = parser.parse_args(argv)
    text, complete = page(args.suite, args.runs, args.sessions, args.sets)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print("complete" if complete else "incomplete")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
