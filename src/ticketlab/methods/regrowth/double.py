"""Double-pruning (001 §5; the precise rule is SPEC's, "Schedules"): iterative pruning that also trains
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
import time

import torch

from ticketlab.masks import Mask, masked_state, select, top_k
from ticketlab.methods.registry import METHODS, OPTIONS, options_of
from ticketlab.methods.iterative import dense_level
from ticketlab.methods.context import Job
from ticketlab.methods.regrowth.common import RegrowthOptions, Replay, base_steps, rewound_reference
from ticketlab.schedules import iterative_densities, multishot_densities
from ticketlab.models import StateDict
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
            k = int(round(density * mask.total()))
            cap: int | dict[str, int] = min(math.floor(regrow * k + 1e-9), pruned.kept())
        else:
            cap = {
                n: min(math.floor(regrow * int(round(density * m.numel())) + 1e-9), int(pruned[n].sum()))
                for n, m in mask.items()
            }
        candidates = top_k(scores, cap, pruned, seed_for(seed, 1))
        allowed = Mask({n: mask[n] | candidates[n] for n in mask})
    return select(scores, density, scope, previous=allowed, seed=seed)


def _double_pruning(job: Job) -> None:
    spec, method = job.spec, job.spec.method
    options: DoublePruningOptions = options_of(method)
    if job.criterion != "magnitude":
        raise ValueError(f"double_pruning scores by magnitude (|w_T| and |u_T|); criterion {job.criterion!r} is not allowed")
    if method.rounds != 1:
        raise ValueError("double_pruning prunes in one round per level; rounds must be 1")
    s = base_steps(job, options.base)

    mask, trained, rewind, end = dense_level(job, s)
    dense_rewind = rewind
    reference = rewound_reference(None, rewind, mask)
    complement: StateDict | None = None

    levels = iterative_densities(spec.densities, method.K)
    for level, density in enumerate(levels, start=1):
        row = job.resume(level)
        if row is None:
            started = time.perf_counter()
            # the same density as job.prune computes for one round (bit-identical to the base preset)
            d = multishot_densities(density, 1, method.round_schedule, start=mask.density())[0]
            scores = double_pruning_scores(trained, complement, mask)
            mask = regrow_select(scores, mask, d, options.regrow, method.scope, seed_for(spec.seed, level, 0))
            score_time = time.perf_counter() - started
            job.check_collapse(mask, level)
            start = masked_state(reference, mask)
            begin = end - s.rewind_lr
            result = job.train(mask, start, begin, begin + s.retrain, begin + s.retrain - s.rewind_params)
            row = job.record(
                level, mask, result, start, target=density, score_time=score_time,
                rewind=result.snapshots[begin + s.retrain - s.rewind_params], scores=scores,
            )
            job.run_controls(level, mask, start, dense_rewind, result, density)
        else:
            d = job.run.level(level)
            job.run_controls(level, d.mask(), d.weights("start"), dense_rewind, Replay(row), density)
        d = job.run.level(level)
        mask, trained, rewind = d.mask(), d.weights("final"), d.weights("rewind")
        if options.regrow > 0 and level < len(levels):
            complement = _complement(job, level, mask, reference, row, density)
        reference = rewound_reference(reference, rewind, mask)
        end = row["end_step"]


def _complement(job: Job, level: int, mask: Mask, reference: StateDict, row: dict, density: float) -> StateDict:
    """Train the pruned weights alone from the ticket's rewind point for the ticket's steps; their final
    values |u_T| score them for the next level."""
    if job.resume(level, COMPLEMENT) is None:
        inverse = Mask({n: ~m for n, m in mask.items()})
        start = masked_state(reference, inverse)
        result = job.train(inverse, start, row["start_step"], row["end_step"], None)
        job.record(level, inverse, result, start, target=1.0 - density, control=COMPLEMENT)
    return job.run.level(level, COMPLEMENT).weights("final")


METHODS.register("double_pruning")(_double_pruning)
