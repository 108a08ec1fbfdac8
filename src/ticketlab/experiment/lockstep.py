"""Run several experiment specs together, training their levels in lock-step with ``train_many``.

Seeds x methods x densities of one architecture train the same number of steps from the same step at
each level; stacked, K of them run in one pass (see ``ticketlab.training.stacked``). Rather than rewriting
every method as a state machine, each spec's method runs unchanged as a coroutine (a greenlet, on the
scheduler's own thread: see ``_Worker``), and only one runs at any time: when a method asks its job to train, the job hands
the request to the scheduler and waits. Once every spec is waiting or finished, the scheduler groups
compatible requests (same data, architecture, recipe, start/end/snapshot steps) and trains each group
with ``train_many``; a level's controls are one request each, on copies of the model
(``Job.train_together``), so they stack with each other and with other specs' controls. Run directories are exactly those ``run_experiment`` writes (same files; metrics
equal to float tolerance, timings aside; ``train_time`` is the group's time divided by its size).

Methods whose equality with ``run_experiment`` is tested here (``BATCHED_METHODS``) go this way; any
other method runs through ``run_experiment``, one spec after another.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from greenlet import greenlet
from torch import nn

from ticketlab.config.spec import ExperimentSpec
from ticketlab.data import Dataset, load_dataset
from ticketlab.experiment.check import check_spec
from ticketlab.experiment.run import RunResult, prepare_run, record_environment, run_experiment
from ticketlab.files import tensors_digest
from ticketlab.hardware.device import resolve_device
from ticketlab.masks import Mask
from ticketlab.methods import METHODS, Job, resolve_method
from ticketlab.models import StateDict, snapshot
from ticketlab.training import stack_choice
from ticketlab.training.loop import Progress, TrainResult, train
from ticketlab.training.stacked import train_many

# Methods that train only through ``job.train`` and whose batched runs are tested equal to sequential ones.
BATCHED_METHODS = frozenset(
    {"gimp", "finetune", "lottery", "late_rewind", "lr_rewind", "sgimp", "oneshot", "multishot"}
)


def stack_key(spec: ExperimentSpec) -> str:
    """Runs with equal keys can train stacked (``train_many``): the same data split, architecture and recipe.
    Seeds, initialisations, masks and methods may differ. Used to group training requests here and runs
    into a sweep's batches (``ticketlab.sweep.executors.batches``)."""
    return json.dumps(
        [
            spec.dataset,
            spec.val_size,
            spec.split_seed,
            spec.model,
            spec.bn_momentum,
            spec.bn_eps,
            spec.dropout,
            spec.recipe.model_dump(mode="json"),
            spec.end_on_best,
        ],
        sort_keys=True,
        default=str,
    )


@dataclass
class _Request:
    job: Job
    mask: Mask
    start: StateDict
    start_step: int
    end_step: int
    snapshot_at: int | None
    model: nn.Module | None = None  # the network to train: the job's, or a copy (a level's stacked controls)
    result: TrainResult | None = None
    error: BaseException | None = None

    @property
    def net(self) -> nn.Module:
        return self.job.model if self.model is None else self.model

    def group_key(self) -> str:
        """Requests with equal keys can be stacked: runs that stack (``stack_key``) on the same loaded data,
        over the same step range (the snapshot steps may differ: the stack keeps the union, each result only
        its own; not with early stopping, where a run never stops before its last snapshot step)."""
        spec = self.job.spec
        snapshot = self.snapshot_at if spec.recipe.early_stop is not None else None
        return json.dumps([stack_key(spec), id(self.job.data), self.start_step, self.end_step, snapshot])


class _Worker:
    """One spec's method, run as a coroutine: it runs only between ``step()`` and its next request.

    A greenlet, not a thread: the method runs on the scheduler's own OS thread. With a thread per method,
    each method thread that touched torch kept an OpenMP pool of its own, and while those pools existed
    every parallel region of the training (the fused Adam kernel, copies, reductions) paid for them: a
    3-model LeNet-300-100 Adam level trained 1.4-1.7x slower per step than the same ``train_many`` alone
    (AMD EPYC, 2 threads, measured 2026-11-29; ``_fused_adam_`` 2.6x slower)."""

    def __init__(self, method: Callable[[Job], None], job: Job) -> None:
        self.method, self.job = method, job
        self.requests: list[_Request] = []
        self.finished = False
        self.error: Exception | None = None
        self._coroutine = greenlet(self._run)

    def _run(self) -> None:
        try:
            self.method(self.job)
        except Exception as error:  # handed to the scheduler, which re-raises it; Ctrl-C goes straight up
            self.error = error
        finally:
            self.finished = True

    def step(self) -> None:
        """Let the method run until it asks for training or ends (called by the scheduler)."""
        self.requests = []
        self._coroutine.switch()

    def submit(self, requests: list[_Request]) -> list[TrainResult]:
        """Called from the method: park the requests and wait for their results."""
        self.requests = requests
        parent = self._coroutine.parent
        assert parent is not None
        parent.switch()
        results = []
        for request in requests:
            if request.error is not None:
                raise request.error
            assert request.result is not None
            results.append(request.result)
        return results


