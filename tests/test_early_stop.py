"""Early stopping on patience (recipe.early_stop): the rule, its agreement with an uninterrupted run, stacks,
what a level records, and the CLI option."""

from __future__ import annotations

import contextlib
import copy
import json
import math

import pytest
import torch
from pydantic import ValidationError

from ticketlab.config import ExperimentSpec, MethodSpec, Recipe
from ticketlab.models import build_model, initialize
from ticketlab.training.core import fit
from ticketlab.training.loop import train
from ticketlab.training.stacked import train_many


class Scripted:
    """A stepper whose validation loss at evaluation i is ``val_losses[i]``; its "weights" count its steps."""

    k = 1

    def __init__(self, val_losses: list[float], data) -> None:
        self.val_losses, self.data, self.evaluations, self.steps, self.final = val_losses, data, 0, 0, None

    def running(self):
        return contextlib.nullcontext()

    def step(self, step, xb, yb, lr):
        self.steps += 1
        return torch.zeros(1)

    def evaluate(self, x, y):
        if x is self.data.x_val:
            self.evaluations += 1
            return [{"loss": self.val_losses[self.evaluations - 1], "acc": 0.0}]
        return [{"loss": 0.0, "acc": 0.0}]

    def state(self, k):
        return {"steps": torch.tensor(self.steps)}

    def finish(self, k, state):
        self.final = int(state["steps"]) if state is not None else self.steps


# evaluations every 2 steps: the minimum 0.6 at evaluation 2 (step 4); evaluation 4 ties it (no improvement);
# a later minimum 0.5 at evaluation 6 (step 12)
SCRIPT = [1.0, 0.8, 0.6, 0.7, 0.6, 0.9, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3]


def scripted_fit(synthetic, *, end_on_best=False, snapshot_steps=(), **early_stop):
    stepper = Scripted(SCRIPT, synthetic)
    recipe = Recipe(steps="30it", batch_size=50, eval_every="2it", early_stop={"patience": 3, **early_stop})
    result = fit(
        stepper,
        synthetic,
        recipe,
        seeds=[0],
        start_step=0,
        end_step=None,
        snapshot_steps=snapshot_steps,
        end_on_best=end_on_best,
        progress=None,
    )[0]
    return stepper, result


def test_stops_patience_evaluations_after_the_minimum(synthetic):
    stepper, result = scripted_fit(synthetic)
    assert result.early_stop_step == 4
    assert result.stopped_step == 4 + 3 * 2 and stepper.steps == 10 and stepper.final == 10
    assert [row["step"] for row in result.history] == [0, 2, 4, 6, 8, 10]
    assert result.final == result.history[-1] and result.end_step == 30


def test_min_steps_snapshots_and_end_on_best_delay_or_choose(synthetic):
    # not before step 14: the later minimum (step 12) restarts the count, stop at 12 + 3 * 2
    stepper, result = scripted_fit(synthetic, min_steps="14it")
    assert (result.early_stop_step, result.stopped_step, stepper.final) == (12, 18, 18)
    # a snapshot wanted at step 16 (a rewinding point) holds the stop off just as well
    stepper, result = scripted_fit(synthetic, snapshot_steps=(16,))
    assert result.stopped_step == 18 and sorted(result.snapshots) == [16]
    # end_on_best ends on the weights of the minimum, still stopping at the same step
    stepper, result = scripted_fit(synthetic, end_on_best=True)
    assert (result.stopped_step, stepper.final, stepper.steps) == (10, 4, 10)
    assert result.final == result.early_stop


def test_off_by_default_and_needs_evaluations_and_a_validation_split(synthetic):
    assert Recipe().early_stop is None
    spec = ExperimentSpec(model="mlp:784-10", dataset="synthetic")
    assert "early_stop" not in json.dumps(spec.non_default())  # run ids of existing specs are unchanged
    stopped = spec.model_copy(update={"recipe": Recipe(early_stop={"patience": 2})})
    assert stopped.non_default()["recipe"]["early_stop"] == {"patience": 2} and stopped.run_id() != spec.run_id()
    with pytest.raises(ValidationError, match="eval_every"):
        Recipe(eval_every=None, early_stop={"patience": 2})
    with pytest.raises(ValidationError):
        Recipe(early_stop={"patience": 0})
    from ticketlab.data import load_dataset

    no_val = load_dataset("synthetic", val_size=0)
    with pytest.raises(ValueError, match="validation split"):
        train(
            initialize(build_model("mlp:784-10"), seed=0),
            no_val,
            Recipe(steps="5it", batch_size=50, early_stop={"patience": 1}),
            device="cpu",
        )


RECIPE = Recipe(steps="60it", batch_size=50, lr=0.2, momentum=0.9, eval_every="3it", early_stop={"patience": 2})


def mlp(seed: int):
    return initialize(build_model("mlp:784-32-16-10"), seed=seed)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])  # the fused SGD step and the autograd one
