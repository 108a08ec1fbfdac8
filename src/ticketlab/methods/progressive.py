"""Progressive skeletonization at initialisation: Iterative SNIP and FORCE (de Jorge et al., ICLR 2021,
"Progressive Skeletonization: Trimming more fat from a network at initialization").

Both prune the initialised network in T steps along the exponential schedule κ_t = κ^(t/T) (the density
kept after step t = 1..T, κ the target; the paper's exponential decay, the code's ``mode='exp'``; ``linear``
is the alternative both offer), recomputing at every step the connection sensitivity of the network as
pruned so far (the FORCE objective, §3; the gradient is taken at the pruned network θ ⊙ m):

    S_i(θ, m) = |θ_i · ∂L(θ ⊙ m) / ∂(θ ⊙ m)_i|

* **Iterative SNIP** (§4, the first approximation): the scored weights are θ ⊙ m, so a pruned weight scores
  0, and each step keeps the top κ_t·N of the weights still kept: pruning is permanent, the masks nest.
* **FORCE** (§4, Algorithm 1): the scored weights are the *dense* θ, with the pruned network's gradient, for
  ALL weights: a weight pruned at an earlier step scores |θ_i · g_i| like any other and can come back
  ("resurrect"); each step keeps the top κ_t·N of all weights, so the masks need not nest.

Both select exactly κ_t·N weights (ties in a seeded order; the authors' code thresholds, which can keep a few
more) over the whole network (``scope: global``, as their code) or per layer (``scope: layerwise``).

Defaults follow the authors' code (github.com/naver/force, read, not copied): T = 60 steps (the command its
README gives for CIFAR and ImageNet; the paper's own T could not be checked here), one batch per step
(``num_batches`` 1, its CIFAR-10 setting) of the training batch size, drawn afresh from the shuffled,
augmented training data at every step (the code takes ``next(iter(train_loader))`` per batch), the network
in train mode (BatchNorm on batch statistics: the code never calls ``eval()`` before pruning), the
gradient of the batches' mean cross-entropy (their code averages over batches; the sum we take ranks
alike). ``multishot`` with criterion ``snip`` and ``rounds`` = T is Iterative SNIP except in its batches:
it scores every round on the same class-balanced pruning batches, in eval mode; ``iter_snip`` with
``fresh_batches: false, train_mode: false`` is exactly that run (tested).

Run directory: level 0 = the dense run; one level per target density, pruned from the initialisation and
trained for the recipe's length, as every method at initialisation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from ticketlab.criteria import Scores, ScoringContext, score
from ticketlab.criteria.base import masked_weights
from ticketlab.criteria.snip import loss_gradient
from ticketlab.data.batches import pruning_batches
from ticketlab.masks import Mask, masked_state, prunable_parameters, select
from ticketlab.methods.context import Job
from ticketlab.methods.cost import measure
from ticketlab.methods.levels import Trained, dense_level, pruned_level
from ticketlab.methods.registry import METHODS, OPTIONS, options_of
from ticketlab.schedules import multishot_densities
from ticketlab.seeding import seed_for
from ticketlab.training.core import Batches

BATCH_SALT = 41  # the pruning steps' data order and augmentation: a stream of their own
Batch = tuple[torch.Tensor, torch.Tensor]


class ProgressiveOptions(BaseModel):
    """Options of the progressive methods at initialisation (``-o key=value``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int = Field(60, ge=1, description="pruning steps T (naver/force README: --num_steps 60)")
    schedule: Literal["exponential", "linear"] = Field(
        "exponential", description="density after step t: target**(t/T) (exponential) or 1-(1-target)*t/T"
    )
    batches: int = Field(1, ge=1, description="batches per step whose mean-loss gradients are summed")
    batch_size: int | None = Field(None, ge=1, description="examples per batch (default: the recipe's batch size)")
    fresh_batches: bool = Field(
        True,
        description="new training batches every step (augmented, as the authors' loader); false: the "
        "spec's class-balanced pruning batches at every step",
    )
    train_mode: bool = Field(True, description="score in train mode (BatchNorm on batch statistics), as their code")


@OPTIONS.register("iter_snip")
class IterSnipOptions(ProgressiveOptions):
    """Options of ``iter_snip``: Iterative SNIP (de Jorge et al. 2021, §4), pruning permanent."""


@OPTIONS.register("force")
class ForceOptions(ProgressiveOptions):
    """Options of ``force``: FORCE (de Jorge et al. 2021, Algorithm 1), pruned weights may return."""


def force_scores(model: torch.nn.Module, mask: Mask, ctx: ScoringContext) -> Scores:
    """|θ ⊙ ∂L(θ ⊙ m)/∂(θ ⊙ m)| for every masked parameter, pruned weights included (de Jorge et al. 2021,
    FORCE saliency of Algorithm 1): θ the model's dense weights, the gradient that of the pruned network."""
    grads = loss_gradient(model, masked_weights(model, mask), ctx, "force")
    params = prunable_parameters(model)
    return {name: (params[name].detach() * g).abs() for name, g in grads.items()}


def skeletonize(
    model: torch.nn.Module,
    mask: Mask,
    density: float,
    batches: Callable[[int], Sequence[Batch]],
    *,
    steps: int,
    schedule: Literal["exponential", "linear"],
    force: bool,
    scope: Literal["global", "layerwise"],
    seed: int,
    level: int,
    train_mode: bool,
) -> tuple[Mask, Scores]:
    """Prune ``model`` (its weights are θ; never written to) from ``mask`` to ``density`` in ``steps`` steps;
    step t scores on ``batches(t)``. FORCE selects among all weights, Iterative SNIP among those still kept.
    Returns the final mask and the last step's scores."""
    scores: Scores = {}
    for t, d in enumerate(multishot_densities(density, steps, schedule, start=mask.density())):
        ctx = ScoringContext(batches=batches(t), seed=seed, options={"train_mode": train_mode})
        rank = seed_for(seed, level, t)  # the seeds of Job.prune's rounds: ties break alike
        if force:
            scores = force_scores(model, mask, ctx)
            mask = select(scores, d, scope, seed=rank)
        else:
            scores = score("snip", model, mask, ctx)
            mask = select(scores, d, scope, previous=mask, seed=rank)
    return mask, scores


def step_batches(job: Job, options: ProgressiveOptions) -> Callable[[int], list[Batch]]:
    """Step t's batches: the next ``options.batches`` of a seeded pass through the (augmented) training data,
    or the spec's pruning batches at every step."""
    if not options.fresh_batches:
        method = job.spec.method
        fixed = pruning_batches(job.data, method.pruning_batches, method.pruning_samples_per_class, job.spec.seed)
        return lambda t: fixed
    size = options.batch_size or job.spec.recipe.batch_size
    stream = Batches(
        job.data, size, [seed_for(job.spec.seed, BATCH_SALT)], augment_seeds=[job.spec.seed], salt=BATCH_SALT
    )

    def draw(t: int) -> list[Batch]:
        out = []
        for b in range(options.batches):
            x, y = stream(t * options.batches + b)
            out.append((x[0], y[0]))
        return out

    return draw


def _progressive(job: Job, force: bool) -> None:
    spec = job.spec
    name = "force" if force else "iter_snip"
    if spec.method.criterion:
        raise ValueError(
            f"method.criterion: {name} scores by connection sensitivity (de Jorge et al. 2021); give no criterion"
        )
    options: ProgressiveOptions = options_of(spec.method)
    dense_level(job, job.total_steps)
    for level, density in enumerate(spec.densities, start=1):
        pruned_level(job, level, density, job.init_state, partial(_at_init, job, options, force, level, density))


def _at_init(job: Job, options: ProgressiveOptions, force: bool, level: int, density: float) -> Trained:
    """Skeletonize the initialisation to ``density`` (cost measured) and train the ticket for the recipe."""
    spec = job.spec
    job.model.load_state_dict(job.init_state)
    with measure(job.model) as meter:
        mask, scores = skeletonize(
            job.model,
            Mask.ones(job.model, spec.exempt),
            density,
            step_batches(job, options),
            steps=options.steps,
            schedule=options.schedule,
            force=force,
            scope=spec.method.scope,
            seed=spec.seed,
            level=level,
            train_mode=options.train_mode,
        )
    job.check_collapse(mask, level)
    start = masked_state(job.init_state, mask)
    cost = meter.cost()
    return Trained(mask, start, job.train(mask, start, 0, job.total_steps, None), cost.seconds, scores, cost=cost)


@METHODS.register("iter_snip")
def iter_snip(job: Job) -> None:
    """Iterative SNIP (de Jorge et al. 2021, §4): T steps at initialisation, pruning permanent."""
    _progressive(job, force=False)


@METHODS.register("force")
def force(job: Job) -> None:
    """FORCE (de Jorge et al. 2021, Algorithm 1): T steps at initialisation, pruned weights may return."""
    _progressive(job, force=True)
