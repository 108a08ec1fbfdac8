"""The order a sweep's batches run in: each shared dense baseline (``ticketlab.experiment.dense``) is
trained by one batch, and the batches of the other runs that need it wait until that batch has ended, so
the dense network is trained once even when its runs go to different processes or machines.

Runs are split into leaders (the first pending run of each dense baseline not yet stored, and every run
whose baseline is stored or not shared) and followers (the others); each set is batched as before, and a
follower batch waits for the leader batches of its baselines. A leader batch that fails releases its
followers, which then train the dense level themselves.

A job of fewer batches than a multiple of the workers (3 runs on 2 processes) would leave workers idle at
its end, since one run's levels go one after another. :func:`balance` cuts such batches at a level
boundary instead (McNaughton's wrap-around rule, with each cut batch's first levels before its last ones):
the *head* computes that many levels and pauses (``Job.budget``), the *tail* resumes from them later on
another worker, so every worker has an equal share of levels. 3 runs of L levels on 2 workers end after
1.5 L levels' time, not 2 L. A paused and resumed run writes what an uninterrupted one writes (tested per
method).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ticketlab.config.spec import ExperimentSpec
from ticketlab.experiment.dense import dense_name, dense_store
from ticketlab.experiment.progress import ITERATIVE
from ticketlab.methods.registry import resolve_method
from ticketlab.schedules import iterative_densities
from ticketlab.store import RunDir

Batch = list[ExperimentSpec]


def plan(
    specs: Sequence[ExperimentSpec], root: str | Path, make_batches: Callable[[Sequence[ExperimentSpec]], list[Batch]]
) -> tuple[list[Batch], list[set[int]]]:
    """The batches and, for each, the indices of the batches it waits for (always earlier ones)."""
    leaders: list[ExperimentSpec] = []
    followers: list[ExperimentSpec] = []
    led: set[str] = set()
    for spec in specs:
        name, shared = dense_name(spec), dense_store(root, spec)
        if name is None or shared is None or shared.done:
            leaders.append(spec)
        elif name in led:
            followers.append(spec)
        else:
            led.add(name)
            leaders.append(spec)
    lead, follow = make_batches(leaders) if leaders else [], make_batches(followers) if followers else []
    where: dict[str, int] = {}
    for i, batch in enumerate(lead):
        for spec in batch:
            name = dense_name(spec)
            if name in led:
                where.setdefault(name, i)
    deps = [set() for _ in lead] + [{where[n] for s in b if (n := dense_name(s)) in where} for b in follow]
    return lead + follow, deps


class Pool(Protocol):
    """Where batches run: ``submit`` starts one and returns a handle, ``next_done`` waits for one of the
    given handles to end and returns it with its outcomes; ``capacity`` batches run at a time."""

    capacity: int

    def submit(self, batch: list[dict[str, Any]], budget: int | None = None) -> Any: ...

    def next_done(self, handles: list[Any]) -> tuple[Any, list[Any]]: ...


Json = list[dict[str, Any]]


def dispatch(
    work: list[Json],
    deps: list[set[int]],
    pool: Pool,
    done: Callable[[Any], None],
    *,
    take: Callable[[Json], Json] | None = None,
    submitted: Callable[[Json], None] | None = None,
    budgets: Sequence[int | None] | None = None,
) -> None:
    """Run every batch once the batches it waits for have ended, at most ``pool.capacity`` at a time, and
    call ``done(outcome)`` as each run ends. ``take(batch)`` is asked, just before a batch starts, which of
    its runs to run now (a sweep claims them then, so that sweeps sharing a folder share its runs); a
    batch left empty ends at once. ``budgets[i]``, where not None, is the levels batch ``i`` computes before
    its runs pause (``pool.submit(batch, budget=...)``; :func:`balance`)."""
    waiting = list(range(len(work)))
    running: dict[Any, int] = {}
    ended: set[int] = set()
    while waiting or running:
        ready = [i for i in waiting if deps[i] <= ended]
        if ready and len(running) < max(1, pool.capacity):
            i = ready[0]
            waiting.remove(i)
            batch = work[i] if take is None else take(work[i])
            if not batch:
                ended.add(i)
                continue
            budget = None if budgets is None else budgets[i]
            running[pool.submit(batch) if budget is None else pool.submit(batch, budget=budget)] = i
            if submitted is not None:
                submitted(batch)
            continue
        if not running:
            raise RuntimeError(f"batches {waiting} wait for batches that never run")  # deps point backwards: a bug
        handle, outcomes = pool.next_done(list(running))
        ended.add(running.pop(handle))
        for outcome in outcomes:
            done(outcome)


def remaining_levels(spec: ExperimentSpec, root: str | Path) -> int:
    """Levels of ``spec``'s run still to compute under ``root`` (at least 1)."""
    return max(1, expected_levels(spec) - len(RunDir(Path(root) / spec.run_id()).levels()))


