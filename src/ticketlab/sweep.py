"""Sweeps: a grid over any spec fields, expanded to validated specs and run by local processes or Ray.

A sweep file is a ``base`` spec plus a ``grid`` of dotted field paths (``method.name``, ``seed``,
``recipe.lr``, ``method.options.regrow``) or template variables (``h`` in ``model: "mlp:784-{h}-10"``)
mapped to value lists. Every grid point is an ordinary run in the run store, so a finished run is
skipped and an interrupted sweep resumes by running it again (SPEC "Experiments, sweeps and results").
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import re
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ticketlab.spec import ExperimentSpec
from ticketlab.store import RunDir

_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")


class SweepSpec(BaseModel):
    """A sweep file: ``base`` spec, ``grid`` of values, and how to run it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    executor: Literal["local", "ray"] = "local"
    workers: int | None = Field(None, ge=1, description="local: worker processes (default: cores // threads); "
                                "ray: tasks an architecture's runs are spread over (default 8)")
    threads_per_worker: int = Field(1, ge=1)
    address: str | None = None  # ray: cluster address (default: a local instance)
    out: str = "runs"
    device: str = "cpu"
    batch: int | None = Field(
        None, ge=1,
        description="runs handed to one worker task, trained stacked (default: an architecture's runs shared "
        "evenly among the workers, at most 16 per task, on CUDA and for MLPs where ticketlab.gemm uses "
        "OpenBLAS on the machine expanding the sweep; else 1 on CPU; see benchmarks/README.md)",
    )
    tensorboard: bool = False

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid key {key!r} has no values")
        return grid


def load_sweep(path: str | os.PathLike) -> SweepSpec:
    """Read a sweep YAML file (``base``, ``grid`` and executor settings)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a sweep is a mapping with 'base' and 'grid', got {type(data).__name__}")
    return SweepSpec.model_validate(data)


def set_base(sweep: SweepSpec, assignments: Iterable[str]) -> SweepSpec:
    """The sweep with ``key=value`` assignments (dotted spec paths, YAML values) applied to its base,
    e.g. ``recipe.steps=1ep`` for a reduced-budget run of a suite; a key also in the grid is rejected."""
    import yaml

    base = copy.deepcopy(sweep.base)
    for text in assignments:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set takes key=value with a dotted spec path, e.g. recipe.steps=1ep; got {text!r}")
        if key in sweep.grid:
            raise ValueError(f"--set {key}: {key!r} is a grid key of this sweep; change the grid instead")
        _set_path(base, key, yaml.safe_load(value))
    return sweep.model_copy(update={"base": base})


# -- expansion ----------------------------------------------------------------------------------------
def template_variables(base: Any) -> set[str]:
    """The ``{name}`` placeholders used in any string of ``base``."""
    if isinstance(base, str):
        return set(_VARIABLE.findall(base))
    if isinstance(base, dict):
        return set().union(*(template_variables(v) for v in base.values())) if base else set()
    if isinstance(base, (list, tuple)):
        return set().union(*(template_variables(v) for v in base)) if base else set()
    return set()


def _substitute(base: Any, values: dict[str, Any]) -> Any:
    if isinstance(base, str):
        whole = _VARIABLE.fullmatch(base)
        if whole and whole.group(1) in values:  # "{lr}" alone keeps the value's type
            return values[whole.group(1)]
        return _VARIABLE.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), base)
    if isinstance(base, dict):
        return {k: _substitute(v, values) for k, v in base.items()}
    if isinstance(base, list):
        return [_substitute(v, values) for v in base]
    return base


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for name in parents:
        child = node.get(name)
        if child is None:
            child = node[name] = {}
        elif not isinstance(child, dict):
            raise ValueError(f"grid key {dotted!r}: {name!r} is not a group of fields")
        node = child
    node[leaf] = value


def instantiate(base: dict[str, Any], point: dict[str, Any]) -> ExperimentSpec:
    """The spec of one grid point: template variables substituted, dotted paths set, then validated.

    A key used as ``{key}`` in ``base`` is a template variable; any other key is a spec field path.
    Validation errors name the grid point, so a typo in a grid value points at its key.
    """
    variables = template_variables(base)
    data = _substitute(copy.deepcopy(base), {k: v for k, v in point.items() if k in variables})
    for key, value in point.items():
        if key not in variables:
            _set_path(data, key, value)
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        where = ", ".join(f"{k}={v!r}" for k, v in point.items())
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"grid point ({where}): {problems}") from None


def grid_points(sweep: SweepSpec) -> list[tuple[dict[str, Any], ExperimentSpec]]:
    """Every grid point (key -> value) with its validated spec, in grid order; points giving an
    already-seen run id are dropped (e.g. a value equal to the base's)."""
    keys = list(sweep.grid)
    seen: set[str] = set()
    out = []
    for combo in itertools.product(*(sweep.grid[k] for k in keys)):
        point = dict(zip(keys, combo))
        spec = instantiate(sweep.base, point)
        if spec.run_id() not in seen:
            seen.add(spec.run_id())
            out.append((point, spec))
    return out


def expand(sweep: SweepSpec) -> list[ExperimentSpec]:
    """The cartesian product of the grid as validated specs, one per distinct run id."""
    return [spec for _, spec in grid_points(sweep)]


MAX_STACK = 16  # runs per task at most when stacking by default (CUDA; MLPs on OpenBLAS CPUs)


def default_batch(device: str, model: str | None = None) -> int | None:
    """``None`` (stack: each architecture's runs shared evenly among the workers) or 1 (one run per task).

    Stacking pays on CUDA, where one small model cannot fill the device, and for MLPs on CPUs where
    ``ticketlab.gemm`` runs their layers on OpenBLAS's batched sgemm (2 one-thread workers x 4 stacked
    LeNet-300-100s: 0.37 s per model-epoch at batch 60 against 0.48 with one model each). Other models
    on CPU train one per one-thread worker, which beat stacking there (benchmarks/README.md).
    """
    from ticketlab import gemm
    from ticketlab.device import resolve_device
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
) -> list[Outcome]:
    """Run a batch of specs (JSON form) in this process; a failure is recorded and the other runs go on.
    Runs that share an architecture and recipe train stacked (``ticketlab.batched.run_experiments``).
    This is the worker's unit, kept plain so it pickles for processes and Ray."""
    from ticketlab.batched import run_experiments
    from ticketlab.device import set_threads

    if threads is not None:
        set_threads(threads)
    parsed = [ExperimentSpec.model_validate(data) for data in specs]

    def log_for(spec: ExperimentSpec) -> Callable[[str], None]:
        if not tensorboard:
            return lambda message: None
        from ticketlab.tblog import tensorboard_log

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
        data_root=None if data_root is None else str(data_root),
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
        ray.init(address=sweep.address, include_dashboard=False, log_to_driver=False)
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
