"""A local sweep's layout: worker processes, threads per worker and runs stacked per task, chosen by
measurement (``ticketlab.sweep.layout``) for the runs it is about to compute.

Processes and threads are the pool's, so they are chosen for the stack group (``stack_key``: data,
architecture, recipe) with the most pending runs; every other group then gets the stack size that is
fastest for it with those processes and threads. Each group is timed at the density points that stand for
its runs' levels (``sweep.layout.density_points`` of ``sweep.plan.level_densities``). Parts the sweep fixes
(``layout``, ``workers``, ``threads_per_worker``, ``batch``; ``$TICKETLAB_LAYOUT``) are not measured.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ticketlab.config.spec import ExperimentSpec
from ticketlab.experiment.lockstep import stack_key
from ticketlab.hardware.device import resolve_device
from ticketlab.sweep.grid import SweepSpec
from ticketlab.sweep.layout import (
    Decision,
    Layout,
    Measure,
    cache_key,
    candidates,
    decide,
    density_points,
    env_layout,
    machine_id,
)
from ticketlab.sweep.measure import Workload, time_layouts, workload_key
from ticketlab.sweep.plan import level_densities

MeasureFor = Callable[[ExperimentSpec], Measure]


@dataclass
class Chosen:
    """What a local sweep runs with: ``processes`` workers of ``threads`` threads, ``stacks[stack_key]`` runs
    per task, and the decision behind each group's choice (for the log and the bench)."""

    processes: int
    threads: int
    stacks: dict[str, int] = field(default_factory=dict)
    decisions: dict[str, Decision] = field(default_factory=dict)

    def size(self, spec: ExperimentSpec) -> int:
        return self.stacks[stack_key(spec)]


def fixed_layout(sweep: SweepSpec) -> Layout | str | None:
    """The layout the sweep file (``layout``) or ``$TICKETLAB_LAYOUT`` fixes (the file wins), ``"remeasure"``,
    or None (measured, from the cache where it can)."""
    if sweep.layout is not None and sweep.layout.strip().lower() != "auto":
        text = sweep.layout.strip().lower()
        return "remeasure" if text == "remeasure" else Layout.parse(sweep.layout)
    return env_layout()


def choose_layout(
    sweep: SweepSpec,
    pending: Sequence[ExperimentSpec],
    *,
    data_root: str | None = None,
    measure_for: MeasureFor | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> Chosen:
    """The layout of a local sweep over ``pending`` (see the module docstring). ``measure_for(spec)`` gives the
    function timing layouts of ``spec``'s workload (default: :func:`measured`; tests inject timings)."""
    device = resolve_device(sweep.device)
    cuda = device.type == "cuda"
    asked = fixed_layout(sweep)
    fixed = asked if isinstance(asked, Layout) else None
    processes = sweep.workers or (fixed.processes if fixed else None)
    threads = sweep.threads_per_worker or (fixed.threads if fixed else None)
    stack = sweep.batch or (fixed.stack if fixed else None)
    groups: dict[str, list[ExperimentSpec]] = {}
    for spec in pending:
        groups.setdefault(stack_key(spec), []).append(spec)
    cores = os.cpu_count() or 1
    machine = machine_id(device)
    measure_for = measure_for or (lambda spec: measured(spec, device.type, data_root))
    chosen: Chosen | None = None
    for name, group in sorted(groups.items(), key=lambda item: -len(item[1])):
        p = chosen.processes if chosen else processes
        t = chosen.threads if chosen else threads
        among = candidates(len(group), cores, cuda, processes=p, threads=t, stack=stack)
        key = cache_key(machine, workload_key(group[0], device))
        shares = density_points([d for spec in group for d in level_densities(spec)])
        decision = decide(
            key, among, len(group), measure_for(group[0]), shares=shares, log=log, fresh=asked == "remeasure"
        )
        if chosen is None:
            chosen = Chosen(decision.layout.processes, decision.layout.threads)
        chosen.stacks[name] = decision.layout.stack
        chosen.decisions[name] = decision
        log(f"{group[0].model} ({group[0].dataset}, batch {group[0].recipe.batch_size}): {decision.describe()}")
    if chosen is None:  # nothing pending
        return Chosen(processes or 1, threads or 1)
    return chosen


def measured(spec: ExperimentSpec, device: str, data_root: str | None) -> Measure:
    """Times layouts of ``spec``'s workload; its data is loaded (for the input shape and classes) only if
    something is timed."""

    def measure(layouts: list[Layout], densities: list[float]) -> dict[float, dict[Layout, float]]:
        from ticketlab.data import load_dataset

        data = load_dataset(spec.dataset, root=data_root, val_size=spec.val_size, seed=spec.split_seed)
        return time_layouts(Workload.of(spec, data.input_shape, data.num_classes, device), layouts, densities)

    return measure
