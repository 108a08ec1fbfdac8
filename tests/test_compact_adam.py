"""Adam over the kept weights only (``hardware.adam_choice``, ``training.fused_sgd.FusedAdam``): the compacted
step against the dense fused step, against ``torch.optim.Adam(fused=True)`` on the same gradients and against
autograd + ``torch.optim.Adam`` per model, on masked stacked MLPs at low density; and the measured choice."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from ticketlab.config.recipe import Recipe
from ticketlab.files import CorruptFileError
from ticketlab.hardware import adam_choice
from ticketlab.masks import prunable_parameters, select
from ticketlab.models import build_model, initialize
from ticketlab.training.fused_sgd import FusedAdam
from ticketlab.training.stacked import _Stack

SIZES = "mlp:784-48-24-10"
RECIPES = {
    "adam": Recipe(optimizer="adam", lr=1e-2),
    "adam_decay_l2": Recipe(optimizer="adam", lr=1e-2, weight_decay=1e-2, l2=5e-3, betas=(0.8, 0.99)),
}


def _masked_models(densities=(0.05, 0.02, 0.01)):
    """Three models, each pruned at random to one of ``densities`` (every layer), pruned weights zeroed."""
    models = [initialize(build_model(SIZES), seed=s) for s in (1, 2, 3)]
    g = torch.Generator().manual_seed(0)
    masks = []
    for model, density in zip(models, densities):
        scores = {k: torch.rand(p.shape, generator=g) for k, p in prunable_parameters(model).items()}
        mask = dict(select(scores, density).items())
        with torch.no_grad():
            for k, p in prunable_parameters(model).items():
                p.mul_(mask[k])
        masks.append(mask)
    return models, masks


def _fused(models, masks, recipe, cls=FusedAdam):
    stack = _Stack(models, torch.device("cpu"))
    layers = range(3)
    stacked = [torch.stack([mk[f"layers.{i}.weight"] for mk in masks]).float() for i in layers]
    step = cls(
        [stack.params[f"layers.{i}.weight"] for i in layers],
        [stack.params[f"layers.{i}.bias"] for i in layers],
        stacked,
        recipe,
    )
    return stack, step


class _TorchAdam(FusedAdam):
    """What FusedAdam did before it called the kernel itself: the hand-written backward's masked gradients
    as the parameters' ``.grad``, stepped by ``torch.optim.Adam(fused=True)``."""

    def begin(self):
        if self.compacted is None:
            self.compacted = [False] * len(self.weights)
            tensors = self.weights + self.biases
            for t in tensors:
                t.grad = self._grads[id(t)]
            self.optimizer = torch.optim.Adam(
                tensors, lr=1.0, betas=self.betas, weight_decay=self.weight_decay, fused=True
            )

    def end(self, lr):  # after the hand-written backward wrote the gradients
        self.optimizer.param_groups[0]["lr"] = lr
        self.optimizer.step()


def _batches(steps=12, k=3, batch=20):
    g = torch.Generator().manual_seed(5)
    return [
        (torch.randn(k, batch, 1, 28, 28, generator=g), torch.randint(0, 10, (k, batch), generator=g))
        for _ in range(steps)
    ]


def _run(step, recipe, batches):
    losses = []
    for i, (x, y) in enumerate(batches):
        losses.append(step.step(x, y, recipe.lr * (1 - i / 20)))  # a changing learning rate
    return torch.stack(losses)


@pytest.mark.parametrize("name", list(RECIPES))
def test_compacted_step_equals_dense_step_and_torch_adam(monkeypatch, name):
    recipe = RECIPES[name]
    models, masks = _masked_models()
    batches = _batches()
    stacks = {}
    for way, cls in (("torch", _TorchAdam), ("off", FusedAdam), ("on", FusedAdam)):
        monkeypatch.setenv(adam_choice.ENV, way if way != "torch" else "off")
        stack, step = _fused(copy.deepcopy(models), masks, recipe, cls)
        stacks[way] = (stack, _run(step, recipe, batches), step.compacted)
    assert stacks["off"][2] == [False] * 3 and stacks["on"][2] == [True] * 3
    off, on, reference = stacks["off"][0].params, stacks["on"][0].params, stacks["torch"][0].params
    for key in reference:
        # calling the kernel directly is the optimiser's update, bit for bit
        assert torch.equal(off[key], reference[key]), key
        # compacted: the same elementwise update on fewer elements (vector lanes may round a last bit apart)
        assert torch.allclose(on[key], off[key], rtol=1e-6, atol=1e-7), key
    assert torch.allclose(stacks["on"][1], stacks["off"][1], rtol=1e-6)
    for k, mask in enumerate(masks):
        for key, keep in mask.items():
            assert (on[key][k][~keep] == 0).all(), (k, key)  # never written: exactly zero
            assert (on[key][k][keep] != 0).all(), (k, key)  # the kept ones moved


