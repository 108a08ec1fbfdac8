"""The trainer core: what every way of training shares, in one place.

``fit`` runs the steps of K runs (K = 1 for ``train``): the data order (``seeding.epoch_order``), the batch
of each step, its augmentation (the dataset's entry in ``data.AUGMENTATIONS``), the learning rate of each
step, the evaluation cadence, the early-stopping bookkeeping (step of minimum validation loss, and stopping
on patience when the recipe asks for it), snapshots for rewinding, ``end_on_best`` and progress callbacks.
How the weights move is a :class:`Stepper`'s business: one ``nn.Module`` (``training.loop``), K stacked
models (``training.stacked``), each stepped by autograd or by the fused step of MLPs (``training.fused_sgd``: SGD, or Adam
after a hand-written backward).
Masks are enforced the same way everywhere (:func:`enforce_masks`, :func:`autograd_update`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from ticketlab.config.recipe import Recipe
from ticketlab.data import AUGMENTATIONS, Dataset
from ticketlab.masks import Mask
from ticketlab.models import StateDict
from ticketlab.seeding import epoch_order, seed_for

# progress(step, end_step, row): after every step, with the evaluation's row (mean over a stack) when the
# weights were evaluated, None otherwise, and with an empty row just before each evaluation starts
Progress = Callable[[int, int, "dict[str, float] | None"], None]
AUGMENT_SALT = 2  # a training step's augmentation draws from seed_for(seed, step, AUGMENT_SALT)


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    """Steps in one pass over the training split; the last partial batch is dropped."""
    if num_train < batch_size:
        raise ValueError(f"batch_size {batch_size} is larger than the training split ({num_train})")
    return num_train // batch_size


@dataclass
class TrainResult:
    start_step: int
    end_step: int
    history: list[dict[str, float]] = field(default_factory=list)  # one row per evaluation
    snapshots: dict[int, StateDict] = field(default_factory=dict)
    early_stop_step: int | None = None  # step of minimum validation loss (003's early-stopping iteration)
    early_stop: dict[str, float] = field(default_factory=dict)  # the evaluation at that step
    final: dict[str, float] = field(default_factory=dict)  # the evaluation the run ended on
    wall_time: float = 0.0
    steps_per_epoch: int = 0
    stopped_step: int | None = None  # the step training ended at: end_step unless the recipe's early_stop hit
    eval_time: float = 0.0  # the part of wall_time spent evaluating (per model, as wall_time)
    stacked: int = 1  # models trained together in one stack (train_many), this one included
    sparse_training: dict[str, Any] | None = None  # training.sparse's choice per layer (None: none considered)
    compact_adam: list[bool] | None = None  # per layer: FusedAdam stepped only the kept weights (None: no FusedAdam)

    def __post_init__(self) -> None:
        if self.stopped_step is None:
            self.stopped_step = self.end_step


def plan_steps(
    data: Dataset, recipe: Recipe, start_step: int, end_step: int | None, end_on_best: bool
) -> tuple[int, int, int]:
    """Steps per epoch, the end step (default: the recipe's length) and the evaluation interval in steps
    (0: only at the end), with the checks every trainer makes on them."""
    spe = steps_per_epoch(len(data.x_train), recipe.batch_size)
    end_step = recipe.total_steps(spe) if end_step is None else end_step
    if not 0 <= start_step <= end_step:
        raise ValueError(f"need 0 <= start_step ({start_step}) <= end_step ({end_step})")
    if end_on_best and len(data.x_val) == 0:
        raise ValueError("end_on_best needs a validation split (val_size > 0)")
    if recipe.early_stop is not None and len(data.x_val) == 0:
        raise ValueError("early_stop needs a validation split (val_size > 0)")
    return spe, end_step, recipe.eval_interval(spe)


def is_eval_step(done: int, end_step: int, eval_every: int) -> bool:
    """Whether the weights after ``done`` updates are evaluated: every ``eval_every`` steps and at the end."""
    return done == end_step or bool(eval_every and done % eval_every == 0)


class Batches:
    """The training batches of K runs, stacked: ``batches(step)`` -> x (K, B, ...), y (K, B).

    Run k's data order is ``epoch_order(n, order_seeds[k], epoch)`` (so a run restarted at any step sees the
    batches of an uninterrupted one) and its augmentation, the dataset's entry in ``AUGMENTATIONS``, draws
    from a generator seeded with ``seed_for(augment_seeds[k], step, salt)``.

    ``reuse``: every call writes x into the same tensor (no allocation per step), so a batch is only valid
    until the next call: for a caller done with each batch before it asks for the next (``fit``).
    """

    def __init__(
        self,
        data: Dataset,
        batch_size: int,
        order_seeds: Sequence[int],
        augment_seeds: Sequence[int] | None = None,
        salt: int = AUGMENT_SALT,
        reuse: bool = False,
    ) -> None:
        self.data, self.batch_size = data, batch_size
        self.spe = steps_per_epoch(len(data.x_train), batch_size)
        self.order_seeds = list(order_seeds)
        self.augment_seeds = list(augment_seeds) if augment_seeds is not None else self.order_seeds
        self.salt = salt
        self.augment = AUGMENTATIONS.get(data.augment) if data.augment else None
        self._epoch: int | None = None
        self._orders: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None  # the epoch's labels in its order, (K, n)
        self._shape = (len(self.order_seeds), batch_size, *data.x_train.shape[1:])
        x = data.x_train
        self._out = x.new_empty(len(self.order_seeds) * batch_size, *x.shape[1:]) if reuse else None

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, position = divmod(step, self.spe)
        if epoch != self._epoch or self._orders is None or self._labels is None:
            n = len(self.data.x_train)
            self._orders = torch.stack([epoch_order(n, s, epoch) for s in self.order_seeds]).to(
                self.data.x_train.device
            )
            # the labels in the epoch's order, gathered once per epoch instead of once per step
            self._labels = self.data.y_train.index_select(0, self._orders.flatten()).view(self._orders.shape)
            self._epoch = epoch
        span = slice(position * self.batch_size, (position + 1) * self.batch_size)
        idx = self._orders[0, span] if len(self._orders) == 1 else self._orders[:, span].flatten()
        # index_select: 3-5x faster than x_train[idx]
        xb = torch.index_select(self.data.x_train, 0, idx, out=self._out).view(self._shape)
        yb = self._labels[:, span]
        if self.augment is not None:
            xb = torch.stack(
                [
                    self.augment(xb[k], torch.Generator().manual_seed(seed_for(s, step, self.salt)))
                    for k, s in enumerate(self.augment_seeds)
                ]
            )
        return xb, yb


class Stepper(Protocol):
    """How K runs' weights move; everything else is :func:`fit`'s."""

    k: int  # number of runs

    def running(self) -> AbstractContextManager[None]:
        """Entered for the whole training (train mode, BLAS threads, dropout RNG)."""

    def step(self, step: int, xb: torch.Tensor, yb: torch.Tensor, lr: float) -> torch.Tensor:
        """One update of every run on its batch (K, B, ...); returns the K mean losses (detached)."""

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> list[dict[str, float]]:
        """Each run's mean loss and accuracy on one split, in eval mode."""

    def state(self, k: int) -> StateDict:
        """Run k's current weights and buffers (a copy)."""

    def finish(self, k: int, state: StateDict | None) -> None:
        """Leave run k's model with ``state`` (None: the weights training ended on)."""


