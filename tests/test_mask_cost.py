"""What a mask cost to find (``methods.cost``): counted where scoring and mask training happen, and for
iterative methods the training of the levels the mask derives from, recorded in every level's metrics."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

from ticketlab.config import ExperimentSpec, MethodSpec, Recipe
from ticketlab.experiment import run_experiment
from ticketlab.methods.cost import Cost, measure

MODEL = "mlp:784-16-10"
RECIPE = Recipe(steps="8it", batch_size=50, lr=0.05, eval_every="4it")


def spec(name: str, densities=(0.5,), controls=(), **method) -> ExperimentSpec:
    return ExperimentSpec(
        model=MODEL,
        dataset="synthetic",
        val_size=200,
        recipe=RECIPE,
        densities=densities,
        controls=controls,
        method=MethodSpec(name=name, **method),
    )


def rows_by(result) -> dict[tuple[int, str], dict]:
    return {(r["level"], r["control"]): r for r in result.rows}


def cost_of(row: dict) -> tuple[int, int, int]:
    return row["mask_cost_passes"], row["mask_cost_examples"], row["mask_cost_train_steps"]


def test_measure_counts_plain_functional_and_copied_calls_then_detaches():
    model = nn.Sequential(nn.Linear(3, 2))
    with measure(model) as meter:
        model(torch.ones(5, 3))
        functional_call(model, dict(model.named_parameters()), (torch.ones(4, 3),))
        copy.deepcopy(model)(torch.ones(2, 3))  # stacked scoring runs B on a copy of the model
    assert (meter.passes, meter.examples) == (3, 11) and meter.seconds > 0
    model(torch.ones(7, 3))
    assert meter.passes == 3 and not model._forward_pre_hooks


def test_cost_arithmetic_and_metrics():
    a = Cost.of_training(10, 60, 2.0) + Cost(passes=3, examples=30, seconds=0.5)
    assert a == Cost(passes=13, examples=630, train_steps=10, seconds=2.5)
    assert a - Cost.of_training(10, 60, 2.0) == Cost(passes=3, examples=30, seconds=0.5)
    m = a.metrics(train_size=6300)
    assert m == {
        "mask_cost_passes": 13,
        "mask_cost_examples": 630,
        "mask_cost_epochs": 0.1,
        "mask_cost_train_steps": 10,
        "mask_cost_seconds": 2.5,
    }
    assert Cost.recorded(m) == a and Cost.recorded({}) == Cost()


@pytest.mark.parametrize(
    "criterion, rounds, passes, examples",
    [
        ("magnitude", 1, 0, 0),  # no forward pass
        ("snip", 1, 10, 10 * 100),  # one pass per pruning batch (10 batches x 10 classes x 10 per class)
        ("synflow", 3, 3, 3),  # one all-ones input per round
    ],
)
def test_upfront_cost_is_the_scoring_passes(tmp_path, synthetic, criterion, rounds, passes, examples):
    s = spec("multishot" if rounds > 1 else "oneshot", criterion=criterion, rounds=rounds)
    rows = rows_by(run_experiment(s, tmp_path, device="cpu"))
    assert cost_of(rows[(0, "")]) == (0, 0, 0)  # the dense mask costs nothing
    assert cost_of(rows[(1, "")]) == (passes, examples, 0)
    assert rows[(1, "")]["mask_cost_epochs"] == pytest.approx(examples / len(synthetic.x_train))


def test_iterative_cost_is_the_training_of_the_levels_before(tmp_path):
    """IMP: level l's mask comes from l levels of 8 training steps (magnitude scoring is free); its controls
    carry the ticket's cost (their masks are made from it)."""
    s = spec("lottery", densities=(0.64,), controls=("reinit",), K=0.8)
    result = run_experiment(s, tmp_path, device="cpu")
    rows = rows_by(result)
    for level in (1, 2):
        expected = (8 * level, 8 * level * 50, 8 * level)
        assert cost_of(rows[(level, "")]) == expected
        assert cost_of(rows[(level, "reinit")]) == expected
        assert rows[(level, "")]["mask_cost_seconds"] >= rows[(level - 1, "")]["train_time"]

    # a level recomputed after a resume adds up the same from the recorded rows
    (result.path / "level_02" / "metrics.json").unlink()
    again = rows_by(run_experiment(s, tmp_path, device="cpu"))
    assert cost_of(again[(2, "")]) == cost_of(rows[(2, "")])


def test_ims_adds_the_scoring_rounds_to_the_training(tmp_path):
    rows = rows_by(
        run_experiment(spec("lottery", densities=(0.8,), criterion="snip", rounds=2), tmp_path, device="cpu")
    )
    assert cost_of(rows[(1, "")]) == (8 + 2 * 10, 8 * 50 + 2 * 10 * 100, 8)


def test_tom_cost_is_its_pretraining_and_mask_phase(tmp_path):
    s = spec("tom", options={"mask_steps": "4it", "pretrain": 0.25})
    rows = rows_by(run_experiment(s, tmp_path, device="cpu"))
    passes, examples, steps = cost_of(rows[(1, "")])
    # 2 pretraining steps; 4 mask steps of one forward each, plus the validation of the top-k mask at the end
    assert steps == 2 and passes == 2 + 4 + 1 and examples == 2 * 50 + 4 * 50 + 200


def test_supermask_cost_is_the_dense_run_and_the_sweep(tmp_path, synthetic):
    s = spec("supermask", densities=(0.5,), options={"thresholds": [0.0, 0.01]})
    rows = rows_by(run_experiment(s, tmp_path, device="cpu"))
    untrained = [r for (level, control), r in rows.items() if control == "untrained"]
    evaluation = len(synthetic.x_val) + len(synthetic.x_test)
    for r in untrained:  # dense run, scoring (no pass: sign(w_0) w_T), one evaluation of val and test
        assert cost_of(r) == (8 + 2, 8 * 50 + evaluation, 8)
    best = [r for (level, control), r in rows.items() if level > 0 and control == ""]
    assert len(untrained) == 2 and len(best) == 1
    assert cost_of(best[0]) == (8 + 2 * 2, 8 * 50 + 2 * evaluation, 8)  # chosen by evaluating both points


def test_double_pruning_counts_the_complement_runs(tmp_path):
    s = spec("double_pruning", densities=(0.64,), K=0.8, options={"regrow": 0.2})
    rows = rows_by(run_experiment(s, tmp_path, device="cpu"))
    assert (1, "complement") in rows
    assert cost_of(rows[(1, "")])[2] == 8
    assert cost_of(rows[(2, "")])[2] == 8 + 8 + 8  # level 0, level 1 and level 1's complement run
