"""The order a sweep's batches run in: each shared dense baseline (``ticketlab.experiment.dense``) is
trained by one batch, and the batches of the other runs that need it wait until that batch has ended, so
the dense network is trained once even when its runs go to different processes or machines.

Runs are split into leaders (the first pending run of each dense baseline not yet stored, and every run
whose baseline is stored or not shared) and followers (the others); each set is batched as before, and a
follower batch waits for the leader batches of its baselines. A leader batch that fails releases its
followers, which then train the dense level themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ticketlab.config.spec import ExperimentSpec
from ticketlab.experiment.dense import dense_name, dense_store
from ticketlab.experiment.progress import ITERATIVE
from ticketlab.methods.registry import resolve_method
from ticketlab.schedules import iterative_densities

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

    def submit(self, batch: list[dict[str, Any]]) -> Any: ...

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
) -> None:
    """Run every batch once the batches it waits for have ended, at most ``pool.capacity`` at a time, and
    call ``done(outcome)`` as each run ends. ``take(batch)`` is asked, just before a batch starts, which of
    its runs to run now (a sweep claims them then, so that sweeps sharing a folder share its runs); a
    batch left empty ends at once."""
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
            running[pool.submit(batch)] = i
            if submitted is not None:
                submitted(batch)
            continue
        if not running:
            raise RuntimeError(f"batches {waiting} wait for batches that never run")  # deps point backwards: a bug
        handle, outcomes = pool.next_done(list(running))
        ended.add(running.pop(handle))
        for outcome in outcomes:
            done(outcome)


def expected_levels(spec: ExperimentSpec) -> int:
    """Levels a run writes (dense level included): its pruning schedule's for iterative methods, else one
    per target density (supermask's threshold points are not known before it runs: counted the same way)."""
    key, _ = resolve_method(spec.method)
    if key in ITERATIVE:
        try:
            return 1 + len(iterative_densities(spec.densities, spec.method.K))
        except ValueError:  # reported when the run starts
            pass
    return 1 + len(spec.densities)
