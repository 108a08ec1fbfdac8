"""(h) The IMP job of ``benchmarks/imp_wall_time.yaml`` (LeNet-300-100, K = 0.8 to 1%: 21 levels + dense,
3 seeds, Adam, batch 60, evaluations every 300 steps), run for real as a ``ticketlab sweep`` but with
``steps`` training steps per level instead of 20 epochs, then extrapolated to 20 epochs per level; with
the sparse training path in a given mode (``training.sparse``; the bench runs it ``off`` and ``auto``).

Measured: the job's wall time W, and per level (``time_s`` in each metrics.json, seconds per model) the
training, evaluation, scoring and writing. The level work spans from the first level's start (its
metrics.json's time less its phases times its stack size) to the last run's end; the rest of W is start-up (worker processes,
data). A run the sweep cut at a level boundary (``sweep.plan.balance``) restarts in a second worker: the
time from that piece's submission to its first level's start is a restart, counted like start-up (not
scaled). Extrapolation, stated as such: start-up + restarts + (span - restarts) x (the phases with training
scaled to 20 epochs' steps and evaluation to 20 epochs' evaluations) / (the phases measured). Per-level overhead at the default
evaluation cadence (one evaluation per epoch, and one at the start) is computed from the same figures:
(21 evaluations + scoring + writing) / (20 epochs of training steps), averaged over levels.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from speed.workload import build, macs_per_example
from ticketlab.sweep import SweepSpec, expand, run_sweep
from ticketlab.sweep.choose import choose_layout
from ticketlab.sweep.layout import job_seconds
from ticketlab.training import sparse as sparse_training

JOB = Path(__file__).resolve().parents[1] / "imp_wall_time.yaml"
EPOCHS = 20
PHASES = ("train", "evaluate", "score", "write")


def evaluations(steps: int, every: int) -> int:
    """Evaluations of one training of ``steps`` steps: at the start, every ``every`` steps and at the end."""
    return 1 + steps // every + (1 if steps % every else 0)


@contextlib.contextmanager
def sparse_mode(mode: str):
    """``$TICKETLAB_SPARSE_TRAINING`` set to ``mode`` for the sweep's worker processes, then restored."""
    before = os.environ.get(sparse_training.ENV)
    os.environ[sparse_training.ENV] = mode
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(sparse_training.ENV, None)
        else:
            os.environ[sparse_training.ENV] = before


def _chosen_layout(lines: list[str]) -> str | None:
    """The layout a sweep logged that it chose (``sweep.layout``: "layout PxTxK for N runs (...)")."""
    for line in lines:
        found = re.search(r"layout (\d+x\d+x\d+) for \d+ runs", line)
        if found:
            return found.group(1)
    return None


def job_sweep(steps: int, layout: str | None = None, seeds: int | None = None) -> SweepSpec:
    """The job's sweep at ``steps`` steps per level, in ``layout`` (None: measured), with ``seeds`` runs
    (default: the job file's 3)."""
    data = yaml.safe_load(JOB.read_text())
    data["base"]["recipe"] = {**data["base"]["recipe"], "steps": f"{steps}it"}
    if seeds is not None:
        data["grid"]["seed"] = list(range(seeds))
    return SweepSpec.model_validate({**data, "layout": layout})


def job_layout(seeds: int | None = None, sparse: str = "auto", data_root: str | None = None) -> dict[str, Any]:
    """The layout the job's sweep chooses and the rows behind it: each candidate's seconds per step, the mean
    over the job's density points (``sweep.layout.density_points``), and its estimated job time per step
    (``layout.job_seconds``). Read from the cache where the job ran before (the bench's warm-up)."""
    sweep = job_sweep(1, None, seeds)
    specs = expand(sweep)
    with sparse_mode(sparse):
        decision = next(iter(choose_layout(sweep, specs, data_root=data_root).decisions.values()))
    return {
        "runs": len(specs),
        "layout": str(decision.layout),
        "source": decision.source,
        "shares": {f"{d:.3g}": share for d, share in sorted(decision.shares.items(), reverse=True)},
        "rows": [
            {
                "layout": str(layout),
                "seconds_per_step": seconds,
                "job_seconds_per_step": job_seconds(layout, seconds, len(specs)),
            }
            for layout, seconds in sorted(decision.rows.items(), key=lambda row: job_seconds(*row, len(specs)))
        ],
    }


