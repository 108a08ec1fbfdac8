"""Running a sweep's grid points: batches of runs handed to local worker processes or Ray tasks, each batch
trained stacked where that pays (``ticketlab.experiment.lockstep``); finished runs are skipped."""

from __future__ import annotations

import math
import os
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from ticketlab.config.spec import ExperimentSpec
from ticketlab.plugins import loaded
from ticketlab.store import RunDir

from ticketlab.sweep.grid import SweepSpec, expand

MAX_STACK = 16  # runs per task at most when stacking by default (CUDA; MLPs on OpenBLAS CPUs)


def default_batch(device: str, model: str | None = None) -> int | None:
    """``None`` (stack: each architecture's runs shared evenly among the workers) or 1 (one run per task).

    Stacking pays on CUDA, where one small model cannot fill the device, and for MLPs on CPUs where
    ``ticketlab.hardware.blas`` runs their layers on OpenBLAS's batched sgemm, where stacking beat one model
    per one-thread worker. Other models on CPU train one per one-thread worker, which beat stacking for them
    (figures: benchmarks/README.md).
    """
    from ticketlab.hardware import blas as gemm
    from ticketlab.hardware.device import resolve_device
    from ticketlab.models import MODELS
    from ticketlab.models.mlp import lenet300, mlp
    from ticketlab.registry import UnknownNameError

    if resolve_device(device).type == "cuda":
        return None
    try:
        is_mlp = model is not None and MODELS.get(model) in (mlp, lenet300)
    except UnknownNameError:  # reported where the spec is checked
        is_mlp = False
    return None if is_mlp and gemm.active() else 1


def batches(
    specs: Sequence[ExperimentSpec], size: int | None | Callable[[ExperimentSpec], int | None], workers: int = 1
) -> list[list[ExperimentSpec]]:
    """Group runs that share an architecture and data (model, dataset, recipe) into batches of at most
    ``size``: the unit a worker receives, whose runs train stacked. ``size=None`` shares each group
    evenly among ``workers`` in batches of at most ``MAX_STACK``; a callable gives the size per group
    from its first spec."""
    groups: dict[str, list[ExperimentSpec]] = {}
    for spec in specs:
        key = f"{spec.model}|{spec.dataset}|{spec.val_size}|{spec.split_seed}|{spec.recipe.model_dump_json()}"
        groups.setdefault(key, []).append(spec)
    out: list[list[ExperimentSpec]] = []
    for group in groups.values():
        n = (size(group[0]) if callable(size) else size) or min(MAX_STACK, math.ceil(len(group) / workers))
        out.extend(group[i : i + n] for i in range(0, len(group), n))
    return out


# -- running ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """How one run of a sweep ended."""

    run_id: str
    spec: dict[str, Any]  # the non-default fields, to name the run in reports
    ok: bool
    error: str = ""
    wall_time: float = 0.0


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
) -> list[Outcome]:
    """Run a batch of specs (JSON form) in this process; a failure is recorded and the other runs go on.
    Runs that share an architecture and recipe train stacked (``ticketlab.experiment.lockstep.run_experiments``).
    This is the worker's unit, kept plain so it pickles for processes and Ray. ``plugins`` (and the installed
    packages' entry points) are imported first, as the process that started the sweep did (``ticketlab.plugins``)."""
    from ticketlab.experiment.lockstep import run_experiments
    from ticketlab.hardware.device import set_threads
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
    results = run_experiments(parsed, root, device=device, data_root=data_root, log_for=log_for, return_exceptions=True)
    wall = (time.perf_counter() - started) / max(1, len(parsed))  # stacked runs share their time
    outcomes = []
    for spec, result in zip(parsed, results):
        if isinstance(result, BaseException):
            last = traceback.format_exception_only(type(result), result)[-1].strip()
            outcomes.append(Outcome(spec.run_id(), spec.non_default(), False, last, wall))
        else:
            outcomes.append(Outcome(spec.run_id(), spec.non_default(), True, "", wall))
    return outcomes


@dataclass
class SweepReport:
    total: int  # distinct runs in the grid
    skipped: int  # already finished before this call
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


OnDone = Callable[[Outcome], None]


