"""Scored-pruning (001 §5 names it; the precise rule is ours): while a ticket trains, every pruned
weight i accumulates s_i += −g_i · w_i, with g the gradient of the loss w.r.t. the effective weight and w
its rewound value: the first-order drop in loss had it been active. Every ``regrow_every`` steps the
pruned weights with the highest s replace as many kept weights with the smallest |w|, so the density
never changes; a returning weight starts from its rewound value with fresh optimiser state.

How many move per event (SPEC): floor(regrow · k) with k the number of kept (active) weights, a fraction
of the active weights as in RigL (per layer with ``scope: layerwise``), not of the far larger pruned set.
Those are the pruned weights with the highest s, and with ``positive_only`` (default) only weights with
s > 0, whose return would lower the loss to first order: when fewer than floor(regrow · k) have s > 0,
only those move, and with none there is no event. As many kept weights with the smallest |w| leave. Each
level first prunes like the ``base`` preset (any criterion); ``regrow: 0`` is that preset bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import Field
from torch import nn

from ticketlab.config.duration import Duration
from ticketlab.config.recipe import DurationField
from ticketlab.files import atomic_write_json
from ticketlab.masks import Mask, top_k
from ticketlab.methods.context import Job
from ticketlab.methods.levels import run_levels
from ticketlab.methods.registry import METHODS, OPTIONS, options_of
from ticketlab.methods.regrowth.common import Regrowing, RegrowthOptions, budget
from ticketlab.models import StateDict
from ticketlab.seeding import seed_for
from ticketlab.training.loop import MaskUpdate, TrainResult, train

PRUNED_MASK = "mask_pruned.safetensors"  # the level's mask before any regrowth
EVENTS = "regrowth.json"


class ScoredPruningOptions(RegrowthOptions):
    """``regrow``: per event, floor(regrow · kept) weights move (only those with s > 0 under
    ``positive_only``); ``regrow_every``: steps between regrowth events (``1ep``, ``100it``);
    ``positive_only``: only weights with s > 0 return."""

    regrow: float = Field(
        0.1,
        ge=0,
        le=1,
        description="per regrowth event, floor(regrow * k) weights move, k = the number of kept (active) weights "
        "(a fraction of the active weights, as in RigL; per layer with scope layerwise): the pruned weights with "
        "the highest score s return, with positive_only only those with s > 0 (fewer move when fewer have s > 0), "
        "and as many kept weights with the smallest |w| leave",
    )
    regrow_every: DurationField = Field(
        Duration.parse("1ep"), description="steps between regrowth events, e.g. '1ep' or '100it'"
    )
    positive_only: bool = Field(
        True, description="only pruned weights with s > 0 return (their return lowers the loss)"
    )


OPTIONS.register("scored_pruning")(ScoredPruningOptions)


class ScoredRegrowth:
    """The :class:`ticketlab.training.loop.TrainHooks` of one scored-pruning run from ``start`` to ``end``."""

    def __init__(
        self,
        mask: Mask,
        reference: Mapping[str, torch.Tensor],
        *,
        regrow: float,
        every: int,
        start: int,
        end: int,
        scope: str = "global",
        positive_only: bool = True,
        seed: int = 0,
    ) -> None:
        self.mask = mask.clone()
        self.reference = {n: reference[n] for n in mask}
        self.regrow, self.every, self.start, self.end = regrow, every, start, end
        self.scope, self.positive_only, self.seed = scope, positive_only, seed
        self.s = {n: torch.zeros(m.shape, dtype=torch.float64) for n, m in mask.items()}
        self.events: list[dict[str, Any]] = []
        self._changes: list[tuple[int, Mask]] = []
        self._pruned: dict[str, torch.Tensor] | None = None

    def after_backward(self, step: int, grads: Mapping[str, torch.Tensor]) -> None:
        if self._pruned is None:  # device copies, made once per mask
            device = next(iter(grads.values())).device
            self.s = {n: v.to(device) for n, v in self.s.items()}
            self.reference = {n: v.to(device) for n, v in self.reference.items()}
            self._pruned = {n: (~m).to(device) for n, m in self.mask.items()}
        for name, g in grads.items():
            contribution = -(g.double() * self.reference[name].double())
            self.s[name].add_(torch.where(self._pruned[name], contribution, 0.0))

    def update_mask(self, done: int, model: nn.Module) -> MaskUpdate | None:
        # no event on the last step: a weight returned then would end the run untrained
        if self.every <= 0 or (done - self.start) % self.every or done >= self.end:
            return None
        new = self.regrown(dict(model.named_parameters()))
        if new is None:
            return None
        moved = sum(int((new[n] & ~self.mask[n]).sum()) for n in new)
        self.events.append({"step": done, "moved": moved})
        self.mask = new
        self._pruned = None
        self._changes.append((done, new.clone()))
        return MaskUpdate(new, self.reference)

    def regrown(self, params: Mapping[str, torch.Tensor]) -> Mask | None:
        """Swap the best-scored pruned weights for the smallest kept ones; None when nothing moves."""
        mask = self.mask
        cap = budget(mask, self.regrow, self.scope)
        candidates = {
            n: (~m.to(self.s[n].device))
            & ((self.s[n] > 0) if self.positive_only else torch.ones_like(m, device=self.s[n].device))
            for n, m in mask.items()
        }
        if isinstance(cap, int):
            count: int | dict[str, int] = min(cap, sum(int(c.sum()) for c in candidates.values()))
            moved = count
        else:
            count = {n: min(cap[n], int(candidates[n].sum())) for n in mask}
            moved = sum(count.values())
        if moved == 0:
            return None
        seed = seed_for(self.seed, len(self._changes))
        back = top_k(self.s, count, candidates, seed_for(seed, 1))
        smallest = {n: -params[n].detach().abs().double() for n in mask}
        out = top_k(smallest, count, mask, seed_for(seed, 2))
        new = Mask({n: (mask[n] & ~out[n].to(mask[n].device)) | back[n].to(mask[n].device) for n in mask})
        for n in mask:  # returning weights stop accumulating; the removed ones start again from zero
            self.s[n].masked_fill_(back[n].to(self.s[n].device), 0.0)
        return new

    def mask_at(self, step: int, initial: Mask) -> Mask:
        """The mask in force after update number ``step``."""
        current = initial
        for done, mask in self._changes:
            if done <= step:
                current = mask
        return current


class ScoredPruning(Regrowing):
    """Levels pruned like the ``base`` preset, whose training swaps weights by the accumulated score s
    every ``regrow_every`` steps (:class:`ScoredRegrowth`)."""

    def __init__(self, job: Job) -> None:
        self.options: ScoredPruningOptions = options_of(job.spec.method)
        super().__init__(job, self.options.base)
        self.every = self.options.regrow_every.steps(job.steps_per_epoch)
        if self.options.regrow > 0 and self.every >= self.steps.retrain:  # events fall strictly inside a retraining
            raise ValueError(
                f"scored_pruning: regrow_every ({self.every} steps) must be shorter than the retraining "
                f"({self.steps.retrain} steps), else no weight ever returns; set method.options.regrow_every, "
                "e.g. '0.25ep'"
            )

    def train(
        self, index: int, mask: Mask, start: StateDict, begin: int, stop: int, snap: int
    ) -> tuple[TrainResult, Mask]:
        if self.options.regrow <= 0:
            return super().train(index, mask, start, begin, stop, snap)
        job = self.job
        hooks = ScoredRegrowth(
            mask,
            self.reference,
            regrow=self.options.regrow,
            every=self.every,
            start=begin,
            end=stop,
            scope=job.spec.method.scope,
            positive_only=self.options.positive_only,
            seed=seed_for(job.spec.seed, index, 3),
        )
        result = _train_with(job, mask, start, begin, stop, snap, hooks)
        _write_regrowth(job, index, mask, hooks)
        # with end_on_best the weights are those of the best evaluation: record the mask of then
        return result, hooks.mask_at(result.early_stop_step, mask) if job.spec.end_on_best else hooks.mask


def _scored_pruning(job: Job) -> None:
    run_levels(job, ScoredPruning(job))


def _train_with(
    job: Job, mask: Mask, start: StateDict, begin: int, stop: int, snap: int, hooks: ScoredRegrowth
) -> TrainResult:
    """``job.train`` with hooks: the same arguments, through the one training loop that runs them."""
    job.model.load_state_dict(start)
    return train(
        job.model,
        job.data,
        job.spec.recipe,
        mask=mask,
        seed=job.spec.seed,
        start_step=begin,
        end_step=stop,
        snapshot_steps=(snap,),
        end_on_best=job.spec.end_on_best,
        progress=job.progress,
        hooks=hooks,
    )


def _write_regrowth(job: Job, level: int, pruned: Mask, hooks: ScoredRegrowth) -> None:
    """Beside the level (written before its metrics.json, so a finished level always has them): the mask
    the level pruned to, and every regrowth event."""
    path = job.run.level(level).path
    path.mkdir(parents=True, exist_ok=True)
    pruned.save(path / PRUNED_MASK)
    atomic_write_json(path / EVENTS, hooks.events)


METHODS.register("scored_pruning")(_scored_pruning)
