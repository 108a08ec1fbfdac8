"""Running a sweep's grid points: batches of runs handed to local worker processes or Ray tasks, each batch
trained stacked (``ticketlab.experiment.lockstep``); finished runs are skipped. A local sweep's processes,
threads and runs per batch are the layout measured fastest for its runs on this machine (``choose``).

Each run computed is first claimed (``claims``), so several sweeps may share one folder: a run claimed by
another sweep is skipped, waited for, and taken over if its owner dies. Runs sharing a dense baseline wait
for the batch that trains it (``plan``). Ray tasks compute on their own node and send their results back
(``remote``), so the cluster's nodes need not share a filesystem."""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ticketlab.config.spec import ExperimentSpec
from ticketlab.experiment.lockstep import stack_key
from ticketlab.files import atomic_write_json
from ticketlab.hardware.device import resolve_device
from ticketlab.plugins import loaded
from ticketlab.store import RunDir
from ticketlab.sweep.batch import Outcome, lost, run_batch
from ticketlab.sweep.choose import Chosen, choose_layout
from ticketlab.sweep.claims import DEFAULT_TTL, ClaimKeeper, Owner, read_claim
from ticketlab.sweep.grid import SweepSpec, expand
from ticketlab.sweep.layout import MAX_STACK, Layout
from ticketlab.sweep.plan import Pool, balance, dispatch, plan, remaining_levels

__all__ = ["MAX_STACK", "Outcome", "SweepReport", "batches", "run_batch", "run_sweep"]
FAILED_FILE = "failed.json"  # the last failure of an unfinished run: its one-line reason, host and time


def batches(
    specs: Sequence[ExperimentSpec], size: int | Callable[[ExperimentSpec], int | None] | None, workers: int = 1
) -> list[list[ExperimentSpec]]:
    """Group runs that can train stacked (``stack_key``: data, architecture, recipe) into batches of at most
    ``size``: the unit a worker receives. ``size=None`` shares each group evenly among ``workers`` in
    batches of at most ``MAX_STACK``; a callable gives the size per group from its first spec."""
    groups: dict[str, list[ExperimentSpec]] = {}
    for spec in specs:
        groups.setdefault(stack_key(spec), []).append(spec)
    out: list[list[ExperimentSpec]] = []
    for group in groups.values():
        n = (size(group[0]) if callable(size) else size) or min(MAX_STACK, math.ceil(len(group) / workers))
        out.extend(group[i : i + n] for i in range(0, len(group), n))
    return out


# -- running ------------------------------------------------------------------------------------------
@dataclass
class SweepReport:
    total: int  # distinct runs in the grid
    skipped: int  # already finished before this call
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def elsewhere(self) -> list[Outcome]:
        """Runs another sweep on the same folder finished while this one waited for them."""
        return [o for o in self.outcomes if o.elsewhere]


OnDone = Callable[[Outcome], None]