@dataclass
class _BatchedJob(Job):
    worker: _Worker | None = None

    def train(
        self, mask: Mask, start: StateDict, start_step: int, end_step: int, snapshot_at: int | None
    ) -> TrainResult:
        assert self.worker is not None
        return self.worker.submit([_Request(self, mask, start, start_step, end_step, snapshot_at)])[0]

    def train_together(
        self, trainings: Sequence[tuple[Mask, StateDict]], start_step: int, end_step: int
    ) -> list[tuple[TrainResult, StateDict]]:
        """Each training a request of its own on a copy of the model, so that they stack with each other
        and with other specs' requests."""
        assert self.worker is not None
        requests = [
            _Request(self, mask, start, start_step, end_step, None, model=copy.deepcopy(self.model))
            for mask, start in trainings
        ]
        results = self.worker.submit(requests)
        return [(result, snapshot(request.net)) for result, request in zip(results, requests)]


def batchable(spec: ExperimentSpec) -> bool:
    """Whether ``run_experiments`` trains this spec's levels stacked with others."""
    key, _ = resolve_method(spec.method)
    return key in BATCHED_METHODS


def run_experiments(
    specs: Sequence[ExperimentSpec],
    root: str | os.PathLike = "runs",
    *,
    device: str | torch.device | None = None,
    data_root: str | os.PathLike | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    log_for: Callable[[ExperimentSpec], Callable[[str], None]] | None = None,
    return_exceptions: bool = False,
    budget: int | None = None,
) -> list[Any]:
    """Run (or resume) every spec under ``root/<run id>``, as ``run_experiment`` would, stacking the
    training of specs that share an architecture and recipe. Results are in the order of ``specs``.

    Messages go to ``log_for(spec)`` when given (one callback per run, e.g. TensorBoard export), else to
    ``log`` prefixed with the run id. If a spec fails, the others still finish; the first error is raised
    at the end, or, with ``return_exceptions``, each failed spec's exception takes its place in the list.
    ``budget``: each spec computes at most that many levels, then pauses (``Job.budget``, ``Paused``)."""
    device = resolve_device(device)

    def spec_log(spec: ExperimentSpec) -> Callable[[str], None] | None:
        if log_for is not None:
            return log_for(spec)
        if log is None:
            return None  # nobody listens: warnings are raised as warnings (experiment.run.record_environment)
        tag = f"[{spec.run_id()}] "
        return lambda message: log(tag + message)

    results: dict[int, RunResult] = {}
    datasets: dict[tuple, Dataset] = {}
    workers: dict[int, _Worker] = {}
    errors: dict[int, BaseException] = {}

    for i, spec in enumerate(specs):
        if batchable(spec):
            try:
                workers[i] = _start_worker(spec, datasets, root, data_root, device, spec_log(spec), budget)
            except Exception as error:  # e.g. missing data: this spec fails, the others run
                errors[i] = error
    _schedule(list(workers.values()), device, progress)

    for i, worker in workers.items():
        if worker.error is not None:
            errors[i] = worker.error
            continue
        worker.job.run.mark_finished(worker.job.counts())
        results[i] = RunResult(worker.job.spec, worker.job.run.path, worker.job.rows)

    for i, spec in enumerate(specs):
        if i not in workers and i not in errors:
            try:
                where = dict(device=device, data_root=data_root, progress=progress, budget=budget)
                results[i] = run_experiment(spec, root, log=spec_log(spec), **where)
            except Exception as error:  # the other specs still run
                errors[i] = error
    if errors and not return_exceptions:
        raise errors[min(errors)]
    return [errors[i] if i in errors else results[i] for i in range(len(specs))]


