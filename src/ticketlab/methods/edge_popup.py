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
round(density·N) (largest remainders; the library's exact-density contract). The ranking is per layer
(or global by the ``ranking`` option, below), so the spec's ``scope`` does not apply and must stay at its
default.

Options beyond the paper (issue 22 item 4, docs/results/leaderboard/moonshot.md):

* ``score_init: magnitude``: the scores start at |w_0|, the spec's initial weights (a magnitude ranking that
  the score phase then revises), instead of Kaiming uniform;
* ``score_init: criterion``: the scores start from ``method.criterion``'s mask, pruned to the target density
  in ``method.rounds`` rounds from w_0 as ``multishot`` prunes (e.g. 100-round SynFlow): the criterion's
  ranking (its kept weights first, by their last scores, then the rest by |w_0|) takes the values of the
  sorted |w_0| (over all layers with ``ranking: global``, within each layer otherwise), so the first forward
  pass uses the criterion's mask and the scores have the scale of ``magnitude``'s (:func:`rank_matched`);
  its scoring is part of the mask's cost;
* ``shares``: the kept weights split between the prunable layers in these proportions (one positive number
  per layer, in the model's order, normalised), not density·N_l per layer: k_l = share_l·round(density·N),
  a layer whose share exceeds its size kept whole and its excess spread over the others in proportion to
  their shares, rounded by largest remainders (see :func:`share_counts`); the total stays round(density·N);
* ``rank: value``: the scores are ranked by their value s, not |s| as in the authors' code (there a score
  pushed far below zero comes back in; here it stays out), and the straight-through gradient goes to s
  unchanged (``abs``: sign(s) times it);
