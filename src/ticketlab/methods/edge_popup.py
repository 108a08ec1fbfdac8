"""edge-popup (Ramanujan et al., CVPR 2020, "What's hidden in a randomly weighted neural network?"): a
supermask of frozen random weights, found by training one score per weight (§3, Algorithm 1; the authors'
code github.com/allenai/hidden-networks was read, not copied).

* Weights: frozen at initialisation. The paper's best setting, our default, is the Signed Kaiming Constant
  w = sign(w_0)·sqrt(2/fan_in) (§4.1; the code's ``init: signed_constant``, fan_in, ReLU gain);
  ``weights: init`` keeps the spec's initial weights w_0. Biases and BatchNorm parameters stay at their
  initial values (zero and one: the code's layers have no bias and non-affine BatchNorm).
* Scores: initialised Kaiming uniform, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (the code's
  ``kaiming_uniform_(scores, a=sqrt(5))``).
* Forward pass: in each layer the k_l weights with the largest |s| are used, m = top-k(|s|), and the
  network computes with w ⊙ m (k_l = density·N_l: the paper's "top k% in each layer").
* Backward pass: straight-through; the gradient of the mask goes to |s| unchanged (the code's
  ``GetSubnet.backward``), so ∂L/∂s = sign(s) ⊙ w ⊙ ∂L/∂(w ⊙ m).
* Optimiser: SGD, momentum 0.9, weight decay 1e-4 on the scores, cosine decay from lr 0.1 (the code's
  small-scale configs: 100 epochs, batch 128; here the recipe's length and batch size unless the options
  say otherwise).

The rounding of k_l: each layer keeps density·N_l weights, rounded so that the whole network keeps exactly
round(density·N) (largest remainders; the library's exact-density contract). The ranking is always per
layer, so the spec's ``scope`` does not apply and must stay at its default.

Result: the level is the untrained supermask, the mask on the frozen weights, never trained, evaluated on
the validation and test splits (with the BatchNorm running statistics of the score phase: the code's
BatchNorm layers track them while the scores train), as 004's supermask sweep reports its untrained masks;
its controls (reinitialised or shuffled) are evaluated untrained too. The mask's cost is the score phase.
Level 0 is the dense run; every target density has its own score phase (k enters the forward pass).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from pydantic import Field

from ticketlab.masks import Mask, masked_state, top_k
from ticketlab.methods.context import Job
from ticketlab.methods.cost import measure
from ticketlab.methods.levels import Trained, dense_level, pruned_level
from ticketlab.methods.registry import METHODS, OPTIONS, options_of
from ticketlab.methods.scoretrain import (
    Scores,
    ScoreTrainingOptions,
    frozen_weights,
    score_recipe,
    straight_through,
    train_scores,
    write_curve,
)
from ticketlab.models import StateDict
from ticketlab.models.init import fans
from ticketlab.seeding import seed_for

SCORE_INIT_SALT = 47


@OPTIONS.register("edge_popup")
class EdgePopupOptions(ScoreTrainingOptions):
    """Options of ``edge_popup`` (Ramanujan et al. 2020): the score phase's optimiser and the frozen weights."""

    weight_decay: float = Field(1e-4, ge=0, description="weight decay on the scores (the code's configs: 1e-4)")


def layer_counts(sizes: dict[str, int], density: float) -> dict[str, int]:
    """density·N_l per layer, rounded so that the counts add up to round(density·N): floors first, then one
    more for the layers with the largest remainders (ties: the earlier layer)."""
    total = round(density * sum(sizes.values()))
    counts = {name: math.floor(density * n) for name, n in sizes.items()}
    order = sorted(sizes, key=lambda name: -(density * sizes[name] - counts[name]))
    for name in order[: total - sum(counts.values())]:
        counts[name] += 1
    return counts


class EdgePopup:
    """The forward masks of edge-popup: top-k_l of |s| per layer, straight-through to the scores."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def masks(self, scores: Scores) -> Scores:
        out = {}
        for name, s in scores.items():
            magnitude = s.abs()
            keep = torch.zeros(s.numel(), dtype=s.dtype, device=s.device)
            keep[torch.topk(magnitude.detach().flatten(), self.counts[name], sorted=False).indices] = 1
            out[name] = straight_through(keep.view_as(s), magnitude)
        return out

    def penalty(self, scores: Scores) -> float:
        return 0.0

    def after_step(self, done: int, scores: Scores) -> None:
        pass


def kaiming_uniform_scores(weights: StateDict, names: list[str], seed: int, device: torch.device) -> Scores:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) per weight, from a seeded CPU generator (leaf tensors on ``device``)."""
    g = torch.Generator().manual_seed(seed_for(seed, SCORE_INIT_SALT))
    out = {}
    for name in names:
        bound = 1.0 / math.sqrt(fans(weights[name])[0])
        s = torch.empty(weights[name].shape, dtype=torch.float32).uniform_(-bound, bound, generator=g)
        out[name] = s.to(device).requires_grad_()
    return out


def _edge_popup(job: Job) -> None:
    """edge-popup (Ramanujan et al. 2020): per-layer top-k of learned scores, a supermask of frozen weights, untrained."""
    spec = job.spec
    if spec.method.criterion:
        raise ValueError("method.criterion: edge_popup learns its scores (Ramanujan et al. 2020); give no criterion")
    if spec.method.scope != "global":
        raise ValueError(
            "method.scope: edge_popup ranks the scores within each layer (Ramanujan et al. 2020); leave scope at its default"
        )
    options: EdgePopupOptions = options_of(spec.method)
    dense_level(job, job.total_steps)
    for level, density in enumerate(spec.densities, start=1):
        pruned_level(job, level, density, job.init_state, partial(_supermask, job, options, level, density))


def _supermask(job: Job, options: EdgePopupOptions, level: int, density: float) -> Trained:
    """Train the scores for ``density``, take the top-k_l per layer, evaluate the mask untrained."""
    spec = job.spec
    names = sorted(Mask.ones(job.model, spec.exempt))
    weights = frozen_weights(job.init_state, names, options.weights)
    scores = kaiming_uniform_scores(weights, names, spec.seed, next(job.model.parameters()).device)
    counts = layer_counts({n: weights[n].numel() for n in names}, density)
    with measure(job.model) as meter:
        state, curve = train_scores(
            job.model,
            weights,
            scores,
            EdgePopup(counts),
            job.data,
            score_recipe(options, spec.recipe),
            spec.seed,
            job.log,
        )
    final = {n: s.detach().cpu() for n, s in scores.items()}
    mask = top_k({n: final[n].abs() for n in names}, counts, seed=seed_for(spec.seed, level))
    job.check_collapse(mask, level)
    start = masked_state(state, mask)
    cost = meter.cost()
    result = job.train(mask, start, 0, 0, None)  # no step: the supermask evaluated as it is
    write_curve(job.run.level(level).path, curve)
    return Trained(mask, start, result, cost.seconds, final, cost=cost)


METHODS.register("edge_popup")(_edge_popup)
