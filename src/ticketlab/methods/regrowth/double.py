"""Double-pruning (001 §5 names it; the precise rule is ours): iterative pruning that also trains
the network of the pruned weights, so a weight pruned too early can come back.

At every level l >= 1, after the ticket (mask m_l) is trained, the complement network (mask ~m_l: only
the pruned weights active) is trained from the same rewind point for the same steps, and recorded as
the level's ``complement`` control. The next mask keeps the top density_{l+1}·N weights by
|w_T| (ticket run) for kept weights and |u_T| (complement run) for pruned ones, with at most
floor(regrow · k) of its k weights taken from the pruned ones. Returning weights start from their rewound
value (for ``lottery``: the initialisation). ``regrow: 0`` skips the complement runs and is the ``base``
preset bit for bit.
"""

from __future__ import annotations

import math

import torch

from ticketlab.masks import Mask, masked_state, select, top_k
from ticketlab.methods.context import Job
from ticketlab.methods.cost import Cost, measure
from ticketlab.methods.levels import Level, run_levels
from ticketlab.methods.registry import METHODS, OPTIONS, options_of
from ticketlab.methods.regrowth.common import Regrowing, RegrowthOptions
from ticketlab.models import StateDict
from ticketlab.schedules import multishot_densities
from ticketlab.seeding import seed_for

COMPLEMENT = "complement"


class DoublePruningOptions(RegrowthOptions):
    """Options of ``double_pruning`` (see :class:`RegrowthOptions`)."""


OPTIONS.register("double_pruning")(DoublePruningOptions)


def double_pruning_scores(trained: StateDict, complement: StateDict | None, mask: Mask) -> dict[str, torch.Tensor]:
    """|w_T| of the ticket run where the mask keeps a weight, |u_T| of the complement run where it does not."""
    out = {}
    for name, keep in mask.items():
        w = trained[name].abs()
        u = complement[name].abs() if complement is not None else torch.zeros_like(w)
        out[name] = torch.where(keep.to(w.device), w, u.to(w.device))
    return out


def regrow_select(
    scores: dict[str, torch.Tensor], mask: Mask, density: float, regrow: float, scope: str, seed: int
) -> Mask:
    """The next mask: exactly round(density·N) weights (per layer for ``layerwise``) with the highest
    scores, at most floor(regrow·k) of them outside ``mask``. The best outsiders are admitted first, then
    one exact top-k runs over the kept weights and them, so no other choice within the cap scores higher."""
    allowed = mask
    if regrow > 0:
        pruned = Mask({n: ~m for n, m in mask.items()})
        if scope == "global":
            k = round(density * mask.total())
            cap: int | dict[str, int] = min(math.floor(regrow * k + 1e-9), pruned.kept())
        else:
            cap = {
                n: min(math.floor(regrow * round(density * m.numel()) + 1e-9), int(pruned[n].sum()))
                for n, m in mask.items()
            }
        candidates = top_k(scores, cap, pruned, seed_for(seed, 1))
        allowed = Mask({n: mask[n] | candidates[n] for n in mask})
    return select(scores, density, scope, previous=allowed, seed=seed)


class DoublePruning(Regrowing):
    """The next mask from |w_T| of the ticket run and |u_T| of the complement run (trained after each level
    but the last, while ``regrow`` > 0)."""

    def __init__(self, job: Job) -> None:
        self.options: DoublePruningOptions = options_of(job.spec.method)
        if job.criterion != "magnitude":
            raise ValueError(
                f"double_pruning scores by magnitude (|w_T| and |u_T|); criterion {job.criterion!r} is not allowed"
            )
        if job.resolved.rounds != 1:
            raise ValueError("double_pruning prunes in one round per level; rounds must be 1")
        super().__init__(job, self.options.base)
        self.complement: StateDict | None = None

    def prune(self, previous: Level, density: float, index: int) -> tuple[Mask, dict[str, torch.Tensor], Cost]:
        job = self.job
        with measure(job.model) as meter:
            method = job.spec.method
            # the same density as job.prune computes for one round (bit-identical to the base preset)
            d = multishot_densities(density, 1, method.round_schedule, start=previous.mask.density())[0]
            scores = double_pruning_scores(previous.final, self.complement, previous.mask)
            seed = seed_for(job.spec.seed, index, 0)
            mask = regrow_select(scores, previous.mask, d, self.options.regrow, method.scope, seed)
        # the complement run that scored the pruned weights is part of what this mask cost
        complement = job.run.level(previous.index, COMPLEMENT)
        trained = job.training_cost(complement.metrics()) if self.complement is not None and complement.done else Cost()
        return mask, scores, meter.cost() + trained

    def finished(self, level: Level, last: bool) -> None:
        if self.options.regrow > 0 and level.index > 0 and not last:
            self.complement = self._complement(level)
        super().finished(level, last)  # the complement starts from the reference this level started from

    def _complement(self, level: Level) -> StateDict:
        """Train the pruned weights alone from the ticket's rewind point for the ticket's steps; their final
        values |u_T| score them for the next level."""
        job = self.job
        if job.resume(level.index, COMPLEMENT) is None:
            assert self.reference is not None
            inverse = Mask({n: ~m for n, m in level.mask.items()})
            start = masked_state(self.reference, inverse)
            result = job.train(inverse, start, level.row["start_step"], level.end_step, None)
            job.record(
                level.index, inverse, result, start, target=1.0 - level.row["target_density"], control=COMPLEMENT
            )
        return job.run.level(level.index, COMPLEMENT).weights("final")


def _double_pruning(job: Job) -> None:
    run_levels(job, DoublePruning(job))


METHODS.register("double_pruning")(_double_pruning)