@pytest.mark.parametrize("way", ["on", "off"])
@pytest.mark.parametrize("name", list(RECIPES))
def test_compacted_step_equals_autograd_adam_per_model(monkeypatch, name, way):
    """Each model alone: autograd, the gradient masked after backward, torch.optim.Adam (train's step)."""
    monkeypatch.setenv(adam_choice.ENV, way)
    recipe = RECIPES[name]
    # not lower: at 1% a unit whose inputs are nearly all pruned gets gradients that are 0 in one summation
    # order and 1e-9 in the other, which Adam turns into steps of lr (the dense fused step too)
    models, masks = _masked_models((0.1, 0.05, 0.03))
    singles = [copy.deepcopy(m) for m in models]
    optimizers = [
        torch.optim.Adam(m.parameters(), lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay)
        for m in singles
    ]
    stack, step = _fused(models, masks, recipe)
    for i, (x, y) in enumerate(_batches(6)):
        lr = recipe.lr * (1 - i / 20)
        expected = []
        for k, (model, opt, mask) in enumerate(zip(singles, optimizers, masks)):
            opt.param_groups[0]["lr"] = lr
            loss = F.cross_entropy(model(x[k]), y[k])
            total = loss + recipe.l2 * sum(p.pow(2).sum() for p in model.parameters()) if recipe.l2 else loss
            opt.zero_grad(set_to_none=True)
            total.backward()
            for key, p in prunable_parameters(model).items():
                p.grad.mul_(mask[key])
            opt.step()
            expected.append(float(loss.detach()))
        assert step.step(x, y, lr).tolist() == pytest.approx(expected, rel=1e-5)
    assert step.compacted == [way == "on"] * 3
    for k, (single, mask) in enumerate(zip(singles, masks)):
        state = stack.state(k)
        for key, value in single.state_dict().items():
            # Adam divides by sqrt(v): a gradient near 0 in one summation order and a hair off it in the
            # other moves its weight by a visible fraction of lr, so a few weights may differ more
            diff = (state[key] - value).abs()
            assert float(diff.max()) < 1e-4, (k, key)
            assert int((diff > 1e-6).sum()) <= max(2, diff.numel() // 1000), (k, key)
        for key, keep in mask.items():
            assert (state[key][~keep] == 0).all(), (k, key)


def test_kept_gathers_and_scatters_only_the_kept_entries():
    mask = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    kept = adam_choice.Kept(mask)
    assert kept.index.tolist() == [1, 3, 5]
    weight = torch.tensor([[0.0, 2.0, 0.0], [4.0, 0.0, 6.0]])
    kept.gather(weight, torch.arange(6.0).view(2, 3) * 10)
    assert kept.param.tolist() == [2.0, 4.0, 6.0] and kept.grad.tolist() == [10.0, 30.0, 50.0]
    kept.param.add_(1)
    kept.scatter(weight)
    assert weight.tolist() == [[0.0, 3.0, 0.0], [5.0, 0.0, 7.0]]


def test_crossover_is_the_largest_density_below_which_compact_always_won():
    densities = (0.5, 0.25, 0.1, 0.05)
    rows = {"dense": [1.0, 1.0, 1.0, 1.0], "compact": [2.0, 0.9, 0.5, 0.2]}
    assert adam_choice.crossover(rows, densities) == 0.25
    # a win above a loss does not count: the lower densities must all win too
    rows = {"dense": [1.0, 1.0, 1.0, 1.0], "compact": [0.5, 1.5, 0.5, 0.2]}
    assert adam_choice.crossover(rows, densities) == 0.1
    assert adam_choice.crossover({"dense": [1.0] * 4, "compact": [2.0] * 4}, densities) == 0.0


def test_the_choice_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv(adam_choice.ENV, "auto")
    n = len(adam_choice.DENSITIES)
    calls = []

    def measure(numel):
        calls.append(numel)
        return {"dense": [1.0] * n, "compact": [2.0] * 2 + [0.5] * (n - 2)}  # wins from the third density down

    third = adam_choice.DENSITIES[2]
    assert adam_choice.measured_crossover(1000, measure, tmp_path) == third
    assert adam_choice.use_compact(1000, third, measure, tmp_path)
    assert not adam_choice.use_compact(1000, adam_choice.DENSITIES[1], measure, tmp_path)
    assert calls == [1000]  # once: the rest from the cache
    files = list((tmp_path / "adam").glob("*.json"))
    assert len(files) == 1
    files[0].write_text("{not json")  # a damaged file is measured again and replaced
    assert adam_choice.measured_crossover(1000, measure, tmp_path) == third
    assert calls == [1000, 1000]
    with pytest.raises(CorruptFileError):
        adam_choice._parsed({"dense": [1.0], "compact": [1.0]}, files[0])

    def broken(numel):
        raise RuntimeError("no timer")

    assert adam_choice.measured_crossover(1 << 20, broken, tmp_path) == 0.0  # the dense step, always correct


def test_modes(monkeypatch, tmp_path):
    def never(numel):
        raise AssertionError("on and off measure nothing")

    monkeypatch.setenv(adam_choice.ENV, "on")
    assert adam_choice.use_compact(1000, 0.9, never, tmp_path)
    assert not adam_choice.use_compact(1000, 1.0, never, tmp_path)
    monkeypatch.setenv(adam_choice.ENV, "off")
    assert not adam_choice.use_compact(1000, 0.01, never, tmp_path)
    monkeypatch.setenv(adam_choice.ENV, "sometimes")
    with pytest.raises(ValueError, match=r"TICKETLAB_COMPACT_ADAM must be one of auto, on, off; got 'sometimes'"):
        adam_choice.mode()


def test_cli_rejects_a_bad_mode_before_writing(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ticketlab.cli.app import app

    monkeypatch.setenv(adam_choice.ENV, "fast")
    out = tmp_path / "runs"
    result = CliRunner().invoke(
        app, ["prune", "--model", "mlp:784-16-10", "--dataset", "synthetic", "--density", "0.5", "--out", str(out)]
    )
    assert result.exit_code == 2 and "TICKETLAB_COMPACT_ADAM" in result.output
    assert not out.exists() or not any(out.rglob("*.json"))


def test_time_steps_times_both_steps_at_each_density():
    rows = adam_choice.time_steps(4096, densities=(0.5, 0.05))
    assert set(rows) == {"dense", "compact"}
    assert all(len(v) == 2 and all(s > 0 for s in v) for v in rows.values())


@pytest.mark.parametrize("way", ["on", "off"])
def test_a_level_records_which_layers_adam_stepped_compacted(tmp_path, monkeypatch, way):
    from ticketlab.config.spec import ExperimentSpec, MethodSpec
    from ticketlab.experiment.run import run_experiment
    from ticketlab.store import RunDir

    monkeypatch.setenv("TICKETLAB_COMPACT_ADAM", way)
    spec = ExperimentSpec(
        model="mlp:784-32-16-10",
        dataset="synthetic",
        val_size=200,
        recipe=Recipe(steps="4it", batch_size=50, optimizer="adam", lr=1e-3, eval_every=None),
        method=MethodSpec(name="lottery", K=0.5),
        densities=[0.25],
        controls=["reinit", "shuffle_mask"],  # trained stacked (the suite's default): train_many records it too
    )
    run = RunDir(run_experiment(spec, tmp_path, device="cpu").path)
    assert run.level(0).metrics()["compact_adam"] == [False] * 3  # the dense level: no mask to compact
    pruned = [run.level(n).metrics() for n in (1, 2)] + [run.level(2, "reinit").metrics()]
    for metrics in pruned:
        assert metrics["compact_adam"] == [way == "on"] * 3, metrics["density"]