def _start_worker(
    spec: ExperimentSpec,
    datasets: dict[tuple, Dataset],
    root: str | os.PathLike,
    data_root: str | os.PathLike | None,
    device: torch.device,
    log: Callable[[str], None] | None,
    budget: int | None = None,
) -> _Worker:
    """Prepare the spec's run (loading its data once per split into ``datasets``) and start its method."""
    check_spec(spec)
    data_key = (spec.dataset, spec.val_size, spec.split_seed)
    if data_key not in datasets:
        datasets[data_key] = load_dataset(
            spec.dataset, root=data_root, val_size=spec.val_size, seed=spec.split_seed, device=device
        )
    data = datasets[data_key]
    run, model, init_state = prepare_run(spec, data, root, device)
    env = record_environment(run, device, log)
    job = _BatchedJob(
        spec, data, model, init_state, run, progress=None, log=log or (lambda message: None), env=env, budget=budget
    )
    key, _ = resolve_method(spec.method)
    worker = _Worker(METHODS.get(key), job)
    job.worker = worker
    return worker


def _schedule(workers: list[_Worker], device: torch.device, progress: Progress | None) -> None:
    """Run the methods until all end: each runs up to its next training request, then every group of
    requests that stack (``_Request.group_key``) trains together."""
    waiting = workers
    while waiting:
        for worker in waiting:
            worker.step()
        waiting = [w for w in workers if not w.finished and w.requests]
        groups: dict[str, list[_Request]] = {}
        for worker in waiting:
            for request in worker.requests:
                groups.setdefault(request.group_key(), []).append(request)
        for group in groups.values():
            try:
                _train_group(group, device, progress)
            except Exception as error:  # raised inside each spec's method, which then ends
                for request in group:
                    request.error = error


def _train_group(group: list[_Request], device: torch.device, progress: Progress | None) -> None:
    """Train one group of compatible requests: stacked if several, plain ``train`` if one; a request
    identical to another (e.g. the same dense level asked by several methods) is trained once."""
    group, copies = _identical(group)
    _train_distinct(group, device, progress)
    for request, original in copies:
        request.net.load_state_dict(original.net.state_dict())
        request.result = copy.deepcopy(original.result)


def _identical(group: list[_Request]) -> tuple[list[_Request], list[tuple[_Request, _Request]]]:
    """The distinct requests of a group, and each other request with the distinct one it equals (same seed,
    start weights, mask and snapshot step; the group key already fixes data, architecture, recipe, steps)."""
    if len(group) == 1:
        return group, []
    seen: dict[tuple, _Request] = {}
    copies = []
    for request in group:
        key = (
            request.job.spec.seed,
            request.snapshot_at,
            tensors_digest(dict(request.mask)),
            tensors_digest(request.start),
        )
        if key in seen:
            copies.append((request, seen[key]))
        else:
            seen[key] = request
    return list(seen.values()), copies


def _alone(group: list[_Request], device: torch.device) -> bool:
    """Whether a group's trainings run one at a time rather than stacked: where the models could take the
    sparse path (``training.sparse``), which changes what is faster, and one at a time measures faster
    (``training.stack_choice.decide``, timed once per machine and density buckets, cached). Each result
    equals its stacked one to float tolerance either way."""
    first = group[0]
    masks = [r.mask for r in group]
    if not stack_choice.sparse_may_win(first.net, masks, device):
        return False
    data = first.job.data
    verdict = stack_choice.decide(first.net, masks, first.job.spec.recipe, data.input_shape, data.num_classes, device)
    for request in group:
        request.job.log(verdict.describe(f"a level's {len(group)} trainings"))
    return not verdict.stack


def _train_distinct(group: list[_Request], device: torch.device, progress: Progress | None) -> None:
    first = group[0]
    spec = first.job.spec
    for request in group:
        request.net.load_state_dict(request.start)
    if len(group) == 1 or _alone(group, device):
        for request in group:
            request.result = train(
                request.net,
                request.job.data,
                spec.recipe,
                mask=request.mask,
                seed=request.job.spec.seed,
                start_step=request.start_step,
                end_step=request.end_step,
                snapshot_steps=() if request.snapshot_at is None else (request.snapshot_at,),
                end_on_best=spec.end_on_best,
                device=device,
                progress=progress,
            )
        return
    outcomes = train_many(
        [r.net for r in group],
        first.job.data,
        spec.recipe,
        masks=[r.mask for r in group],
        seeds=[r.job.spec.seed for r in group],
        start_step=first.start_step,
        end_step=first.end_step,
        snapshot_steps={r.snapshot_at for r in group if r.snapshot_at is not None},
        end_on_best=spec.end_on_best,
        device=device,
        progress=progress,
    )
    for request, outcome in zip(group, outcomes):
        outcome.snapshots = {s: v for s, v in outcome.snapshots.items() if s == request.snapshot_at}
        request.result = outcome
