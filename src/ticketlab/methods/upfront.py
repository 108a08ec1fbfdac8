"""Pruning at initialisation (000 §3.1): score the untrained network, prune to the target, train.

Upfront single-shot (USS) scores once; upfront multi-shot (UMS) re-scores the masked network in
``rounds`` steps of exponentially (or linearly) decreasing density. Each target density is its own
level, pruned independently from the same initialisation; level 0 is the dense run.
"""

from __future__ import annotations

from ticketlab.masks import Mask
from ticketlab.methods.registry import METHODS, resolve_method
from ticketlab.methods.context import Job
def dense_level(job: Job, end_step: int) -> None:
    """Level 0: the dense network trained from initialisation (baseline and winning-ticket reference)."""
    if job.resume(0) is not None:
        return
    mask = Mask.ones(job.model, job.spec.exempt)
    result = job.train(mask, job.init_state, 0, end_step, None)
    job.record(0, mask, result, job.init_state, target=1.0)


def _upfront(job: Job) -> None:
    total = job.spec.recipe.total_steps(_spe(job))
    dense_level(job, total)
    _, rounds = resolve_method(job.spec.method)
    for level, density in enumerate(job.spec.densities, start=1):
        if job.resume(level) is not None:
            continue
        job.model.load_state_dict(job.init_state)
        mask, scores, score_time = job.prune(Mask.ones(job.model, job.spec.exempt), density, rounds, level)
        job.check_collapse(mask, level)
        start = {k: v.clone() for k, v in job.model.state_dict().items()}
        result = job.train(mask, start, 0, total, None)
        job.record(level, mask, result, start, target=density, score_time=score_time, scores=scores)
        job.run_controls(level, mask, start, job.init_state, result, density)


def _spe(job: Job) -> int:
    from ticketlab.training.loop import steps_per_epoch
    return steps_per_epoch(len(job.data.x_train), job.spec.recipe.batch_size)


METHODS.register("oneshot")(_upfront)
METHODS.register("multishot")(_upfront)