def test_a_stopped_run_is_the_prefix_of_the_uninterrupted_run(synthetic, optimizer):
    lr = 0.2 if optimizer == "sgd" else 0.1
    recipe = RECIPE.model_copy(update={"optimizer": optimizer, "lr": lr, "momentum": 0.9 if optimizer == "sgd" else 0})
    full_model, stopped_model, best_model = mlp(0), mlp(0), mlp(0)
    full = train(
        full_model, synthetic, recipe.model_copy(update={"early_stop": None}), snapshot_steps=range(61), device="cpu"
    )
    stopped = train(stopped_model, synthetic, recipe, device="cpu")
    # where the rule says: the first evaluation `patience` evaluations after the running minimum
    best, since, expected = None, 0, None
    for row in full.history:
        if best is None or row["val_loss"] < best["val_loss"]:
            best, since = row, 0
        else:
            since += 1
        if since == 2:
            expected = row["step"]
            break
    assert expected is not None and expected < 60, "the crafted run must stop early"
    assert stopped.stopped_step == expected == stopped.early_stop_step + 2 * 3
    assert [row["step"] for row in stopped.history] == [row["step"] for row in full.history if row["step"] <= expected]
    assert _same_rows(stopped.history, full.history)
    assert all(torch.equal(v, full.snapshots[expected][k]) for k, v in stopped_model.state_dict().items())
    best_run = train(best_model, synthetic, recipe, end_on_best=True, device="cpu")
    assert best_run.stopped_step == expected and best_run.final == best_run.early_stop
    assert all(torch.equal(v, full.snapshots[best_run.early_stop_step][k]) for k, v in best_model.state_dict().items())


def _same_rows(rows, full_rows) -> bool:
    """Equal rows, nan (row 0's train loss) equal to nan."""
    return all(
        all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(r.values(), f.values()))
        for r, f in zip(rows, full_rows)
    )


def test_each_stacked_model_stops_on_its_own_and_equals_its_single_run(synthetic):
    models = [mlp(s) for s in (0, 1, 2)]
    alone = [copy.deepcopy(m) for m in models]
    singles = [train(m, synthetic, RECIPE, seed=s, device="cpu") for m, s in zip(alone, (0, 1, 2))]
    many = train_many(models, synthetic, RECIPE, seeds=[0, 1, 2], device="cpu")
    assert len({r.stopped_step for r in singles}) == 3 and all(r.stopped_step < 60 for r in singles)
    for m, a, r1, r2 in zip(models, alone, singles, many):
        assert r2.stopped_step == r1.stopped_step and r2.early_stop_step == r1.early_stop_step
        assert [row["step"] for row in r2.history] == [row["step"] for row in r1.history]
        for row1, row2 in zip(r1.history[1:], r2.history[1:]):
            assert row1 == pytest.approx(row2, abs=1e-4)
        for key, v in a.state_dict().items():  # the stopped weights, not those the stack trained on with
            assert torch.allclose(v, m.state_dict()[key], atol=1e-5, rtol=1e-4), key


def test_stacked_conv_early_stop_with_end_on_best_equals_single_runs():
    from ticketlab.data import load_dataset

    data = load_dataset("synthetic:1x8x8", val_size=100, seed=0)
    recipe = Recipe(steps="24it", batch_size=40, lr=0.1, momentum=0.9, eval_every="2it", early_stop={"patience": 2})
    models = [initialize(build_model("conv2", input_shape=(1, 8, 8)), seed=s) for s in (1, 2)]
    alone = [copy.deepcopy(m) for m in models]
    singles = [train(m, data, recipe, seed=s, end_on_best=True, device="cpu") for m, s in zip(alone, (3, 4))]
    many = train_many(models, data, recipe, seeds=[3, 4], end_on_best=True, device="cpu")
    assert any(r.stopped_step < 24 for r in singles)
    for m, a, r1, r2 in zip(models, alone, singles, many):
        assert (r2.stopped_step, r2.early_stop_step) == (r1.stopped_step, r1.early_stop_step)
        for key, v in a.state_dict().items():
            assert torch.allclose(v, m.state_dict()[key], atol=1e-5, rtol=1e-4), key


def test_each_level_records_where_training_stopped(synthetic, tmp_path):
    from ticketlab.experiment.run import run_experiment

    spec = ExperimentSpec(
        model="mlp:784-32-16-10",
        dataset="synthetic",
        val_size=100,
        recipe=RECIPE,
        method=MethodSpec(name="lottery"),
        densities=(0.64,),
    )
    rows = run_experiment(spec, tmp_path, device="cpu").rows
    assert all(row["end_step"] == 60 for row in rows)
    assert all(row["stopped_step"] == row["history"][-1]["step"] for row in rows)
    assert any(row["stopped_step"] < 60 for row in rows)
    plain = run_experiment(
        spec.model_copy(update={"recipe": RECIPE.model_copy(update={"early_stop": None})}), tmp_path, device="cpu"
    ).rows
    assert all(row["stopped_step"] == row["end_step"] == 60 for row in plain)


def test_cli_offers_patience(tmp_path):
    from typer.testing import CliRunner

    from ticketlab.cli import app
    from ticketlab.cli import common as cli_common

    cli_common.console.width = 200
    runner = CliRunner()
    for command in ("train", "prune"):
        assert "--patience" in runner.invoke(app, [command, "--help"]).output
    result = runner.invoke(
        app,
        [
            "train",
            "--model",
            "mlp:784-32-16-10",
            "--dataset",
            "synthetic",
            "--steps",
            "60it",
            "--batch-size",
            "50",
            "--lr",
            "0.5",
            "--momentum",
            "0.9",
            "--eval-every",
            "3it",
            "--val-size",
            "100",
            "--patience",
            "2",
            "--device",
            "cpu",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "stopped early at step" in result.output
