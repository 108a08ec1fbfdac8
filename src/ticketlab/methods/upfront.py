"""Pruning at initialisation (000 §3.1): score the untrained network, prune to the target, train.

Upfront single-shot (USS) scores once; upfront multi-shot (UMS) re-scores the masked network in
``rounds`` steps of exponentially (or linearly) decreasing density. Each target density is its own
level, pruned independently from the same initialisation; level 0 is the dense run.
"""

from __future__ import annotations

from functools import partial

from ticketlab.masks import Mask
from ticketlab.methods.context import Job
from ticketlab.methods.levels import Trained, dense_level, pruned_level
from ticketlab.methods.registry import METHODS


def _upfront(job: Job) -> None:
    dense_level(job, job.total_steps)
    rounds = job.resolved.rounds
    for level, density in enumerate(job.spec.densities, start=1):
        pruned_level(job, level, density, job.init_state, partial(_at_init, job, level, density, rounds))


def _at_init(job: Job, level: int, density: float, rounds: int) -> Trained:
    """Prune the initialisation to ``density`` and train the ticket for the whole recipe."""
    job.model.load_state_dict(job.init_state)
    mask, scores, cost = job.prune(Mask.ones(job.model, job.spec.exempt), density, rounds, level)
    job.check_collapse(mask, level)
    start = {k: v.clone() for k, v in job.model.state_dict().items()}
    return Trained(mask, start, job.train(mask, start, 0, job.total_steps, None), cost.seconds, scores, cost=cost)


METHODS.register("oneshot")(_upfront)
METHODS.register("multishot")(_upfront)