def expected_levels(spec: ExperimentSpec) -> int:
    """Levels a run writes (dense level included): its pruning schedule's for iterative methods, else one
    per target density (supermask's threshold points are not known before it runs: counted the same way)."""
    return len(level_densities(spec))


def level_densities(spec: ExperimentSpec) -> list[float]:
    """The density of each level a run writes, dense level (1) first: its pruning schedule's for iterative
    methods, else its target densities (a method whose levels are not known before it runs: the same)."""
    key, _ = resolve_method(spec.method)
    if key in ITERATIVE:
        try:
            return [1.0, *iterative_densities(spec.densities, spec.method.K)]
        except ValueError:  # reported when the run starts
            pass
    return [1.0, *spec.densities]


@dataclass(frozen=True)
class Balanced:
    """``balance``'s answer: the pieces to dispatch in the order of their planned start, what each waits for
    (a tail its head), and each piece's level budget (None: to the run's end)."""

    work: list[Batch]
    deps: list[set[int]]
    budgets: list[int | None]


def balance(
    work: list[Batch], deps: list[set[int]], workers: int, levels: Sequence[int], per_level: Sequence[float]
) -> Balanced:
    """Cut batches at level boundaries so ``workers`` workers finish together (see the module docstring).
    ``levels[i]``: the levels batch ``i`` still has to compute (>= 1); ``per_level[i]``: the time of one of
    them (any unit, the same for all). Only a job whose batches wait for nothing is cut (a shared dense
    baseline's followers keep ``plan``'s order); with no more batches than workers the work comes back as it
    is.

    Worker w's share of the batches laid end to end is ``[w, w + 1) x share``; a batch across a boundary is
    cut there, its head (first levels) first on the worker before the boundary and its tail last on the one
    after. The pieces come back in the order of their planned start, which ``dispatch`` then follows as
    workers free up."""
    unchanged = Balanced(list(work), [set(d) for d in deps], [None] * len(work))
    if workers <= 1 or len(work) <= workers or any(deps):
        return unchanged
    per = [max(t, 1e-12) for t in per_level]
    share = max(max(n * t for n, t in zip(levels, per)), sum(n * t for n, t in zip(levels, per)) / workers)
    lanes: list[list[tuple[int, int | None, float]]] = [[] for _ in range(workers)]  # (batch, budget, seconds)
    tails: dict[int, tuple[int, float]] = {}  # worker -> the tail it ends with
    start = 0.0
    for i, (n, t) in enumerate(zip(levels, per)):
        w = min(workers - 1, math.floor(start / share + 1e-9))
        end = start + n * t
        head = round(((w + 1) * share - start) / t) if w + 1 < workers and (w + 1) * share < end - 1e-9 else 0
        if 0 < head < n:
            lanes[w].insert(0, (i, head, head * t))  # first on this worker: the run's first levels
            tails[w + 1] = (i, (n - head) * t)  # last on the next
        else:
            lanes[w].append((i, None, n * t))
        start = end
    planned: list[tuple[float, int, int, int | None, bool]] = []  # (start, worker, batch, budget, is a tail)
    for w, lane in enumerate(lanes):
        clock = 0.0
        for i, budget, seconds in lane:
            planned.append((clock, w, i, budget, False))
            clock += seconds
        if w in tails:
            planned.append((clock, w, tails[w][0], None, True))
    planned.sort(key=lambda p: (p[0], p[1]))
    head_at = {i: k for k, (_, _, i, budget, _) in enumerate(planned) if budget is not None}
    return Balanced(
        [work[i] for _, _, i, _, _ in planned],
        [{head_at[i]} if tail else set() for _, _, i, _, tail in planned],
        [budget for _, _, _, budget, _ in planned],
    )