def enforce_masks(
    models: Sequence[nn.Module], masks: Sequence[Mapping[str, torch.Tensor] | None], device: torch.device
) -> tuple[list[str], list[torch.Tensor]]:
    """Zero each model's pruned weights; return the names of the parameters any mask covers and their masks
    stacked (K, ...) as 0/1 in the parameter's dtype (a model without a mask keeps everything).

    This and :func:`autograd_update` are the whole mask enforcement: a pruned weight starts at 0 and its
    gradient is multiplied by 0, so SGD (momentum, Nesterov, weight decay, L2) and Adam leave it and its
    optimiser state exactly 0 (0 - lr * 0; Adam: 0 / eps). The fused step masks what its GEMMs write.
    """
    masks = [Mask(mk) if mk is not None else None for mk in masks]
    for model, mk in zip(models, masks):
        if mk is not None:
            mk.apply(model)
    named = dict(models[0].named_parameters())
    names = [n for n in named if any(mk is not None and n in mk for mk in masks)]
    values = [
        torch.stack(
            [
                (mk[n] if mk is not None and n in mk else torch.ones(named[n].shape, dtype=torch.bool)).to(device)
                for mk in masks
            ]
        ).to(named[n].dtype)
        for n in names
    ]
    return names, values


def autograd_update(
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    lr: float,
    l2: float,
    params: list[torch.Tensor],
    masked: list[torch.Tensor],
    mask_values: list[torch.Tensor],
    see_grads: Callable[[list[torch.Tensor]], None] | None = None,
) -> None:
    """Backward ``loss`` (+ ``l2 * ||w||^2``), mask the gradients and step ``optimizer`` at ``lr``;
    ``see_grads`` sees the masked parameters' gradients before the mask is applied to them."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    if l2:
        loss = loss + l2 * sum(p.pow(2).sum() for p in params)
    # set_to_none: backward writes the gradients instead of adding them to zeros (0 + g = g exactly),
    # one memory pass fewer
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if see_grads is not None:
        see_grads([p.grad for p in masked])
    if masked:
        torch._foreach_mul_([p.grad for p in masked], mask_values)
    # No weight masking after the step: see enforce_masks.
    optimizer.step()


@dataclass
class _Books:
    """One run's bookkeeping while it trains."""

    result: TrainResult
    best: StateDict | None = None  # weights of the minimum validation loss (end_on_best)
    since_best: int = 0  # evaluations since that minimum
    stopped: StateDict | None = None  # weights at an early stop (restored at the end)
    active: bool = True