def default_workers(threads_per_worker: int) -> int:
    """Processes that fill the machine's cores without oversubscribing them."""
    return max(1, (os.cpu_count() or 1) // threads_per_worker)


def run_sweep(
    sweep: SweepSpec,
    *,
    out: str | os.PathLike | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_done: OnDone | None = None,
    data_root: str | os.PathLike | None = None,
) -> SweepReport:
    """Run every unfinished grid point with the sweep's executor. ``on_start(pending, total)`` is called
    once, ``on_done(outcome)`` as each run ends (in completion order)."""
    root = str(out if out is not None else sweep.out)
    specs = expand(sweep)
    pending = [s for s in specs if not RunDir(Path(root) / s.run_id()).finished]
    report = SweepReport(total=len(specs), skipped=len(specs) - len(pending))
    if on_start is not None:
        on_start(len(pending), len(specs))
    if not pending:
        return report

    def done(outcome: Outcome) -> None:
        report.outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)

    workers = sweep.workers or (8 if sweep.executor == "ray" else default_workers(sweep.threads_per_worker))
    size = sweep.batch if sweep.batch is not None else (lambda spec: default_batch(sweep.device, spec.model))
    work = [[s.model_dump(mode="json") for s in b] for b in batches(pending, size, workers)]
    kwargs = dict(
        device=sweep.device, threads=sweep.threads_per_worker, tensorboard=sweep.tensorboard,
        data_root=None if data_root is None else str(data_root), plugins=loaded(), plugin_dir=os.getcwd(),
    )
    if sweep.executor == "ray":
        _run_ray(work, root, sweep, kwargs, done)
    else:
        _run_local(work, root, sweep, kwargs, done)
    return report


def _lost(batch: list[dict[str, Any]], why: str) -> list[Outcome]:
    out = []
    for data in batch:
        spec = ExperimentSpec.model_validate(data)
        out.append(Outcome(spec.run_id(), spec.non_default(), False, why))
    return out


def _run_local(work: list[list[dict]], root: str, sweep: SweepSpec, kwargs: dict, done: OnDone) -> None:
    """Worker processes (spawned: no inherited torch threads or CUDA state), each with
    ``threads_per_worker`` intra-op threads, so workers x threads <= cores."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    workers = sweep.workers or default_workers(sweep.threads_per_worker)
    workers = min(workers, len(work))
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(run_batch, batch, root, **kwargs): batch for batch in work}
        for future in as_completed(futures):
            try:
                outcomes = future.result()
            except BrokenProcessPool as exc:  # a worker died (killed, out of memory): its runs failed
                outcomes = _lost(futures[future], f"worker process died: {exc}")
            for outcome in outcomes:
                done(outcome)


def _run_ray(work: list[list[dict]], root: str, sweep: SweepSpec, kwargs: dict, done: OnDone) -> None:
    """One Ray task per batch, each reserving ``threads_per_worker`` CPUs. Uses the Ray instance this
    process is already connected to, else ``address`` (``auto`` = the local cluster), else starts one."""
    try:
        import ray
    except ImportError:
        raise ValueError("executor 'ray' needs Ray: pip install 'ticketlab[ray]'") from None

    started_here = False
    if not ray.is_initialized():
        try:
            ray.init(address=sweep.address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError) as exc:  # no cluster there: a user's setting, not a bug
            raise ValueError(
                f"executor ray: could not connect to Ray at address {sweep.address!r} ({exc}); start a cluster "
                "(ray start --head) or leave out the address to start a local instance"
            ) from None
        started_here = True
    try:
        task = ray.remote(num_cpus=sweep.threads_per_worker)(run_batch)
        refs = {task.remote(batch, str(Path(root).resolve()), **kwargs): batch for batch in work}
        remaining = list(refs)
        while remaining:
            ready, remaining = ray.wait(remaining, num_returns=1)
            try:
                outcomes = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - a lost worker fails its batch only
                outcomes = _lost(refs[ready[0]], f"ray task failed: {type(exc).__name__}: {exc}")
            for outcome in outcomes:
                done(outcome)
    finally:
        if started_here:
            ray.shutdown()
