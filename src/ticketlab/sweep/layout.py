"""How a multi-run job fills the machine: processes x threads x stacked K, measured, never assumed.

A *layout* ``PxTxK`` runs a job's runs in ``P`` worker processes of ``T`` intra-op threads each, every
worker training ``K`` runs stacked (``ticketlab.training.stacked.train_many``; K = 1: one run at a time).
Which layout is fastest depends on the processor, its BLAS, the architecture, the batch size and the
optimiser, and no rule of thumb got it right on two machines of the same kind (issue 21). So the first
time a job meets a workload on a machine, the candidate layouts are timed for a few dozen steps
(``ticketlab.sweep.measure``) and the seconds per step of each are cached in the user cache, one file per
(machine, workload) key; later jobs read them back. The choice for a job of R runs is the candidate whose
estimated wall time for R runs (:func:`job_seconds`) is least, so a job smaller than the machine (3 runs
on 2 cores, one run) still fills it: its candidates include one process with all the threads, stacking
all its runs, and a sweep shares a job's batches equally among its workers by cutting runs at level
boundaries (``sweep.plan.balance``).

Overrides: ``layout: 2x1x4`` in a sweep file or ``--layout`` (or ``$TICKETLAB_LAYOUT``) fix the layout,
``remeasure`` times the candidates again and replaces the cached rows (e.g. measured at a busy hour);
``workers``, ``threads_per_worker`` and ``batch`` fix one part each and the others are measured.
Cache: ``$TICKETLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/ticketlab``, else ``~/.cache/ticketlab``. A cache
file that does not parse, fails its checksum or names another key is reported, never used, and replaced
by a fresh measurement.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ticketlab.files import CorruptFileError, keyed_file, read_keyed_json, user_cache_dir, write_keyed_json
from ticketlab.hardware import blas
from ticketlab.hardware.environment import cpu_model

MAX_STACK = 16  # runs stacked in one worker at most
STACKS = (1, 2, 4, 8, 16)  # stack sizes tried, besides the one that puts all of a worker's runs in one stack
LAYOUT_ENV = "TICKETLAB_LAYOUT"
CACHE_VERSION = 1
_PATTERN = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)\s*$", re.IGNORECASE)


@dataclass(frozen=True, order=True)
class Layout:
    """``processes`` workers x ``threads`` intra-op threads each x ``stack`` runs trained stacked per worker."""

    processes: int
    threads: int
    stack: int

    def __str__(self) -> str:
        return f"{self.processes}x{self.threads}x{self.stack}"

    @classmethod
    def parse(cls, text: str, where: str = "layout") -> Layout:
        """``"2x1x4"`` -> Layout(2, 1, 4); a clear error naming ``where`` otherwise."""
        match = _PATTERN.match(str(text))
        if match is None or min(int(g) for g in match.groups()) < 1:
            raise ValueError(
                f"{where} must be PROCESSESxTHREADSxSTACK with integers >= 1, e.g. 2x1x4 (or auto, remeasure); "
                f"got {str(text)!r}"
            )
        return cls(*(int(g) for g in match.groups()))


MODES = ("auto", "remeasure")  # measured, from the cache where it has the rows; measured again, cache replaced


def env_layout() -> Layout | str | None:
    """What ``$TICKETLAB_LAYOUT`` asks for: a layout, ``"remeasure"``, or None (unset, empty or ``auto``)."""
    text = os.environ.get(LAYOUT_ENV, "").strip()
    if text.lower() in ("", "auto"):
        return None
    return "remeasure" if text.lower() == "remeasure" else Layout.parse(text, LAYOUT_ENV)


# -- candidates and the choice -----------------------------------------------------------------------
def candidates(
    runs: int,
    cores: int,
    cuda: bool = False,
    *,
    processes: int | None = None,
    threads: int | None = None,
    stack: int | None = None,
) -> list[Layout]:
    """The layouts worth timing for ``runs`` runs on ``cores`` cores: every process count that is a power of
    two or all the cores and at most the runs (more would idle), each with the threads that fill the cores
    and every power of two below that, each with the stack sizes of :data:`STACKS` and the one that gives
    every worker one stack. On CUDA one process of one thread. ``processes``/``threads``/``stack``, when
    given, fix that part (an override)."""
    runs, cores = max(1, runs), max(1, cores)
    counts = [1] if cuda else ([p for p in _powers_and(cores) if p <= runs] or [1])
    if processes is not None:
        counts = [processes]
    out = []
    for p in counts:
        if threads is not None:
            thread_counts = [threads]
        elif cuda:
            thread_counts = [1]
        else:  # the threads that fill the cores, and fewer (a loaded machine can run faster on fewer)
            thread_counts = _powers_and(max(1, cores // p))
        per_worker = min(MAX_STACK, math.ceil(runs / p))
        ks = {k for k in STACKS if k <= per_worker} | {per_worker}
        for t in thread_counts:
            for k in sorted({stack} if stack is not None else ks):
                out.append(Layout(p, t, k))
    return out


def _powers_and(n: int) -> list[int]:
    """The powers of two up to ``n``, and ``n``."""
    return sorted({2**i for i in range(n.bit_length()) if 2**i <= n} | {n})


def job_seconds(layout: Layout, seconds_per_step: float, runs: int) -> float:
    """Estimated seconds per training step of a job of ``runs`` runs: its ``ceil(runs / stack)`` batches
    share the ``processes`` workers equally, since a sweep cuts a batch at a level boundary where the
    workers would otherwise not finish together (``sweep.plan.balance``: 3 batches on 2 workers take 1.5
    batches' time), and no worker takes less than one batch's time (measured with every worker busy)."""
    batches = math.ceil(max(1, runs) / layout.stack)
    return max(1.0, batches / layout.processes) * seconds_per_step


def choose(rows: Mapping[Layout, float], runs: int, among: list[Layout] | None = None) -> Layout:
    """The layout of ``among`` (default: every row) with the least estimated job time for ``runs`` runs,
    from measured seconds per step; ties go to fewer processes, then fewer threads, then smaller stacks."""
    pool = [layout for layout in (among if among is not None else list(rows)) if layout in rows]
    if not pool:
        raise ValueError("choose: no measured layout among the candidates")
    return min(pool, key=lambda layout: (job_seconds(layout, rows[layout], runs), layout))


# -- the cache ---------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """Where measured layouts are kept (see the module docstring)."""
    return user_cache_dir()


def machine_id(device: torch.device) -> dict[str, Any]:
    """What makes timings of one machine differ from another's: processor, cores, torch, GEMM backend, device."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 1,
        "torch": torch.__version__,
        "gemm": blas.backend().name,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }


