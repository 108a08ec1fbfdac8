"""Gem-Miner (Sreenivasan et al., NeurIPS 2022, "Rare Gems: Finding Lottery Tickets at Initialization"):
learn a mask on the frozen initial weights by training scores in [0, 1], freezing the lowest scores out step
by step down to the target density, then train the weights of the mask found (§3, Algorithm 1; the authors'
code github.com/ksreenivasan/pruning_is_enough, ``algo: hc_iter``, was read, not copied).

Mask phase, for a target density κ:

* weights frozen at initialisation; their configs use the Signed Kaiming Constant (``init: signed_constant``),
  our default too (``weights: init`` keeps w_0); scores s ~ U[0, 1] (``score_init: unif``);
* forward pass with w ⊙ m, m = 1[s > 0.5] ⊙ f: hard rounding at 0.5, f the weights not yet frozen out;
* backward pass straight-through: ∂L/∂s = f ⊙ w ⊙ ∂L/∂(w ⊙ m) (the code's ``GetSubnet.backward`` passes the
  gradient of the rounded mask to s unchanged; the mask is multiplied by the constant f);
* loss + λ·Σ s² (``regularization: L2``, λ = ``penalty``, 1e-4 in their configs); SGD with momentum 0.9,
  no weight decay, cosine decay from lr 0.1; after every step s is clipped to [0, 1] (the code projects
  before every step and at the end of each epoch: the same sequence of values);
* iterative freezing: every ``period`` steps (their ``iter_period``: 5 epochs) the lowest scores among the
  weights not yet frozen are frozen out (f = 0; ``prune_type: BottomK``, one ranking over all layers as
  the code, or per layer with ``scope: layerwise``), n = floor((T - 1)/period) times, so that after event j
  the density is κ^(j/n) (the code's per-event rate 1 - κ^(1/n)); the last event reaches κ and at least one
  step of score training follows it. We select exactly κ_j·N (ties in a seeded order), the code ceil-rounds.

Option beyond the paper (issue 22 item 4, docs/results/leaderboard/moonshot.md): ``score_init: criterion``
starts the scores from ``method.criterion``'s mask, pruned to κ from w_0 in ``method.rounds`` rounds as
``multishot`` prunes (e.g. 100-round SynFlow): the criterion's ranking (its kept weights first, by their last
scores, then the rest by |w_0|; over all layers, or per layer with ``scope: layerwise``) is spread evenly
over [0, 1] so that the kept weights take (0.5, 1] and the others [0, 0.5): the first forward pass uses
exactly the criterion's mask, and the freezing starts with the weights it ranks lowest
(:func:`criterion_start`). Its scoring is part of the mask's cost.

The mask is then the weights never frozen out: exactly κ·N of them (the code's ``unflag_before_finetune``
trains every weight not frozen out; the rounding 1[s > 0.5] among them is recorded as
``gem_miner_rounded_density``). With T <= period there is no event and the mask is the top κ·N scores.

Weight phase: the mask fixed, the frozen weights (signed constant or w_0) ⊙ mask train with the spec's
recipe (the code fine-tunes with its own LR schedule; here the recipe is that of every ticket), and that
trained ticket is the level. ``mask_only_val_acc`` / ``mask_only_test_acc`` record the mask on the frozen
weights before any weight training (with the score phase's BatchNorm statistics). The mask's cost is its
score phase. Level 0 is the dense run; every target density has its own mask phase (κ sets the freezing).
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
from pydantic import Field

from ticketlab.config.duration import Duration
from ticketlab.config.recipe import DurationField
from ticketlab.config.spec import ExperimentSpec
from ticketlab.masks import Mask, masked_state, select
from ticketlab.methods.context import Job
from ticketlab.methods.cost import measure
from ticketlab.methods.levels import Trained, dense_level, pruned_level
from ticketlab.methods.registry import METHODS, MODEL_CHECKS, OPTIONS, options_of
from ticketlab.methods.scoretrain import (
    Scores,
    ScoreTrainingOptions,
    criterion_order,
    frozen_weights,
    score_recipe,
    straight_through,
    train_scores,
    write_curve,
)
from ticketlab.models import StateDict
from ticketlab.schedules import multishot_densities
from ticketlab.seeding import seed_for
from ticketlab.training.core import steps_per_epoch
from ticketlab.training.evaluate import evaluate

SCORE_INIT_SALT = 53
THRESHOLD = 0.5  # hard rounding of the scores (the code's quantize_threshold)


@OPTIONS.register("gem_miner")
class GemMinerOptions(ScoreTrainingOptions):
    """Options of ``gem_miner`` (Sreenivasan et al. 2022): the mask phase's optimiser, penalty and freezing."""

    penalty: float = Field(1e-4, ge=0, description="λ of the L2 penalty λ·Σs² on the scores (their configs: 1e-4)")
    period: DurationField = Field(
        Duration.parse("5ep"), description="steps between freezing events (their iter_period: 5 epochs)"
    )
    score_init: Literal["uniform", "criterion"] = Field(
        "uniform",
        description="initial scores: U[0, 1] (the paper), or method.criterion's ranking spread over [0, 1] "
        "with its mask above 0.5 (criterion)",
    )