def run_sweep(
    sweep: SweepSpec,
    *,
    out: str | os.PathLike | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_done: OnDone | None = None,
    data_root: str | os.PathLike | None = None,
    on_wait: Callable[[dict[str, Owner | None]], None] | None = None,
    on_submit: Callable[[list[str]], None] | None = None,
    claim_ttl: float = DEFAULT_TTL,
    poll: float = 2.0,
    log: Callable[[str], None] | None = None,
) -> SweepReport:  # long: the claim / dispatch rounds share the report and the callbacks
    """Run every unfinished grid point with the sweep's executor. ``on_start(pending, total)`` is called
    once, ``on_submit(run_ids)`` as runs are handed to a worker, ``on_done(outcome)`` as each run ends (in
    completion order), ``on_wait(held)`` (run id -> its claim's owner) when a run is first found claimed by
    another sweep and skipped; such runs are checked every ``poll`` seconds until they are finished
    (reported with ``elsewhere``) or free to take over. ``log`` hears the layout chosen (``sweep.choose``)."""
    # long: the sweep's stages in order: expand, plan, claim, run, wait for held runs
    root = str(out if out is not None else sweep.out)
    specs = expand(sweep)
    pending = [s for s in specs if not RunDir(Path(root) / s.run_id()).finished]
    report = SweepReport(total=len(specs), skipped=len(specs) - len(pending))
    if on_start is not None:
        on_start(len(pending), len(specs))
    if not pending:
        return report
    keeper = ClaimKeeper(claim_ttl)
    ended: set[str] = set()  # runs that finished or failed here: a later piece of theirs has nothing to do

    spent: dict[str, float] = {}  # seconds of a run's paused pieces, added to its finishing piece's

    def done(outcome: Outcome) -> None:
        if outcome.paused:  # its next piece resumes it: still claimed, not ended
            spent[outcome.run_id] = spent.get(outcome.run_id, 0.0) + outcome.wall_time
            return
        if outcome.run_id in spent:
            outcome = replace(outcome, wall_time=outcome.wall_time + spent.pop(outcome.run_id))
        ended.add(outcome.run_id)
        if not outcome.elsewhere:
            _record_failure(Path(root) / outcome.run_id, outcome)
            keeper.release(Path(root) / outcome.run_id)
        report.outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)

    size: int | Callable[[ExperimentSpec], int | None] | None
    chosen = None
    if sweep.executor == "ray":
        workers, threads = sweep.workers or 8, sweep.threads_per_worker or 1
        size = sweep.batch or (None if resolve_device(sweep.device).type == "cuda" else 1)
    else:  # measured (or fixed by the sweep): processes x threads x runs stacked per task
        chosen = choose_layout(
            sweep, pending, data_root=None if data_root is None else str(data_root), log=log or _quiet
        )
        workers, threads, size = chosen.processes, chosen.threads, chosen.size

    def make_batches(chosen: Sequence[ExperimentSpec]) -> list[list[ExperimentSpec]]:
        return batches(chosen, size, workers)

    kwargs = dict(
        device=sweep.device,
        threads=threads,
        tensorboard=sweep.tensorboard,
        data_root=None if data_root is None else str(data_root),
        plugins=loaded(),
        plugin_dir=os.getcwd(),
    )
    submitted = (
        None
        if on_submit is None
        else (lambda batch: on_submit([ExperimentSpec.model_validate(d).run_id() for d in batch]))
    )
    try:
        with _open_pool(sweep, root, pending, kwargs, workers, threads) as pool:
            queue, reported = pending, set()
            while queue:
                held: dict[str, ExperimentSpec] = {}
                take = _claimer(root, keeper, done, held, reported, on_wait, claim_ttl, ended)
                work, deps = plan(queue, root, make_batches)
                left = [max(remaining_levels(s, root) for s in b) for b in work]
                cut = balance(work, deps, pool.capacity, left, _per_level(work, chosen, workers, threads))
                heads = [(b, n) for b, n in zip(cut.work, cut.budgets) if n is not None]
                if heads and log is not None:
                    of = {id(b): n for b, n in zip(work, left)}
                    log(
                        f"so that the {pool.capacity} workers finish together: "
                        + "; ".join(
                            f"run{'s' if len(b) > 1 else ''} {', '.join(s.run_id() for s in b)} "
                            f"{'pause' if len(b) > 1 else 'pauses'} after {n} of {of[id(b)]} levels, then "
                            f"{'resume' if len(b) > 1 else 'resumes'} on the worker that frees first"
                            for b, n in heads
                        )
                    )
                before = len(report.outcomes)
                dispatch(
                    [[s.model_dump(mode="json") for s in b] for b in cut.work],
                    cut.deps,
                    pool,
                    done,
                    take=take,
                    submitted=submitted,
                    budgets=cut.budgets,
                )
                if held and len(report.outcomes) == before:  # nothing ended here: the others' runs are running
                    time.sleep(poll)
                queue = list(held.values())
    finally:
        keeper.close()
    return report


def _claimer(
    root: str,
    keeper: ClaimKeeper,
    done: OnDone,
    held: dict[str, ExperimentSpec],
    reported: set[str],
    on_wait: Callable[[dict[str, Owner | None]], None] | None,
    ttl: float,
    ended: set[str] | None = None,
) -> Callable[[list[dict]], list[dict]]:
    """``take`` for ``dispatch``: the runs of a batch this sweep claims now. A run that already ended here
    (a tail piece of a run whose head finished it, or failed) is left out; a run another sweep finished
    meanwhile is reported done; one it holds goes to ``held`` (and ``on_wait`` hears of it the first time).
    A run this sweep still holds (its paused head's claim) is taken again."""

    def take(batch: list[dict]) -> list[dict]:
        keep = []
        for data in batch:
            spec = ExperimentSpec.model_validate(data)
            path = Path(root) / spec.run_id()
            if ended is not None and spec.run_id() in ended:
                continue
            if keeper.holds(path):
                keep.append(data)
            elif RunDir(path).finished:
                done(Outcome(spec.run_id(), spec.non_default(), True, elsewhere=True))
            elif keeper.claim(path):
                keep.append(data)
            else:
                held[spec.run_id()] = spec
                if on_wait is not None and spec.run_id() not in reported:
                    reported.add(spec.run_id())
                    on_wait({run_id: read_claim(Path(root) / run_id, ttl) for run_id in held})
        return keep

    return take