def fit(
    stepper: Stepper,
    data: Dataset,
    recipe: Recipe,
    *,
    seeds: Sequence[int],
    start_step: int,
    end_step: int | None,
    snapshot_steps: Iterable[int],
    end_on_best: bool,
    progress: Progress | None,
) -> list[TrainResult]:
    """Train the stepper's K runs from ``start_step`` to ``end_step`` (default: the recipe's length); run k
    sees the data order and augmentation of ``seeds[k]``. See ``training.loop.train`` for the arguments.

    With ``recipe.early_stop`` a run stops at the first evaluation that is ``patience`` evaluations past its
    minimum validation loss, at least ``min_steps`` after ``start_step`` and not before the last of
    ``snapshot_steps`` (those are needed for rewinding). In a stack the others go on; a stopped run's weights
    are restored to those of its stop (or best, with ``end_on_best``) at the end, so each equals its single run.
    """
    # long: the one training loop of every trainer: its steps read in order
    spe, end_step, eval_every = plan_steps(data, recipe, start_step, end_step, end_on_best)
    wanted = {int(s) for s in snapshot_steps}
    stopping = None
    if recipe.early_stop is not None:
        stop_from = max([start_step + recipe.early_stop.min_steps.steps(spe), *wanted])
        stopping = _Stopping(recipe.early_stop.patience, stop_from, end_step)
    batches = Batches(data, recipe.batch_size, seeds, reuse=True)  # each batch is done with within its step
    books = [
        _Books(TrainResult(start_step=start_step, end_step=end_step, steps_per_epoch=spe)) for _ in range(stepper.k)
    ]
    running_loss = torch.zeros(stepper.k, device=data.x_train.device)
    running_count = 0
    evaluating = 0.0

    def record(step: int) -> None:
        nonlocal running_count, evaluating
        began = time.perf_counter()
        train_loss = [float(v) / running_count if running_count else float("nan") for v in running_loss]
        running_loss.zero_()
        running_count = 0
        if progress is not None:  # an empty row: an evaluation starts (a display can say so; it may take long)
            progress(step, end_step, {})
        rows = _evaluate(step, step / spe, train_loss, books, stepper, data, end_on_best, stopping)
        evaluating += time.perf_counter() - began
        if progress is not None:
            progress(
                step,
                end_step,
                rows[0] if len(rows) == 1 else {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]},
            )

    started = time.perf_counter()
    with stepper.running():
        if start_step in wanted:
            for k, book in enumerate(books):
                book.result.snapshots[start_step] = stepper.state(k)
        record(start_step)
        for step in range(start_step, end_step):
            if not any(book.active for book in books):
                break
            xb, yb = batches(step)
            running_loss += stepper.step(step, xb, yb, recipe.lr_at(step, spe))
            running_count += 1
            done = step + 1
            if done in wanted:
                for k, book in enumerate(books):
                    if book.active:
                        book.result.snapshots[done] = stepper.state(k)
            if is_eval_step(done, end_step, eval_every):
                record(done)
            elif progress is not None:
                progress(done, end_step, None)
    wall = (time.perf_counter() - started) / stepper.k
    for k, book in enumerate(books):
        result = book.result
        if end_on_best and book.best is not None:
            stepper.finish(k, book.best)
            result.final = dict(result.early_stop)
        else:
            stepper.finish(k, book.stopped)
            result.final = dict(result.history[-1])
        result.wall_time, result.eval_time, result.stacked = wall, evaluating / stepper.k, stepper.k
    return [book.result for book in books]