def imp_job(
    steps: int,
    layout: str | None,
    limit: float,
    log: Callable[[str], object] = print,
    data_root: str | None = None,
    sparse: str = "auto",
    seeds: int | None = None,
) -> dict[str, Any]:
    """Run the job with ``steps`` per level in ``layout`` (None: the sweep's own choice) and extrapolate;
    ``sparse``: the sparse training mode (``training.sparse``: auto, the default, on or off); ``seeds``: its
    runs (default: the job file's 3)."""
    sweep = job_sweep(steps, layout, seeds)
    recipe = sweep.base["recipe"]
    every = int(str(recipe["eval_every"]).removesuffix("it"))
    with tempfile.TemporaryDirectory(prefix="ticketlab-imp-") as out:
        started = time.time()
        submits: dict[str, list[float]] = {}
        lines: list[str] = []

        def log_line(line: str) -> None:
            lines.append(line)
            log(f"(h) {line}")

        with sparse_mode(sparse):
            report = run_sweep(
                sweep,
                out=out,
                log=log_line,
                data_root=data_root,
                on_submit=lambda ids: [submits.setdefault(i, []).append(time.time()) for i in ids],
            )
        wall = time.time() - started
        if report.failed:
            raise RuntimeError(f"IMP job: {report.failed[0].run_id} failed: {report.failed[0].error}")
        by_run = {
            spec.run_id(): [
                (json.loads(path.read_text()), path.stat().st_mtime)
                for path in sorted((Path(out) / spec.run_id()).glob("level_*/metrics.json"))
            ]
            for spec in expand(sweep)
        }
        levels = [level for rows in by_run.values() for level in rows]
        ends = [(Path(out) / spec.run_id() / "done.json").stat().st_mtime for spec in expand(sweep)]
    sums = {phase: sum(row["time_s"][phase] for row, _ in levels) for phase in PHASES}
    # a level trained in a stack of K took K times its per-model seconds
    first_start = min(mtime - row.get("stacked", 1) * sum(row["time_s"].values()) for row, mtime in levels)
    span = max(ends) - first_start
    startup = wall - span
    restarts = 0.0  # a cut run's later piece: from its submission to its first level's start
    for run_id, times in submits.items():
        starts = sorted(mtime - row.get("stacked", 1) * sum(row["time_s"].values()) for row, mtime in by_run[run_id])
        for submitted in times[1:]:
            restarts += min((s for s in starts if s >= submitted), default=submitted) - submitted
    last = levels[0][0]["history"][-1]  # epoch = step / steps per epoch
    spe = round(last["step"] / last["epoch"])
    target_steps = EPOCHS * spe
    measured_evals = evaluations(steps, every)
    scale = {
        "train": target_steps / steps,
        "evaluate": evaluations(target_steps, every) / measured_evals,
        "score": 1.0,
        "write": 1.0,
    }
    total = sum(sums.values())
    scaled = sum(sums[p] * scale[p] for p in PHASES)
    wall_20 = startup + restarts + (span - restarts) * scaled / total
    n_levels = len(levels)
    flops = 6 * macs_per_example(build("lenet300")) * int(recipe["batch_size"]) * target_steps * n_levels
    per_level = {p: sums[p] / n_levels for p in PHASES}
    per_eval = sums["evaluate"] / (n_levels * measured_evals)
    per_step = sums["train"] / (n_levels * steps)
    default_overhead = ((EPOCHS + 1) * per_eval + per_level["score"] + per_level["write"]) / (per_step * target_steps)
    job_overhead = (scale["evaluate"] * per_level["evaluate"] + per_level["score"] + per_level["write"]) / (
        scale["train"] * per_level["train"]
    )
    sparse_levels = sum(
        any(layer.get("sparse") for layer in (row.get("sparse_training") or {}).get("layers", {}).values())
        for row, _ in levels
    )
    result = {
        "job": JOB.name,
        "sparse_training": sparse,
        "sparse_levels": sparse_levels,
        "runs": len(expand(sweep)),
        "levels": n_levels,
        "steps_per_level": steps,
        "eval_every": every,
        "layout": layout or _chosen_layout(lines),
        "wall_s": wall,
        "startup_s": startup,
        "span_s": span,
        "restarts_s": restarts,
        "pieces": sum(len(t) for t in submits.values()),
        "phase_sums_s": sums,
        "per_level_s": per_level,
        "target_steps_per_level": target_steps,
        "extrapolated_wall_s": wall_20,
        "extrapolated_fraction_of_limit": flops / wall_20 / limit,
        "overhead_default_cadence": default_overhead,
        "overhead_job_cadence": job_overhead,
    }
    log(
        f"(h) IMP job, sparse training {sparse}, {steps} steps per level: {wall:.1f} s (start-up {startup:.1f}, restarts {restarts:.1f} s of "
        f"runs cut at a level boundary: {result['pieces'] - result['runs']}; levels with a layer trained sparse: "
        f"{sparse_levels} of {n_levels}); per level "
        + ", ".join(f"{p} {per_level[p]:.3f} s" for p in PHASES)
        + f"; at {EPOCHS} epochs per level ~{wall_20 / 60:.1f} min (extrapolated), "
        f"{result['extrapolated_fraction_of_limit']:.0%} of the limit; overhead at one evaluation per epoch "
        f"{default_overhead:.1%}, at the job's cadence {job_overhead:.1%}"
    )
    return result
