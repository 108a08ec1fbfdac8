"""(g) The layout a sweep would choose here (``ticketlab.sweep.layout``), the rows behind it, and the goal of
a sweep of >= 8 LeNet-300-100 runs measured against the matmul limit.

Every candidate layout for 8 runs and for 3 runs on this machine's cores is timed now, fresh (the user's
cache is neither read nor written), with the sweep's own measurement (``ticketlab.sweep.measure``) at a
longer budget per layout, on dense (unmasked) models: a sweep's own choice also weighs its pruned levels'
densities (``layout.density_points``), which (h) reports. The choice for R runs is the layout of least
estimated job time (``layout.job_seconds``); its share of the limit is R model-steps' nominal FLOPs over
that time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from speed.workload import build, macs_per_example
from ticketlab.config.spec import ExperimentSpec
from ticketlab.sweep.layout import candidates, choose, job_seconds
from ticketlab.sweep.measure import Workload, time_layouts

RUNS = (8, 3, 1)  # job sizes the choice is reported for: a sweep, the 3-seed IMP job, one run


def layout_report(batch: int, budget: float, limit: float, log: Callable[[str], object] = print) -> dict[str, Any]:
    """Rows (seconds per step of each candidate layout) and the choice for each job size in :data:`RUNS`."""
    cores = os.cpu_count() or 1
    spec = ExperimentSpec.model_validate(
        {"model": "lenet300", "dataset": "fashion-mnist", "recipe": {"batch_size": batch, "lr": 0.1}}
    )
    among = {runs: candidates(runs, cores) for runs in RUNS}
    every = sorted({layout for layouts in among.values() for layout in layouts})
    rows = time_layouts(Workload.of(spec, (1, 28, 28), 10, "cpu"), every, [1.0], budget=budget)[1.0]  # dense models
    flops_per_model_step = 6 * macs_per_example(build("lenet300")) * batch
    table = []
    for layout in every:
        seconds = rows[layout]
        share = flops_per_model_step * layout.processes * layout.stack / seconds / limit
        table.append({"layout": str(layout), "seconds_per_step": seconds, "fraction_of_limit": share})
        log(f"(g) layout {layout}: {seconds * 1e3:.2f} ms per step, {share:.0%} of the limit with every worker busy")
    choices = []
    for runs, layouts in among.items():
        chosen = choose(rows, runs, layouts)
        seconds = job_seconds(chosen, rows[chosen], runs)  # per step of all R runs
        choices.append(
            {
                "runs": runs,
                "layout": str(chosen),
                "candidates": [str(layout) for layout in layouts],
                "job_seconds_per_step": seconds,
                "fraction_of_limit": flops_per_model_step * runs / seconds / limit,
            }
        )
        log(f"(g) {runs} runs: layout {chosen} ({choices[-1]['fraction_of_limit']:.0%} of the limit)")
    return {"model": "lenet300", "batch": batch, "cores": cores, "budget_s": budget, "rows": table, "choices": choices}