class GemMiner:
    """Rounded, straight-through masks of the scores, the L2 penalty, the clip to [0, 1] and the freezing."""

    def __init__(
        self,
        kept: Mask,
        events: dict[int, float],
        penalty: float,
        scope: Literal["global", "layerwise"],
        seed: int,
    ) -> None:
        self.kept, self.events, self.weight, self.scope, self.seed = kept, events, penalty, scope, seed

    def masks(self, scores: Scores) -> Scores:
        out = {}
        for name, s in scores.items():
            f = self.kept[name].to(s.device, s.dtype)
            out[name] = straight_through((s > THRESHOLD).to(s.dtype), s) * f
        return out

    def penalty(self, scores: Scores) -> torch.Tensor | float:
        if not self.weight:
            return 0.0
        return self.weight * sum((s * s).sum() for s in scores.values())

    def after_step(self, done: int, scores: Scores) -> None:
        for s in scores.values():
            s.clamp_(0.0, 1.0)
        if done in self.events:
            # BottomK: the lowest scores among the weights not yet frozen out are frozen out
            current = {name: s.detach() for name, s in scores.items()}
            self.kept = select(
                current, self.events[done], self.scope, previous=self.kept, seed=seed_for(self.seed, done)
            )


def freezing_events(target: float, steps: int, period: int) -> dict[int, float]:
    """Step -> density after the freezing there: n = floor((steps-1)/period) events at period, 2·period, ...,
    event j keeping target**(j/n) (the last one: the target)."""
    n = (steps - 1) // period if period > 0 else 0
    if n < 1:
        return {}
    return {j * period: d for j, d in enumerate(multishot_densities(target, n), start=1)}


def uniform_scores(names: list[str], weights: StateDict, seed: int, device: torch.device) -> Scores:
    """s ~ U[0, 1] per weight, from a seeded CPU generator (leaf tensors on ``device``)."""
    g = torch.Generator().manual_seed(seed_for(seed, SCORE_INIT_SALT))
    return {n: torch.rand(weights[n].shape, generator=g).to(device).requires_grad_() for n in names}


def split_ranked(order: torch.Tensor, kept: int) -> torch.Tensor:
    """Values in [0, 1] for weights in ``order`` (flat indices, best first), the first ``kept`` above 0.5:
    position j < k takes 1 - 0.5·j/k, position j >= k takes 0.5·(n-1-j)/(n-k) (n weights)."""
    n = order.numel()
    j = torch.arange(n, dtype=torch.float64)
    ranked = torch.where(j < kept, 1.0 - 0.5 * j / max(kept, 1), 0.5 * (n - 1 - j) / max(n - kept, 1))
    values = torch.empty(n, dtype=torch.float64)
    values[order] = ranked
    return values


