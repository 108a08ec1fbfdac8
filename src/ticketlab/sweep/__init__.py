"""Sweeps: a grid of specs (``grid``), run by local processes or Ray (``executors``), or searched with
Optuna (``tune``)."""

from ticketlab.sweep.executors import (
    MAX_STACK,
    Outcome,
    SweepReport,
    batches,
    run_batch,
    run_sweep,
)
from ticketlab.sweep.grid import (
    SweepSpec,
    expand,
    grid_points,
    instantiate,
    load_sweep,
    set_base,
    template_variables,
)

__all__ = [
    "MAX_STACK", "Outcome", "SweepReport", "SweepSpec", "batches", "expand",
    "grid_points", "instantiate", "load_sweep", "run_batch", "run_sweep", "set_base", "template_variables",
]  # fmt: skip
