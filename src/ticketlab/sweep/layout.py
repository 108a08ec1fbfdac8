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

A pruning job trains most of its levels masked, and below some density on the sparse path
(``training.sparse``), where one-thread processes gain most: a layout timed on the dense model alone chose
1x2x4 for 8 Adam IMP runs that 2x1x4 trains 1.22x faster (benchmarks/README.md). So each candidate is timed at up to three
densities standing for the job's levels (:func:`density_points`: the levels cut into three equal parts, each
part's median snapped to a half-octave ladder), and a layout's seconds per step is their mean weighted by
the share of levels each stands for. Rows are cached per density point, so jobs with other targets reuse
the points they share.

Overrides: ``layout: 2x1x4`` in a sweep file or ``--layout`` (or ``$TICKETLAB_LAYOUT``) fix the layout,
``remeasure`` times the candidates again and replaces the cached rows (e.g. measured at a busy hour);
``workers``, ``threads_per_worker`` and ``batch`` fix one part each and the others are measured.
Cache: ``$TICKETLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/ticketlab``, else ``~/.cache/ticketlab``. A cache
file that does not parse, fails its checksum or names another key is reported, never used, and replaced
by a fresh measurement.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ticketlab.files import CorruptFileError, keyed_file, read_keyed_json, user_cache_dir, write_keyed_json
from ticketlab.hardware import blas
from ticketlab.hardware.environment import cpu_model

MAX_STACK = 16  # runs stacked in one worker at most
STACKS = (1, 2, 4, 8, 16)  # stack sizes tried, besides the one that puts all of a worker's runs in one stack
LAYOUT_ENV = "TICKETLAB_LAYOUT"
CACHE_VERSION = 2  # 2: rows per density point
LADDER_STEPS = 20  # density points 2^(-k/2), k = 1..20 (down to 1/1024), and 1
DENSITY_PARTS = 3
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


def snap_density(density: float) -> float:
    """``density`` snapped to the timing ladder: 1 (unmasked) where it is 1, else the nearest (in log scale)
    of 2^(-k/2), k = 1..20, so that a level at 0.8 is timed masked and nearby targets share cached rows."""
    if density >= 1.0:
        return 1.0
    k = min(LADDER_STEPS, max(1, round(-2.0 * math.log2(max(density, 1e-12)))))
    return round(2.0 ** (-k / 2), 6)


def density_points(densities: Sequence[float], parts: int = DENSITY_PARTS) -> dict[float, float]:
    """The densities to time a job at, each with the share of its levels it stands for: the levels'
    ``densities`` sorted, cut into ``parts`` equal consecutive parts (as equal as the count allows), each
    part's median level snapped (:func:`snap_density`); parts that snap to one point add their shares."""
    levels = sorted((float(d) for d in densities), reverse=True) or [1.0]
    n, parts = len(levels), max(1, min(parts, len(levels)))
    bounds = [round(j * n / parts) for j in range(parts + 1)]
    out: dict[float, float] = {}
    for lo, hi in itertools.pairwise(bounds):
        point = snap_density(levels[(lo + hi) // 2])
        out[point] = out.get(point, 0.0) + (hi - lo) / n
    return out


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


def cache_key(machine: Mapping[str, Any], workload: Mapping[str, Any], density: float = 1.0) -> dict[str, Any]:
    """The key of one cache file: the machine, the workload and the density point its rows were timed at."""
    return {"version": CACHE_VERSION, "machine": dict(machine), "workload": dict(workload), "density": density}


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


Measure = Callable[[list[Layout], list[float]], dict[float, dict[Layout, float]]]
"""``measure(layouts, densities)``: seconds per step of each layout at each density point."""


@dataclass(frozen=True)
class Decision:
    """The layout chosen for a job, the rows it was chosen from, and where they came from."""

    layout: Layout
    rows: dict[Layout, float]  # seconds per step of each candidate: its mean over the density points
    runs: int
    source: str  # "cache", "measured" (some or all rows measured now), "only candidate", "timing failed"
    shares: dict[float, float] = field(default_factory=lambda: {1.0: 1.0})  # density point -> share of levels

    def describe(self) -> str:
        at = ""
        if self.rows and set(self.shares) != {1.0}:  # timed (now or before) at pruned levels' densities
            at = ", timed at densities " + ", ".join(f"{d:.3g}" for d in sorted(self.shares, reverse=True))
        return f"layout {self.layout} for {self.runs} runs ({self.source}{at})"


def decide(
    key: Mapping[str, Any],
    among: list[Layout],
    runs: int,
    measure: Measure,
    *,
    shares: Mapping[float, float] | None = None,
    root: Path | None = None,
    log: Callable[[str], None] = lambda message: None,
    fresh: bool = False,
) -> Decision:
    """The fastest of ``among`` for ``runs`` runs whose levels ``shares`` stands for (density point -> share;
    default: all dense): cached rows where the cache has them (``key`` is a :func:`cache_key`, one file per
    density point), the missing ones measured by ``measure`` and added to the cache. A damaged cache file is
    reported, ignored and rewritten. ``fresh``: every candidate measured again and the cache files replaced
    (``layout: remeasure``)."""
    shares = dict(shares) if shares else {1.0: 1.0}
    if len(among) == 1:
        return Decision(among[0], {}, runs, "only candidate", shares)
    keys = {point: {**key, "density": point} for point in shares}
    rows: dict[float, dict[Layout, float]] = {}
    for point, point_key in keys.items():
        try:
            rows[point] = {} if fresh else read_rows(point_key, root)
        except CorruptCacheError as err:
            log(f"warning: {err}; measuring again")
            rows[point] = {}
    missing = sorted({layout for layout in among for point in keys if layout not in rows[point]})
    points = [point for point in keys if any(layout not in rows[point] for layout in among)]
    source = "cache"
    if missing:
        try:
            timed = measure(missing, points)
            for point in points:
                rows[point].update(timed[point])
        except Exception as err:  # e.g. the machine ran out of memory timing a big stack: run, don't cache
            fallback = max(among, key=lambda layout: (layout.processes, -layout.stack))
            log(f"warning: timing layouts failed ({type(err).__name__}: {err}); running {fallback}, not cached")
            return Decision(fallback, {}, runs, "timing failed", shares)
        for point in points:
            write_rows(keys[point], rows[point], root)
        source = "measured"
    total = sum(shares.values())
    mean = {layout: sum(share * rows[point][layout] for point, share in shares.items()) / total for layout in among}
    return Decision(choose(mean, runs, among), mean, runs, source, shares)
