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
from ticketlab.training import stack_choice

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
    monkeypatch.delenv("TICKETLAB_STACK_CONTROLS")
    assert stack_controls(mlp) == "measure"  # at a sparse level too: the measurement is keyed by density
    assert stack_controls(conv) == "alone"  # vmap stacking: slower per model than one at a time on CPU
    monkeypatch.setenv("TICKETLAB_STACK_CONTROLS", "on")
    assert stack_controls(mlp) == "stack" and stack_controls(conv) == "alone"
    monkeypatch.setenv("TICKETLAB_STACK_CONTROLS", "off")
    assert stack_controls(mlp) == "alone"
    monkeypatch.setenv("TICKETLAB_STACK_CONTROLS", "maybe")
    with pytest.raises(ValueError, match="TICKETLAB_STACK_CONTROLS must be one of auto, on, off; got 'maybe'"):
        stack_controls(mlp)


def test_time_stacking_times_both_ways_and_leaves_the_model_alone():
    model = build_model("mlp:784-16-10")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mask = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) < 0.5
            for n, p in model.named_parameters() if n.endswith("weight")}  # fmt: skip
    seconds = stack_choice.time_stacking(model, [mask, None], SGD, (1, 28, 28), 10, torch.device("cpu"))
    assert set(seconds) == {"stacked", "sequential"} and all(0 < s < 10 for s in seconds.values())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_decide_stacks_where_it_measures_faster_and_caches_the_verdict(tmp_path, monkeypatch):
    model, cpu = build_model("mlp:784-16-10"), torch.device("cpu")
    timed: list[int] = []

    def timing(seconds):
        return lambda *args: timed.append(1) or dict(seconds)

    monkeypatch.setattr(stack_choice, "time_stacking", timing({"stacked": 2e-3, "sequential": 3e-3}))
    verdict = stack_choice.decide(model, [None, None], SGD, (1, 28, 28), 10, cpu, root=tmp_path)
    assert verdict.stack and verdict.source == "measured" and timed == [1]
    again = stack_choice.decide(model, [None, None], SGD, (1, 28, 28), 10, cpu, root=tmp_path)
    assert again.stack and again.source == "cache" and timed == [1]  # read back, not timed again
    assert "stacked 2.00 ms, sequential 3.00 ms per step, from the cache" in again.describe()
    # another key (three trainings, Adam) is measured on its own: here one at a time is faster
    monkeypatch.setattr(stack_choice, "time_stacking", timing({"stacked": 5e-3, "sequential": 4e-3}))
    assert not stack_choice.decide(model, [None] * 3, ADAM, (1, 28, 28), 10, cpu, root=tmp_path).stack
    # a damaged cache file is detected and measured again, never used
    path = stack_choice.cache_file(stack_choice.cache_key(model, SGD, 2, cpu), tmp_path)
    path.write_text(path.read_text().replace("0.002", "0.009"))
    damaged = stack_choice.decide(model, [None, None], SGD, (1, 28, 28), 10, cpu, root=tmp_path)
    assert damaged.source == "measured" and "damaged cache file" in damaged.note and not damaged.stack

    def failing(*args):
        raise RuntimeError("out of memory\nmore")

    monkeypatch.setattr(stack_choice, "time_stacking", failing)
    failed = stack_choice.decide(model, [None] * 4, SGD, (1, 28, 28), 10, cpu, root=tmp_path)
    assert not failed.stack and failed.source == "timing failed" and failed.note == "out of memory"
    assert not stack_choice.cache_file(stack_choice.cache_key(model, SGD, 4, cpu), tmp_path).exists()


def test_a_verdict_holds_per_density_where_the_sparse_path_can_decide_it():
    """A lone model's sparse path depends on its masks' densities: with it on or auto the key holds their
    per-layer buckets (a verdict at density 1 says nothing at 1%); with it off they do not matter."""
    from ticketlab.training import sparse

    model, cpu = build_model("mlp:784-64-10"), torch.device("cpu")
    g = torch.Generator().manual_seed(0)

    def masks(density):
        return [{"layers.0.weight": torch.rand(64, 784, generator=g) < density} for _ in range(2)]

    low, lower, high = masks(0.02), masks(0.019), masks(0.5)
    try:
        for chosen in ("auto", "on"):
            sparse.set_mode(chosen)
            key = stack_choice.cache_key(model, SGD, 2, cpu, masks=low)
            assert key["sparse"] == chosen and key == stack_choice.cache_key(model, SGD, 2, cpu, masks=lower)
            assert key != stack_choice.cache_key(model, SGD, 2, cpu, masks=high)
            assert stack_choice.sparse_may_win(model, low, cpu)
            assert stack_choice.sparse_may_win(model, high, cpu) == (chosen == "on")  # auto: at most 25%
            assert not stack_choice.sparse_may_win(model, [None, {"layers.0.weight": torch.ones(64, 784)}], cpu)
            assert not stack_choice.sparse_may_win(build_model("conv2"), low, cpu)
        sparse.set_mode("off")
        assert stack_choice.cache_key(model, SGD, 2, cpu, masks=low) == stack_choice.cache_key(model, SGD, 2, cpu)
        assert not stack_choice.sparse_may_win(model, low, cpu)
    finally:
        sparse.set_mode(None)


@pytest.mark.parametrize("faster", ["stacked", "sequential"])
def test_auto_trains_the_controls_the_way_the_cached_verdict_says(tmp_path, monkeypatch, stacks, faster):
    monkeypatch.setenv("TICKETLAB_STACK_CONTROLS", "auto")
    monkeypatch.setenv("TICKETLAB_CACHE_DIR", str(tmp_path / "cache"))
    seconds = {"stacked": 1e-3, "sequential": 2e-3} if faster == "stacked" else {"stacked": 2e-3, "sequential": 1e-3}
    monkeypatch.setattr(stack_choice, "time_stacking", lambda *args: dict(seconds))
    lines: list[str] = []
    run = run_experiment(spec(), tmp_path / "run", log=lines.append).path
    assert stacks == ([len(CONTROLS)] * 2 if faster == "stacked" else [])
    assert sum("controls " in line and "per step, measured now" in line for line in lines) == 1
    assert sum("controls " in line and "per step, from the cache" in line for line in lines) == 1
    for metrics, _ in levels(run).values():
        assert metrics["stacked"] == (len(CONTROLS) if metrics["control"] and faster == "stacked" else 1)