* ``ranking: global``: one top-k of the ranked scores (|s| or s) over all layers, k = round(density·N), in the forward passes and
  for the final mask, so the score phase decides how many weights each layer keeps (with ``score_init:
  magnitude`` it starts from global magnitude pruning's split); cannot go with ``shares``;
* ``normalise: true``: in the score phase every prunable layer but the last standardises its outputs over
  the batch (batch normalisation without affine parameters, per output unit or channel, before the
  activation; :func:`~ticketlab.methods.scoretrain.standardised`), so a unit with few kept inputs is not
  silenced by its small fan-in; the weights stay w_0 (or the constants), and neither the ticket's training
  nor any evaluation uses it;
* ``train: true``: the mask's weights (the frozen weights ⊙ mask) are then trained with the spec's recipe,
  as Gem-Miner's weight phase, and the level is that trained ticket (its controls are trained too); with
  ``weights: init`` the ticket starts from w_0 like every upfront mask.

Result (``train: false``, the default): the level is the untrained supermask, the mask on the frozen weights, never trained, evaluated on
the validation and test splits (with the BatchNorm running statistics of the score phase: the code's
BatchNorm layers track them while the scores train), as 004's supermask sweep reports its untrained masks;
its controls (reinitialised or shuffled) are evaluated untrained too. The mask's cost is the score phase.
Level 0 is the dense run; every target density has its own score phase (k enters the forward pass).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal

import torch
from pydantic import Field, PositiveFloat

from ticketlab.config.spec import ExperimentSpec
from ticketlab.masks import Mask, masked_state, prunable_parameters, top_k
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
    standardised,
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
    score_init: Literal["kaiming_uniform", "magnitude", "criterion"] = Field(
        "kaiming_uniform",
        description="initial scores: Kaiming uniform (the paper), |w_0| (magnitude), or the ranking of "
        "method.criterion's mask on the values of |w_0| (criterion)",
    )
    shares: tuple[PositiveFloat, ...] | None = Field(
        None,
        description="share of the kept weights per prunable layer, in the model's order (normalised); "
        "default: every layer keeps the density",
    )
    rank: Literal["abs", "value"] = Field(
        "abs", description="rank the scores by |s| (the paper's code) or by s (a score pushed below 0 stays out)"
    )
    ranking: Literal["layer", "global"] = Field(
        "layer", description="top-k of |s| per layer (the paper) or over all layers (the split learned)"
    )
    normalise: bool = Field(
        False, description="score phase: standardise every hidden layer's outputs over the batch (no affine)"
    )
    train: bool = Field(
        False,
        description="train the mask's weights with the recipe; the level is the trained ticket (default: untrained)",
    )


def layer_counts(sizes: dict[str, int], density: float) -> dict[str, int]:
    """density·N_l per layer, rounded so that the counts add up to round(density·N): floors first, then one
    more for the layers with the largest remainders (ties: the earlier layer)."""
    total = round(density * sum(sizes.values()))
    counts = {name: math.floor(density * n) for name, n in sizes.items()}
    order = sorted(sizes, key=lambda name: -(density * sizes[name] - counts[name]))
    for name in order[: total - sum(counts.values())]:
        counts[name] += 1
    return counts


def share_counts(sizes: dict[str, int], shares: dict[str, float], total: int) -> dict[str, int]:
    """``total`` kept weights split in proportion to ``shares`` (positive), no layer above its size.

    Water-filling: a layer whose proportional part exceeds its size is kept whole and the rest is split
    again among the others in proportion to their shares, until none exceeds; then the parts are floored
    and the remaining weights go one each to the layers with the largest remainders that have room (ties:
    the earlier layer in ``sizes``' order). ``total`` must not exceed the sizes' sum."""
    if total > sum(sizes.values()):
        raise ValueError(f"cannot keep {total} weights of {sum(sizes.values())}")
    full: set[str] = set()
    while True:
        left = total - sum(sizes[n] for n in full)
        weight = sum(shares[n] for n in sizes if n not in full)
        part = {n: float(sizes[n]) if n in full else left * shares[n] / weight for n in sizes}
        over = {n for n in sizes if n not in full and part[n] > sizes[n]}
        if not over:
            break
        full |= over
    counts = {n: min(sizes[n], math.floor(part[n])) for n in sizes}
    order = sorted((n for n in sizes if counts[n] < sizes[n]), key=lambda n: -(part[n] - counts[n]))
    for n in order[: total - sum(counts.values())]:
        counts[n] += 1
    return counts


def level_counts(
    model: torch.nn.Module, exempt: list[str], density: float, options: EdgePopupOptions
) -> dict[str, int] | int:
    """k_l per prunable layer: density·N_l (:func:`layer_counts`) or the ``shares`` option's split; with
    ``ranking: global`` one count for all layers, round(density·N)."""
    params = prunable_parameters(model, exempt)
    sizes = {n: p.numel() for n, p in params.items()}
    shares = options.shares
    if options.ranking == "global":
        if shares is not None:
            raise ValueError("method.options.shares: ranking global learns the layers' shares; give one or the other")
        return round(density * sum(sizes.values()))
    if shares is None:
        return layer_counts(sizes, density)
    if len(shares) != len(sizes):
        raise ValueError(
            f"method.options.shares: give one share per prunable layer, {len(sizes)} here ({', '.join(sizes)}), "
            f"got {len(shares)}"
        )
    return share_counts(sizes, dict(zip(sizes, shares)), round(density * sum(sizes.values())))


class EdgePopup:
    """The forward masks of edge-popup: top-k_l of |s| per layer (one top-k over all layers for an int
    count), straight-through to the scores."""

    def __init__(self, counts: dict[str, int] | int, rank: str = "abs") -> None:
        self.counts, self.rank = counts, rank

    def ranked(self, s: torch.Tensor) -> torch.Tensor:
        """What is ranked: |s| (the paper's code) or s itself (``rank: value``)."""
        return s.abs() if self.rank == "abs" else s

    def masks(self, scores: Scores) -> Scores:
        if isinstance(self.counts, int):
            return self._global(scores)
        out = {}
        for name, s in scores.items():
            magnitude = self.ranked(s)
            keep = torch.zeros(s.numel(), dtype=s.dtype, device=s.device)
            keep[torch.topk(magnitude.detach().flatten(), self.counts[name], sorted=False).indices] = 1
            out[name] = straight_through(keep.view_as(s), magnitude)
        return out

    def _global(self, scores: Scores) -> Scores:
        magnitudes = {name: self.ranked(s) for name, s in scores.items()}
        flat = torch.cat([m.detach().flatten() for m in magnitudes.values()])
        keep = torch.zeros(flat.numel(), dtype=flat.dtype, device=flat.device)
        keep[torch.topk(flat, int(self.counts), sorted=False).indices] = 1
        parts = torch.split(keep, [m.numel() for m in magnitudes.values()])
        return {n: straight_through(p.view_as(m), m) for (n, m), p in zip(magnitudes.items(), parts)}

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


def magnitude_scores(initial: StateDict, names: list[str], device: torch.device) -> Scores:
    """|w_0| per weight (leaf tensors on ``device``)."""
    return {n: initial[n].detach().abs().to(device, torch.float32).requires_grad_() for n in names}


def rank_matched(mask: Mask, last: Scores, magnitude: Scores, per_layer: bool) -> dict[str, torch.Tensor]:
    """Scores that rank the weights as a criterion's mask does, on the values of |w_0|: the order is kept
    weights first, then by ``last`` (the criterion's last scores), then by ``magnitude``; the j-th weight in
    that order gets the j-th largest value of ``magnitude`` (over all layers, or within its layer with
    ``per_layer``). A top-k of the result at the mask's count is the mask (with distinct magnitudes)."""
    groups = [[n] for n in mask] if per_layer else [list(mask)]
    out = {}
    for names in groups:
        order = criterion_order(mask, last, magnitude, names)
        values = torch.cat([magnitude[n].detach().flatten().cpu().double() for n in names])
        values[order] = torch.sort(values, descending=True).values
        parts = torch.split(values, [mask[n].numel() for n in names])
        out.update({n: p.view(mask[n].shape).float() for n, p in zip(names, parts)})
    return out


def criterion_scores(job: Job, density: float, level: int, names: list[str], per_layer: bool) -> Scores:
    """``score_init: criterion``: prune w_0 to ``density`` with the spec's criterion in its rounds (as
    ``multishot``), and return :func:`rank_matched` scores as leaf tensors on the model's device."""
    mask, last = job.prune_initial(density, level)
    magnitude = {n: job.init_state[n].abs() for n in names}
    device = next(job.model.parameters()).device
    scores = rank_matched(Mask({n: mask[n] for n in names}), last, magnitude, per_layer)
    return {n: s.to(device).requires_grad_() for n, s in scores.items()}


def check_spec(spec: ExperimentSpec, model: torch.nn.Module) -> None:
    """What edge_popup's spec must be, checked before a run writes anything: a criterion exactly with
    ``score_init: criterion``, the default scope, ``shares`` that fit the model's prunable layers."""
    options: EdgePopupOptions = options_of(spec.method)
    if bool(spec.method.criterion) != (options.score_init == "criterion"):
        raise ValueError(
            "method.criterion: edge_popup learns its scores (Ramanujan et al. 2020); it takes a criterion "
            "only to start them from its mask (option score_init=criterion), and that option needs one"
        )
    if spec.method.scope != "global":
        raise ValueError(
            "method.scope: edge_popup ranks the scores within each layer (Ramanujan et al. 2020); leave scope at its default"
        )
    for density in spec.densities:
        level_counts(model, list(spec.exempt), density, options)


def _edge_popup(job: Job) -> None:
    """edge-popup (Ramanujan et al. 2020): per-layer top-k of learned scores, a supermask of frozen weights,
    untrained; options: |w_0| or a criterion's start, layer shares or a global top-k, a standardised score
    phase, a trained ticket."""
    spec = job.spec
    options: EdgePopupOptions = options_of(spec.method)
    check_spec(spec, job.model)
    dense_level(job, job.total_steps)
    for level, density in enumerate(spec.densities, start=1):
        pruned_level(job, level, density, job.init_state, partial(_supermask, job, options, level, density))


def _supermask(job: Job, options: EdgePopupOptions, level: int, density: float) -> Trained:
    """Train the scores for ``density``, take the top-k_l per layer; evaluate the mask untrained, or train it."""
    spec = job.spec
    names = sorted(Mask.ones(job.model, spec.exempt))
    weights = frozen_weights(job.init_state, names, options.weights)
    device = next(job.model.parameters()).device
    counts = level_counts(job.model, list(spec.exempt), density, options)
    rule = EdgePopup(counts, options.rank)
    hidden = list(prunable_parameters(job.model, spec.exempt))[:-1] if options.normalise else []
    with measure(job.model) as meter:
        if options.score_init == "criterion":  # its scoring passes are part of the mask's cost
            scores = criterion_scores(job, density, level, names, per_layer=options.ranking == "layer")
        elif options.score_init == "magnitude":
            scores = magnitude_scores(job.init_state, names, device)
        else:
            scores = kaiming_uniform_scores(weights, names, spec.seed, device)
        with standardised(job.model, hidden):
            state, curve = train_scores(
                job.model,
                weights,
                scores,
                rule,
                job.data,
                score_recipe(options, spec.recipe),
                spec.seed,
                job.log,
            )
    final = {n: s.detach().cpu() for n, s in scores.items()}
    mask = top_k({n: rule.ranked(final[n]) for n in names}, counts, seed=seed_for(spec.seed, level))
    job.check_collapse(mask, level)
    start = masked_state(state, mask)
    cost = meter.cost()
    # no step: the supermask evaluated as it is; ``train``: the ticket trained with the recipe
    result = job.train(mask, start, 0, job.total_steps if options.train else 0, None)
    write_curve(job.run.level(level).path, curve)
    return Trained(mask, start, result, cost.seconds, final, cost=cost)


METHODS.register("edge_popup")(_edge_popup)
MODEL_CHECKS["edge_popup"] = check_spec