@dataclass(frozen=True)
class _Stopping:
    """The recipe's early stop, resolved to steps: stop at an evaluation ``patience`` evaluations past the
    minimum validation loss, from step ``stop_from`` on and before ``end_step`` (where training ends anyway)."""

    patience: int
    stop_from: int
    end_step: int

    def due(self, book: _Books, step: int) -> bool:
        return book.since_best >= self.patience and self.stop_from <= step < self.end_step


def _evaluate(
    step: int,
    epoch: float,
    train_loss: list[float],
    books: list[_Books],
    stepper: Stepper,
    data: Dataset,
    end_on_best: bool,
    stopping: _Stopping | None,
) -> list[dict[str, float]]:
    """Evaluate every run on validation and test, append the rows of those still training to their
    histories, track their best and stop those whose patience ran out; returns those rows."""
    splits = {
        split: stepper.evaluate(getattr(data, f"x_{split}"), getattr(data, f"y_{split}")) for split in ("val", "test")
    }
    rows = []
    for k, book in enumerate(books):
        if not book.active:
            continue
        row: dict[str, float] = {"step": step, "epoch": epoch, "train_loss": train_loss[k]}
        for split, metrics in splits.items():
            row[f"{split}_loss"], row[f"{split}_acc"] = metrics[k]["loss"], metrics[k]["acc"]
        book.result.history.append(row)
        rows.append(row)
        if len(data.x_val):
            _track_best(book, row, step, stepper, k, end_on_best)
        if stopping is not None and stopping.due(book, step):
            book.active, book.result.stopped_step = False, step
            if not end_on_best:
                book.stopped = stepper.state(k)
    return rows


def _track_best(book: _Books, row: dict[str, float], step: int, stepper: Stepper, k: int, end_on_best: bool) -> None:
    """The early-stopping iteration: the evaluation of minimum validation loss so far (003)."""
    result = book.result
    if result.early_stop_step is None or row["val_loss"] < result.early_stop["val_loss"]:
        result.early_stop_step, result.early_stop = step, row
        book.since_best = 0
        if end_on_best:
            book.best = stepper.state(k)
    else:
        book.since_best += 1