def _quiet(message: str) -> None:
    pass


def _per_level(work: list[list[ExperimentSpec]], chosen: Chosen | None, processes: int, threads: int) -> list[float]:
    """Each batch's measured seconds per step of its stack in the chosen layout (a level's time up to the
    steps per level), or, unless every batch has one, each batch's number of runs (Ray, a fixed layout)."""
    measured = []
    for batch in work:
        decision = chosen.decisions.get(stack_key(batch[0])) if chosen is not None else None
        rows = decision.rows if decision is not None else {}
        sizes = (Layout(processes, threads, len(batch)), decision.layout) if decision is not None else ()
        measured.append(next((rows[layout] for layout in sizes if layout in rows), None))
    if all(seconds is not None for seconds in measured):
        return [float(seconds) for seconds in measured]  # type: ignore[arg-type]
    return [float(len(batch)) for batch in work]


def _record_failure(run: Path, outcome: Outcome) -> None:
    """``failed.json`` in a run that failed (what ``ticketlab status`` shows), removed once it succeeds."""
    if outcome.ok:
        (run / FAILED_FILE).unlink(missing_ok=True)
    elif run.is_dir():
        atomic_write_json(
            run / FAILED_FILE,
            {"error": outcome.error, "host": socket.gethostname(), "node": outcome.node, "time": time.time()},
        )


@contextmanager
def _open_pool(
    sweep: SweepSpec, root: str, pending: list[ExperimentSpec], kwargs: dict, workers: int, threads: int
) -> Iterator[Pool]:
    if sweep.executor != "ray":
        pool = LocalPool(workers, root, kwargs)
        try:
            yield pool
        finally:
            pool.close()
        return
    try:
        import ray
    except ImportError:
        raise ValueError("executor 'ray' needs Ray: pip install 'ticketlab[ray]'") from None
    from ticketlab.sweep.remote import RayPool

    started_here = False
    if not ray.is_initialized():  # the instance this process is connected to, else ``address``, else a new one
        try:
            ray.init(address=sweep.address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError) as exc:  # no cluster there: a user's setting, not a bug
            raise ValueError(
                f"executor ray: could not connect to Ray at address {sweep.address!r} ({exc}); start a cluster "
                "(ray start --head) or leave out the address to start a local instance"
            ) from None
        started_here = True
    try:
        pool = RayPool(root, pending, threads, kwargs, kwargs["data_root"])
        pool.capacity = max(workers, int(ray.cluster_resources().get("CPU", 1)) // threads)
        yield pool
    finally:
        if started_here:
            ray.shutdown()


class LocalPool:
    """Worker processes (spawned: no inherited torch threads or CUDA state), each with
    ``threads_per_worker`` intra-op threads, so workers x threads <= cores. A worker whose sweep dies
    (SIGKILL) exits too, so that no orphan keeps computing a run another sweep takes over."""

    def __init__(self, workers: int, root: str, kwargs: dict) -> None:
        self.workers, self.root, self.kwargs = workers, root, kwargs
        self.capacity = workers
        self.pool: Any = None
        self.batches: dict[Any, list[dict]] = {}

    def submit(self, batch: list[dict], budget: int | None = None) -> Any:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        for _ in range(2):
            if self.pool is None:
                self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"))
            try:
                kwargs = self.kwargs if budget is None else {**self.kwargs, "budget": budget}
                future = self.pool.submit(_local_batch, batch, self.root, os.getpid(), kwargs)
                break
            except BrokenProcessPool:  # a worker died earlier: a fresh pool for the batches still to run
                self.pool = None
        self.batches[future] = batch
        return future

    def next_done(self, handles: list[Any]) -> tuple[Any, list[Outcome]]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        ready, _ = wait(handles, return_when=FIRST_COMPLETED)
        future = next(iter(ready))
        batch = self.batches.pop(future)
        try:
            return future, future.result()
        except BrokenProcessPool as exc:  # a worker died (killed, out of memory): its runs failed
            return future, lost(batch, f"worker process died: {exc}")

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def _local_batch(batch: list[dict], root: str, parent: int, kwargs: dict) -> list[Outcome]:
    _exit_with(parent)
    return run_batch(batch, root, **kwargs)


_WATCHING: set[int] = set()


def _exit_with(parent: int) -> None:
    """End this worker process as soon as its parent (the sweep) is gone."""
    if parent in _WATCHING:
        return
    _WATCHING.add(parent)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="ticketlab-parent").start()
