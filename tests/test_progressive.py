"""Iterative SNIP and FORCE (de Jorge et al. 2021; ``methods.progressive``): the FORCE saliency against an
explicit formula, pruned weights returning under FORCE and never under Iterative SNIP, exact densities,
determinism, weights untouched, every model family, and Iterative SNIP = ``multishot`` SNIP on the same
batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.config import ExperimentSpec, MethodSpec, Recipe
from ticketlab.criteria import ScoringContext
from ticketlab.experiment import run_experiment
from ticketlab.masks import Mask, prunable_parameters
from ticketlab.methods.progressive import force_scores, skeletonize
from ticketlab.models import build_model, initialize, snapshot
from ticketlab.store import RunDir

RECIPE = Recipe(steps="6it", batch_size=50, lr=0.05, eval_every="6it")


def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def batch(n: int = 5, features: int = 4, classes: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_force_scores_are_theta_times_the_pruned_networks_gradient_for_all_weights():
    model = tiny_mlp()
    mask = Mask(
        {
            "0.weight": torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 1]]),
            "2.weight": torch.tensor([[1, 0, 1], [1, 1, 0]]),
        }
    )
    x, y = batch()
    before = snapshot(model)
    got = force_scores(model, mask, ScoringContext(batches=[(x, y)]))

    # explicit: forward with W = θ ⊙ m as the leaves, the loss's gradient in W, times the dense θ
    w1 = (model[0].weight.detach() * mask["0.weight"]).requires_grad_()
    w2 = (model[2].weight.detach() * mask["2.weight"]).requires_grad_()
    loss = F.cross_entropy(F.linear(F.relu(F.linear(x, w1, model[0].bias.detach())), w2, model[2].bias.detach()), y)
    g1, g2 = torch.autograd.grad(loss, [w1, w2])
    assert torch.allclose(got["0.weight"], (model[0].weight.detach() * g1).abs(), atol=1e-7)
    assert torch.allclose(got["2.weight"], (model[2].weight.detach() * g2).abs(), atol=1e-7)
    # pruned weights keep a score (their gradient at the pruned network), where SNIP gives them 0
    assert all(bool((got[k][~mask[k]] > 0).any()) for k in got)
    assert all(torch.equal(before[k], v) for k, v in snapshot(model).items())  # weights untouched


def mlp_batches(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g))]


def one_step(model, mask, density, force, t):
    return skeletonize(
        model,
        mask,
        density,
        lambda _: mlp_batches(t),
        steps=1,
        schedule="exponential",
        force=force,
        scope="global",
        seed=0,
        level=1,
        train_mode=False,
    )[0]


def test_force_lets_a_pruned_weight_return_and_iterative_snip_never_does():
    model = initialize(build_model("mlp:784-32-10", input_shape=(1, 28, 28)), seed=0)
    before = snapshot(model)
    for force in (True, False):
        first = one_step(model, Mask.ones(model), 0.5, force, 0)
        second = one_step(model, first, 0.25, force, 1)
        returned = sum(int((second[k] & ~first[k]).sum()) for k in first)
        assert second.kept() == round(0.25 * second.total())
        assert (returned > 0) == force, f"force={force}: {returned} pruned weights returned"
    assert all(torch.equal(before[k], v) for k, v in snapshot(model).items())


def test_steps_follow_the_exponential_schedule_and_score_once_per_batch():
    from ticketlab.methods.cost import measure

    model = initialize(build_model("mlp:784-32-10", input_shape=(1, 28, 28)), seed=0)
    seen: list[int] = []

    def batches(t: int):
        seen.append(t)
        return mlp_batches(t) * 2

    with measure(model) as meter:
        mask, _ = skeletonize(
            model,
            Mask.ones(model),
            0.1,
            batches,
            steps=4,
            schedule="exponential",
            force=True,
            scope="layerwise",
            seed=0,
            level=1,
            train_mode=True,
        )
    assert seen == [0, 1, 2, 3] and meter.passes == 8
    sizes = {k: v.numel() for k, v in mask.items()}
    assert {k: int(v.sum()) for k, v in mask.items()} == {k: round(0.1 * n) for k, n in sizes.items()}


def spec(name: str, densities=(0.3,), **options) -> ExperimentSpec:
    return ExperimentSpec(
        model="mlp:784-32-10",
        dataset="synthetic",
        val_size=200,
        recipe=RECIPE,
        densities=densities,
        method=MethodSpec(name=name, **options),
    )


def test_iter_snip_on_the_pruning_batches_is_multishot_snip(tmp_path):
    ours = run_experiment(
        spec("iter_snip", options={"steps": 5, "fresh_batches": False, "train_mode": False}), tmp_path, device="cpu"
    )
    theirs = run_experiment(spec("multishot", criterion="snip", rounds=5), tmp_path, device="cpu")
    a, b = RunDir(ours.path).level(1), RunDir(theirs.path).level(1)
    assert a.mask() == b.mask()
    assert all(torch.equal(v, b.weights()[k]) for k, v in a.weights().items())
    assert ours.rows[1]["mask_cost_passes"] == theirs.rows[1]["mask_cost_passes"] == 5 * 10


@pytest.mark.parametrize("name", ["iter_snip", "force"])
def test_runs_keep_exact_densities_record_cost_and_repeat(tmp_path, name):
    s = spec(name, densities=(0.3, 0.05), options={"steps": 3, "batches": 2})
    first = run_experiment(s, tmp_path / "a", device="cpu")
    second = run_experiment(s, tmp_path / "b", device="cpu")
    for level, target in ((1, 0.3), (2, 0.05)):
        mask = RunDir(first.path).level(level).mask()
        assert mask.kept() == round(target * mask.total())
        assert mask == RunDir(second.path).level(level).mask()
        row = next(r for r in first.rows if r["level"] == level)
        assert row["mask_cost_passes"] == 3 * 2 and row["mask_cost_examples"] == 3 * 2 * 50


def test_force_and_iter_snip_take_no_criterion(tmp_path):
    with pytest.raises(ValueError, match="criterion"):
        run_experiment(spec("force", criterion="snip"), tmp_path, device="cpu")


@pytest.mark.parametrize("family", ["lenet5", "conv2", "resnet20"])
@pytest.mark.parametrize("force", [True, False])
def test_every_model_family(family, force):
    model = initialize(build_model(family, input_shape=(1, 28, 28), num_classes=10), seed=0)
    before = snapshot(model)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(4, 1, 28, 28, generator=g), torch.randint(0, 10, (4,), generator=g))]
    mask, scores = skeletonize(
        model,
        Mask.ones(model),
        0.2,
        lambda t: data,
        steps=2,
        schedule="exponential",
        force=force,
        scope="global",
        seed=0,
        level=1,
        train_mode=True,
    )
    assert mask.kept() == round(0.2 * mask.total()) and set(mask) == set(prunable_parameters(model))
    assert all(torch.isfinite(s).all() for s in scores.values())
    assert all(torch.equal(before[k], v) for k, v in snapshot(model).items())  # BN statistics too
