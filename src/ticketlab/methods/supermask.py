"""Supermask sweep (004 §2.3; Zhou et al. 2019): choose the density of a ticket by untrained accuracy.

1. train the dense network (level 0; its final weights are w_T, the shared initialisation is w_0);
2. score every weight with a supermask criterion (default ``large_final_same_sign`` = sign(w_0)·w_T);
3. for every density of the sweep (or every threshold t: keep score >= t, 004 §2.3 step 3 literally)
   build the masked network M_t from the initial weights and evaluate it *untrained* on the validation
   split (004 §2.2, §3.4);
4. pick the best M_* by validation accuracy (test accuracy is only reported) and train it with its zeros
   frozen (004 §2.3 steps 5-6).

Run directory: level 0 = dense; level l >= 1 = the l-th sweep point, recorded as control ``untrained``
(no training: train_time 0, the evaluation of the untrained network as its only history row); the best
point's level also holds the trained ticket (control ``""``) and its controls. The whole curve is also
written to ``supermask_curve.json`` and printed.

Which weights M_t carries (option ``eval_weights``): ``init`` = w_0 ⊙ m (004's own formula, §2.3 step 3
and §3.4), or ``signed_constant`` = sign(w_0)·s_l ⊙ m (Zhou et al.'s, as 004 §1 describes them) with s_l the
layer's standard deviation at initialisation, measured as the RMS of w_0 (the Kaiming std up to sampling
noise for a normal init). ``--init signed_constant`` with ``init`` is *not* Zhou et al.'s setting: that
initialisation makes the dense network itself train from signed constants, so w_T, the scores and the masks
all change, whereas Zhou et al. train from a random initialisation and give only the untrained masked
networks signed constants (``eval_weights: signed_constant``). M_* is trained from the weights it was
evaluated with: 004 §2.3 step 6 trains M_* itself.

The grid (not fixed by 004): the spec's densities plus the iterative grid 1·K, K², ... down to the smallest
of them (K = ``method.K``, default 0.8, as IMP's levels), or the ``thresholds`` option instead.
Ties of the untrained validation accuracy go to the sparser network, the point of 004 being a smaller one.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ticketlab.criteria import score
from ticketlab.files import atomic_write_json
from ticketlab.masks import Mask, masked_state, select
from ticketlab.methods.context import Job
from ticketlab.methods.cost import Cost, measure
from ticketlab.methods.levels import Trained, dense_level, pruned_level
from ticketlab.methods.registry import DEFAULT_CRITERIA, METHODS, OPTIONS, options_of
from ticketlab.models import StateDict
from ticketlab.schedules import iterative_densities
from ticketlab.seeding import seed_for
from ticketlab.training.evaluate import evaluate
from ticketlab.training.loop import TrainResult

DEFAULT_CRITERION = "large_final_same_sign"  # 004 §2.1
UNTRAINED = "untrained"  # control name of the untrained sweep points
CURVE_FILE = "supermask_curve.json"


@OPTIONS.register("supermask")
class SupermaskOptions(BaseModel):
    """Options of ``--method supermask`` (``-o key=value``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    thresholds: tuple[float, ...] | None = Field(
        None,
        description="sweep score thresholds t (keep score >= t, one global threshold; 004 §2.3) instead of densities",
    )
    eval_weights: Literal["init", "signed_constant"] = Field(
        "init", description="weights of the untrained masks: w_0 (004) or sign(w_0)·RMS(w_0) per layer (Zhou et al.)"
    )
    train_best: bool = Field(True, description="train the best untrained mask with its zeros frozen (004 §2.3)")

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, values: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if values is not None and not values:
            raise ValueError("thresholds: give at least one threshold, or leave it out to sweep densities")
        return None if values is None else tuple(sorted(set(values)))


def sweep_densities(targets: tuple[float, ...], K: float) -> list[float]:
    """The densities swept by default: the iterative grid K, K², ... down to the smallest target, plus every
    target, densest first."""
    grid = set(iterative_densities(min(targets), K)) | set(targets)
    return sorted(grid, reverse=True)


def signed_constant_weights(initial: StateDict, mask: Mask) -> StateDict:
    """sign(w_0)·s_l on the masked parameters (s_l = RMS of the layer's w_0), the rest of ``initial`` as is."""
    out = {k: v.clone() for k, v in initial.items()}
    for name in mask:
        w0 = initial[name]
        s = w0.double().pow(2).mean().sqrt().to(w0.dtype)
        out[name] = torch.where(w0 >= 0, s, -s)  # >= 0: a weight of exactly 0 still gets a constant
    return out


def threshold_mask(scores: dict[str, torch.Tensor], t: float) -> Mask:
    """004 §2.3 step 3: keep every weight whose score is >= t (one threshold over all layers)."""
    return Mask({name: s >= t for name, s in scores.items()})


def untrained_result(job: Job, weights: StateDict, mask: Mask) -> TrainResult:
    """Evaluate the masked network without training; a TrainResult with that evaluation as its only row."""
    model = job.model
    model.load_state_dict(masked_state(weights, mask))
    data = job.data
    row: dict[str, float] = {"step": 0, "epoch": 0.0, "train_loss": float("nan")}
    for split in ("val", "test"):
        metrics = evaluate(model, getattr(data, f"x_{split}"), getattr(data, f"y_{split}"))
        row[f"{split}_loss"], row[f"{split}_acc"] = metrics["loss"], metrics["acc"]
    return TrainResult(start_step=0, end_step=0, history=[row], final=dict(row), wall_time=0.0)


def best_point(rows: list[dict[str, Any]]) -> int:
    """Index of the highest untrained validation accuracy; ties go to the sparser network."""

    def key(i: int) -> tuple[float, float]:
        acc = rows[i]["val_acc"]
        return (float("-inf") if acc is None or acc != acc else acc, -rows[i]["density"])

    return max(range(len(rows)), key=key)


def _supermask(job: Job) -> None:
    # long: 004 §2.3's steps in order: dense level, threshold sweep, the chosen mask trained
    spec, method = job.spec, job.spec.method
    options: SupermaskOptions = options_of(method)
    criterion = job.criterion
    if options.thresholds is not None and method.scope != "global":
        raise ValueError("thresholds: a score threshold is one global threshold; use scope 'global' or sweep densities")

    # 1. dense training (004 §2.3 steps 1-2)
    dense = dense_level(job, job.total_steps)
    trained = dense.final

    # 2. scores of w_T against w_0 (the criterion reads w_0 from ctx.initial)
    job.model.load_state_dict(trained)
    with measure(job.model) as meter:
        scores = score(criterion, job.model, Mask.ones(job.model, spec.exempt), job.context())
    score_time = meter.seconds
    # every mask of the sweep derives from the dense run and the scores; the best one also from the sweep
    cost = job.training_cost(dense.row) + meter.cost()

    # 3. the untrained sweep (004 §2.2): one level per density or threshold
    points: list[tuple[str, float]] = (
        [("threshold", t) for t in options.thresholds]
        if options.thresholds is not None
        else [("density", d) for d in sweep_densities(spec.densities, method.K)]
    )
    rows: list[dict[str, Any]] = []
    masks: list[Mask] = []
    starts: list[StateDict] = []
    for level, (kind, value) in enumerate(points, start=1):
        if kind == "threshold":
            mask = threshold_mask(scores, value)
        else:
            mask = select(scores, value, method.scope, seed=seed_for(spec.seed, level))
        weights = job.init_state if options.eval_weights == "init" else signed_constant_weights(job.init_state, mask)
        start = masked_state(weights, mask)
        row = job.resume(level, UNTRAINED)
        if row is None:
            with measure(job.model) as evaluation:
                result = untrained_result(job, start, mask)
            row = job.record(
                level,
                mask,
                result,
                start,
                target=mask.density() if kind == "threshold" else value,
                score_time=score_time / len(points) + evaluation.seconds,
                control=UNTRAINED,
                scores=scores,
                cost=cost + evaluation.cost(),
            )
        row = {**row, kind: value}
        rows.append(row)
        masks.append(mask)
        starts.append(start)

    best = best_point(rows)
    _write_curve(job, criterion, options, rows, best)

    # 4. train the best untrained network with its zeros frozen (004 §2.3 steps 5-6)
    if not options.train_best:
        return
    level, mask, start = rows[best]["level"], masks[best], starts[best]
    # M_* was chosen by evaluating every point of the sweep: those evaluations are part of its cost
    evaluations = sum((Cost.recorded(r) - cost for r in rows), Cost())
    train_best = partial(_train_best, job, level, mask, start, score_time, cost + evaluations)
    pruned_level(job, level, rows[best]["target_density"], job.init_state, train_best)


def _write_curve(job: Job, criterion: str, options: SupermaskOptions, rows: list[dict[str, Any]], best: int) -> None:
    """The untrained accuracy at every sweep point, to ``supermask_curve.json`` and the log."""
    curve = [
        {k: r.get(k) for k in ("level", "density", "kept", "threshold", "val_acc", "val_loss", "test_acc", "test_loss")}
        for r in rows
    ]
    summary = {
        "criterion": criterion,
        "eval_weights": options.eval_weights,
        "best_level": rows[best]["level"],
        "curve": curve,
    }
    atomic_write_json(job.run.path / CURVE_FILE, summary)
    job.log(f"supermask curve ({criterion}, untrained, weights={options.eval_weights}):")
    for r in curve:
        mark = "  <- best" if r["level"] == rows[best]["level"] else ""
        t = f" threshold {r['threshold']:.4g}" if r.get("threshold") is not None else ""
        job.log(f"  density {r['density']:.4f}{t}: val acc {r['val_acc']:.4f}, test acc {r['test_acc']:.4f}{mark}")


def _train_best(job: Job, level: int, mask: Mask, start: StateDict, score_time: float, cost: Cost) -> Trained:
    job.check_collapse(mask, level)
    return Trained(mask, start, job.train(mask, start, 0, job.total_steps, None), score_time, cost=cost)


METHODS.register("supermask")(_supermask)
DEFAULT_CRITERIA["supermask"] = DEFAULT_CRITERION
