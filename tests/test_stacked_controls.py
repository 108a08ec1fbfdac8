"""A level's controls train together in one stack (methods.context.Job.run_controls, train_many): each
control's weights and metrics equal training it alone to float tolerance, deterministically; ``stacked``
says how many trained together; sweeps (lockstep) stack them too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import ticketlab.experiment.lockstep as lockstep
import ticketlab.methods.context as context
from ticketlab.config.recipe import Recipe
from ticketlab.config.spec import ExperimentSpec, MethodSpec
from ticketlab.experiment.lockstep import run_experiments
from ticketlab.experiment.run import run_experiment
from ticketlab.files import load_tensors
from ticketlab.methods.context import stack_controls
from ticketlab.models import build_model

SGD = Recipe(steps="20it", batch_size=100, lr=0.1, momentum=0.9, eval_every="10it")
ADAM = Recipe(steps="20it", batch_size=100, lr=1e-3, optimizer="adam", eval_every="10it")
CONTROLS = ("reinit", "shuffle_mask", "shuffle_weights")
TIMING = {"train_time", "score_time", "mask_cost_seconds", "time_s", "stacked"}  # how it ran, not what it computed


def spec(recipe: Recipe = SGD, seed: int = 0, controls=CONTROLS) -> ExperimentSpec:
    return ExperimentSpec(
        model="mlp:784-32-16-10",
        dataset="synthetic",
        val_size=200,
        recipe=recipe,
        seed=seed,
        method=MethodSpec(name="lottery", K=0.5),
        densities=[0.25],
        controls=list(controls),
    )


def levels(run: Path) -> dict[str, tuple[dict, dict[str, torch.Tensor]]]:
    """Every level folder of a run: (metrics, final weights), by its path in the run."""
    out = {}
    for metrics in sorted(run.rglob("metrics.json")):
        folder = metrics.parent
        out[str(folder.relative_to(run))] = (
            json.loads(metrics.read_text()),
            load_tensors(next(folder.glob("final*.safetensors")))[0],
        )
    return out


def assert_close(a: Path, b: Path, exact: bool = False) -> dict[str, tuple[dict, dict[str, torch.Tensor]]]:
    left, right = levels(a), levels(b)
    assert left.keys() == right.keys() and len(left) == 3 + 2 * len(CONTROLS)
    for where, (metrics, weights) in left.items():
        other_metrics, other_weights = right[where]
        for key, value in metrics.items():
            if key in TIMING or key == "history":
                continue
            if isinstance(value, float) and not exact:
                assert value == pytest.approx(other_metrics[key], abs=1e-5), f"{where}: {key}"
            else:
                assert value == other_metrics[key], f"{where}: {key}"
        for name, tensor in weights.items():
            if exact:
                assert torch.equal(tensor, other_weights[name]), f"{where}: {name}"
            else:
                assert torch.allclose(tensor, other_weights[name], atol=1e-5, rtol=0), f"{where}: {name}"
    return left


@pytest.fixture
def stacks(monkeypatch):
    """The size of each stack the controls trained in (Job.train_together's train_many calls)."""
    calls: list[int] = []
    real = context.train_many

    def counting(models, *args, **kwargs):
        calls.append(len(models))
        return real(models, *args, **kwargs)

    monkeypatch.setattr(context, "train_many", counting)
    return calls


@pytest.mark.parametrize("recipe", [SGD, ADAM], ids=["sgd", "adam"])
def test_stacked_controls_equal_controls_trained_one_at_a_time(tmp_path, monkeypatch, stacks, recipe):
    monkeypatch.setenv("TICKETLAB_STACK_CONTROLS", "off")
    alone = run_experiment(spec(recipe), tmp_path / "alone").path
    assert stacks == []
    monkeypatch.setenv("TICKETLAB_STACK_CONTROLS", "on")
    together = run_experiment(spec(recipe), tmp_path / "together").path
    assert stacks == [len(CONTROLS)] * 2  # one stack per pruned level
    rows = assert_close(together, alone)
    for where, (metrics, _) in rows.items():
        assert metrics["stacked"] == (len(CONTROLS) if metrics["control"] else 1), where
    assert all(metrics["stacked"] == 1 for metrics, _ in levels(alone).values())


def test_stacked_controls_are_deterministic(tmp_path):
    first = run_experiment(spec(), tmp_path / "a").path
    second = run_experiment(spec(), tmp_path / "b").path
    assert_close(first, second, exact=True)


def test_one_pending_control_trains_alone(tmp_path, stacks):
    run_experiment(spec(controls=("reinit",)), tmp_path)
    assert stacks == []


def test_sweeps_stack_the_controls_of_all_their_runs(tmp_path, monkeypatch):
    calls: list[int] = []
    real = lockstep.train_many
    monkeypatch.setattr(
        lockstep, "train_many", lambda models, *a, **k: calls.append(len(models)) or real(models, *a, **k)
    )
    specs = [spec(seed=0), spec(seed=1)]
    run_experiments(specs, tmp_path / "swept")
    # per pruned level: the two tickets together, then the 2 x 3 controls together (dense levels: 2 together)
    assert calls == [2, 2, 2 * len(CONTROLS), 2, 2 * len(CONTROLS)]
    monkeypatch.setenv("TICKETLAB_STACK_CONTROLS", "off")
    for s in specs:
        alone = run_experiment(s, tmp_path / "alone").path
        assert_close(tmp_path / "swept" / alone.name, alone)


def test_the_stacking_setting_sparse_tickets_and_convolutional_models(monkeypatch):
    mlp, conv = build_model("mlp:784-16-10"), build_model("lenet5")
    assert stack_controls(mlp) and stack_controls(mlp, {"sparse_training": None})
    assert not stack_controls(conv)  # vmap stacking: slower per model than one at a time on CPU
    sparse_ticket = {"sparse_training": {"mode": "auto", "layers": {"layers.0.weight": {"sparse": True}}}}
    dense_ticket = {"sparse_training": {"mode": "auto", "layers": {"layers.0.weight": {"sparse": False}}}}
    assert not stack_controls(mlp, sparse_ticket) and stack_controls(mlp, dense_ticket)
    monkeypatch.setenv("TICKETLAB_STACK_CONTROLS", "off")
    assert not stack_controls(mlp, dense_ticket)
    monkeypatch.setenv("TICKETLAB_STACK_CONTROLS", "maybe")
    with pytest.raises(ValueError, match="TICKETLAB_STACK_CONTROLS must be one of on, off; got 'maybe'"):
        stack_controls(mlp)