def criterion_start(job: Job, density: float, level: int, names: list[str]) -> Scores:
    """``score_init: criterion``: prune w_0 to ``density`` with the spec's criterion in its rounds (as
    ``multishot``); its ranking spread over [0, 1] by :func:`split_ranked` (over all layers, or per layer
    with ``scope: layerwise``), as leaf tensors on the model's device."""
    mask, last = job.prune_initial(density, level)
    magnitude = {n: job.init_state[n].abs() for n in names}
    device = next(job.model.parameters()).device
    groups = [[n] for n in names] if job.spec.method.scope == "layerwise" else [names]
    out = {}
    for group in groups:
        order = criterion_order(mask, last, magnitude, group)
        values = split_ranked(order, sum(int(mask[n].sum()) for n in group))
        parts = torch.split(values, [mask[n].numel() for n in group])
        out.update({n: p.view(mask[n].shape).float().to(device).requires_grad_() for n, p in zip(group, parts)})
    return out


def check_spec(spec: ExperimentSpec, model: torch.nn.Module) -> None:
    """A criterion exactly with ``score_init: criterion``, checked before a run writes anything."""
    options: GemMinerOptions = options_of(spec.method)
    if bool(spec.method.criterion) != (options.score_init == "criterion"):
        raise ValueError(
            "method.criterion: gem_miner learns its scores (Sreenivasan et al. 2022); it takes a criterion "
            "only to start them from its mask (option score_init=criterion), and that option needs one"
        )


def _gem_miner(job: Job) -> None:
    """Gem-Miner (Sreenivasan et al. 2022): scores in [0, 1], frozen out to the target, then the weights trained."""
    spec = job.spec
    options: GemMinerOptions = options_of(spec.method)
    check_spec(spec, job.model)
    dense_level(job, job.total_steps)
    for level, density in enumerate(spec.densities, start=1):
        pruned_level(job, level, density, job.init_state, partial(_ticket, job, options, level, density))


def _ticket(job: Job, options: GemMinerOptions, level: int, density: float) -> Trained:
    """The mask phase for ``density`` (cost measured), the mask on the frozen weights evaluated, the ticket trained."""
    spec = job.spec
    names = sorted(Mask.ones(job.model, spec.exempt))
    weights = frozen_weights(job.init_state, names, options.weights)
    recipe = score_recipe(options, spec.recipe)
    spe = steps_per_epoch(len(job.data.x_train), recipe.batch_size)
    events = freezing_events(density, recipe.total_steps(spe), options.period.steps(spe))
    rule = GemMiner(
        Mask.ones(job.model, spec.exempt), events, options.penalty, spec.method.scope, seed_for(spec.seed, level)
    )
    with measure(job.model) as meter:
        if options.score_init == "criterion":  # its scoring passes are part of the mask's cost
            scores = criterion_start(job, density, level, names)
        else:
            scores = uniform_scores(names, weights, spec.seed, next(job.model.parameters()).device)
        state, curve = train_scores(job.model, weights, scores, rule, job.data, recipe, spec.seed, job.log)
    final = {n: s.detach().cpu() for n, s in scores.items()}
    kept = {n: rule.kept[n].cpu() for n in names}
    mask = select(final, density, spec.method.scope, previous=kept, seed=seed_for(spec.seed, level))
    rounded = sum(int(((final[n] > THRESHOLD) & mask[n]).sum()) for n in names) / mask.total()
    extra = {"gem_miner_rounded_density": rounded, **_mask_only(job, masked_state(state, mask))}
    write_curve(job.run.level(level).path, curve)
    job.check_collapse(mask, level)
    start = masked_state(weights, mask)
    cost = meter.cost()
    return Trained(
        mask, start, job.train(mask, start, 0, job.total_steps, None), cost.seconds, final, cost=cost, extra=extra
    )


def _mask_only(job: Job, state: StateDict) -> dict[str, float]:
    """Validation and test accuracy of the mask on the frozen weights, no weight trained."""
    job.model.load_state_dict(state)
    out = {}
    for split in ("val", "test"):
        metrics = evaluate(job.model, getattr(job.data, f"x_{split}"), getattr(job.data, f"y_{split}"))
        out[f"mask_only_{split}_acc"], out[f"mask_only_{split}_loss"] = metrics["acc"], metrics["loss"]
    return out


METHODS.register("gem_miner")(_gem_miner)
MODEL_CHECKS["gem_miner"] = check_spec
