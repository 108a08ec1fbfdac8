"""What a mask cost to find, recorded beside every level's accuracy (SPEC, "pruning at initialisation since
SynFlow": every run records its mask's cost in passes and seconds, so accuracy can be read next to cost).

A level's ``mask_cost_*`` metrics count the work that produced its mask, the training of the ticket itself
excluded (that is the same for every method of a comparison):

* scoring and selection (``Job.prune``) and the mask-training loops (edge-popup, Gem-Miner, TOM's mask
  phase): every forward pass through the network while the mask is being found, counted by a hook on the
  model (:func:`measure`), evaluations those loops make included;
* the weight training the mask derives from: iterative pruning's mask at level l comes from the levels
  before it, so its cost is theirs (their training steps, their own mask costs) plus its prune step: IMP's
  cost is its levels of training. TOM's pretraining and the supermask sweep's dense run count the same way.

``mask_cost_passes``: forward passes of one batch (each with its backward where a gradient is taken; a
training step is one); ``mask_cost_examples``: the examples those passes carried; ``mask_cost_epochs``: the
same in passes over the training split (model-epoch equivalents, comparable across batch sizes);
``mask_cost_train_steps``: the optimiser steps of weight training among them; ``mask_cost_seconds``: wall
time. The level-0 dense network has the dense mask: cost 0.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

PREFIX = "mask_cost_"


@dataclass(frozen=True)
class Cost:
    """Compute spent on a mask; ``+`` and ``-`` add and subtract costs."""

    passes: int = 0
    examples: int = 0
    train_steps: int = 0
    seconds: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.passes + other.passes,
            self.examples + other.examples,
            self.train_steps + other.train_steps,
            self.seconds + other.seconds,
        )

    def __sub__(self, other: Cost) -> Cost:
        return Cost(
            self.passes - other.passes,
            self.examples - other.examples,
            self.train_steps - other.train_steps,
            self.seconds - other.seconds,
        )

    @classmethod
    def of_training(cls, steps: int, batch_size: int, seconds: float) -> Cost:
        """``steps`` optimiser steps on batches of ``batch_size``: one forward and backward pass each."""
        return cls(passes=steps, examples=steps * batch_size, train_steps=steps, seconds=seconds)

    @classmethod
    def recorded(cls, row: Mapping[str, Any]) -> Cost:
        """The mask cost a level's metrics record (zero for runs written before costs were recorded)."""
        return cls(**{f.name: row.get(PREFIX + f.name) or 0 for f in fields(cls)})

    def metrics(self, train_size: int) -> dict[str, Any]:
        """The ``mask_cost_*`` entries of a level's metrics."""
        return {
            PREFIX + "passes": self.passes,
            PREFIX + "examples": self.examples,
            PREFIX + "epochs": self.examples / train_size if train_size else 0.0,
            PREFIX + "train_steps": self.train_steps,
            PREFIX + "seconds": self.seconds,
        }


@dataclass
class Meter:
    """Forward passes through a model while :func:`measure` watches it, and the seconds it watched."""

    passes: int = 0
    examples: int = 0
    seconds: float = 0.0

    def cost(self) -> Cost:
        return Cost(passes=self.passes, examples=self.examples, seconds=self.seconds)


@contextmanager
def measure(model: nn.Module) -> Iterator[Meter]:
    """Count every call of ``model`` (plain or through ``torch.func.functional_call``) and the examples in
    its first argument, and time the block. The hook is a closure, not a bound method: criteria that
    ``deepcopy`` the model (stacked scoring) copy the hook with it, and a copied closure still counts here."""
    meter = Meter()

    def count(module: nn.Module, args: tuple[Any, ...]) -> None:
        meter.passes += 1
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() > 0:
            meter.examples += int(args[0].shape[0])

    handle = model.register_forward_pre_hook(count)
    started = time.perf_counter()
    try:
        yield meter
    finally:
        meter.seconds = time.perf_counter() - started
        handle.remove()
