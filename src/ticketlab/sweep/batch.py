"""A worker's unit of a sweep: a batch of specs run in one process, and how each run ended."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ticketlab.config.spec import ExperimentSpec


@dataclass(frozen=True)
class Outcome:
    """How one run of a sweep ended."""

    run_id: str
    spec: dict[str, Any]  # the non-default fields, to name the run in reports
    ok: bool
    error: str = ""
    wall_time: float = 0.0
    node: str = ""  # where it ran, for Ray tasks: host/node id
    elsewhere: bool = False  # finished by another sweep on the same folder while this one waited
    paused: bool = False  # not finished: stopped after its piece's levels, to resume in another piece (plan.balance)


def run_batch(
    specs: Iterable[dict[str, Any]],
    root: str,
    *,
    device: str = "cpu",
    threads: int | None = None,
    tensorboard: bool = False,
    data_root: str | None = None,
    plugins: Sequence[str] = (),
    plugin_dir: str | None = None,
    budget: int | None = None,
) -> list[Outcome]:
    """Run a batch of specs (JSON form) in this process; a failure is recorded and the other runs go on.
    Runs that share an architecture and recipe train stacked (``ticketlab.experiment.lockstep.run_experiments``).
    This is the worker's unit, kept plain so it pickles for processes and Ray. ``plugins`` (and the installed
    packages' entry points) are imported first, as the process that started the sweep did (``ticketlab.plugins``).
    ``budget``: each run computes at most that many levels here, then pauses (its outcome says ``paused``)."""
    from ticketlab.experiment.lockstep import run_experiments
    from ticketlab.hardware.device import set_threads
    from ticketlab.methods.context import Paused
    from ticketlab.plugins import load_plugins

    load_plugins(plugins, cwd=plugin_dir)

    if threads is not None:
        set_threads(threads)
    parsed = [ExperimentSpec.model_validate(data) for data in specs]

    def log_for(spec: ExperimentSpec) -> Callable[[str], None]:
        if not tensorboard:
            return lambda message: None
        from ticketlab.analysis.tensorboard import tensorboard_log

        return tensorboard_log(Path(root) / spec.run_id())

    started = time.perf_counter()
    results = run_experiments(
        parsed, root, device=device, data_root=data_root, log_for=log_for, return_exceptions=True, budget=budget
    )
    wall = (time.perf_counter() - started) / max(1, len(parsed))  # stacked runs share their time
    outcomes = []
    for spec, result in zip(parsed, results):
        if isinstance(result, Paused):
            outcomes.append(Outcome(spec.run_id(), spec.non_default(), False, "", wall, paused=True))
        elif isinstance(result, BaseException):
            last = traceback.format_exception_only(type(result), result)[-1].strip()
            outcomes.append(Outcome(spec.run_id(), spec.non_default(), False, last, wall))
        else:
            outcomes.append(Outcome(spec.run_id(), spec.non_default(), True, "", wall))
    return outcomes


def lost(batch: list[dict[str, Any]], why: str) -> list[Outcome]:
    """Every run of a batch failed for one reason (its worker died, its results were damaged)."""
    out = []
    for data in batch:
        spec = ExperimentSpec.model_validate(data)
        out.append(Outcome(spec.run_id(), spec.non_default(), False, why))
    return out