def cache_key(machine: Mapping[str, Any], workload: Mapping[str, Any]) -> dict[str, Any]:
    return {"version": CACHE_VERSION, "machine": dict(machine), "workload": dict(workload)}


def cache_file(key: Mapping[str, Any], root: Path | None = None) -> Path:
    return keyed_file((root if root is not None else cache_dir()) / "layouts", key)


class CorruptCacheError(ValueError):
    """A layout cache file that cannot be trusted (unreadable, failed checksum, another key)."""


def read_rows(key: Mapping[str, Any], root: Path | None = None) -> dict[Layout, float]:
    """The cached seconds per step for ``key`` ({} when nothing is cached); :class:`CorruptCacheError` when
    the file is there but damaged."""
    path = cache_file(key, root)
    try:
        rows = read_keyed_json(path, key)
        parsed = {Layout.parse(name): float(seconds) for name, seconds in (rows or {}).items()}
    except (ValueError, TypeError) as err:  # CorruptFileError is a ValueError
        raise CorruptCacheError(str(err) if isinstance(err, CorruptFileError) else f"{path}: {err}") from None
    if any(not math.isfinite(s) or s <= 0 for s in parsed.values()):
        raise CorruptCacheError(f"{path}: a cached time is not a positive number")
    return parsed


def write_rows(key: Mapping[str, Any], rows: Mapping[Layout, float], root: Path | None = None) -> Path:
    named = {str(layout): float(seconds) for layout, seconds in sorted(rows.items())}
    return write_keyed_json(cache_file(key, root), key, named)


Measure = Callable[[list[Layout]], dict[Layout, float]]


@dataclass(frozen=True)
class Decision:
    """The layout chosen for a job, the rows it was chosen from, and where they came from."""

    layout: Layout
    rows: dict[Layout, float]  # seconds per step of each candidate
    runs: int
    source: str  # "cache", "measured" (some or all rows measured now), "only candidate", "timing failed"

    def describe(self) -> str:
        return f"layout {self.layout} for {self.runs} runs ({self.source})"


def decide(
    key: Mapping[str, Any],
    among: list[Layout],
    runs: int,
    measure: Measure,
    *,
    root: Path | None = None,
    log: Callable[[str], None] = lambda message: None,
    fresh: bool = False,
) -> Decision:
    """The fastest of ``among`` for ``runs`` runs: cached rows where the cache has them, the missing ones
    measured by ``measure`` and added to the cache. A damaged cache file is reported, ignored and rewritten.
    ``fresh``: every candidate measured again and the cache file replaced (``layout: remeasure``)."""
    if len(among) == 1:
        return Decision(among[0], {}, runs, "only candidate")
    try:
        rows = {} if fresh else read_rows(key, root)
    except CorruptCacheError as err:
        log(f"warning: {err}; measuring again")
        rows = {}
    missing = [layout for layout in among if layout not in rows]
    source = "cache"
    if missing:
        try:
            rows.update(measure(missing))
        except Exception as err:  # e.g. the machine ran out of memory timing a big stack: run, don't cache
            fallback = max(among, key=lambda layout: (layout.processes, -layout.stack))
            log(f"warning: timing layouts failed ({type(err).__name__}: {err}); running {fallback}, not cached")
            return Decision(fallback, {}, runs, "timing failed")
        write_rows(key, rows, root)
        source = "measured"
    chosen = choose(rows, runs, among)
    return Decision(chosen, {layout: rows[layout] for layout in among}, runs, source)
