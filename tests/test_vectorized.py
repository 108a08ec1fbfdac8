"""train_many equals train() model by model (to float tolerance), masks stay exact."""

import copy
import dataclasses

import pytest
import torch

from ticketlab.config.recipe import Recipe
from ticketlab.data import load_dataset
from ticketlab.masks import Mask, prunable_parameters, select
from ticketlab.models import build_model, initialize
from ticketlab.training.loop import train
from ticketlab.training.stacked import train_many, vectorizable


@pytest.fixture(scope="module")
def small_images():
    """8x8 synthetic images keep the conv cases fast (the 28x28 set costs seconds per conv step here)."""
    return load_dataset("synthetic:1x8x8", val_size=100, seed=0)


RECIPES = {  # plain SGD and SGD with momentum take the fused step (ticketlab.training.fused_sgd); the others autograd
    "sgd_l2_cosine": Recipe(
        steps="24it", batch_size=50, lr=0.1, l2=1e-3, lr_schedule="cosine", warmup="4it", eval_every="8it"
    ),
    "sgd_momentum_wd": Recipe(steps="24it", batch_size=50, lr=0.05, momentum=0.9, weight_decay=5e-3, eval_every="8it"),
    "nesterov_l2_multistep": Recipe(
        steps="24it",
        batch_size=50,
        lr=0.05,
        momentum=0.9,
        nesterov=True,
        l2=1e-3,
        lr_schedule="multistep",
        milestones=["10it"],
        eval_every="8it",
    ),
    "adam": Recipe(steps="24it", batch_size=50, optimizer="adam", lr=1e-3, weight_decay=1e-4, eval_every="8it"),
}


def random_mask(model, density: float, seed: int) -> Mask:
    g = torch.Generator().manual_seed(seed)
    return select({k: torch.rand(p.shape, generator=g) for k, p in prunable_parameters(model).items()}, density)


def three_models(name: str, dropout: float = 0.0, input_shape=(1, 28, 28)):
    return [initialize(build_model(name, input_shape=input_shape, dropout=dropout), seed=s) for s in (1, 2, 3)]


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


def check_equal(data, recipe, models, masks, seeds, *, atol=1e-5, rtol=1e-4, device="cpu", **kwargs):
    alone = [copy.deepcopy(m) for m in models]
    singles = [
        train(m, data, recipe, mask=mk, seed=s, device=device, **kwargs) for m, mk, s in zip(alone, masks, seeds)
    ]
    many = train_many(models, data, recipe, masks=masks, seeds=seeds, device=device, **kwargs)
    for m, a, r1, r2, mk in zip(models, alone, singles, many, masks):
        for (key, v1), v2 in zip(a.state_dict().items(), m.state_dict().values()):
            assert torch.allclose(v1.double(), v2.double(), atol=atol, rtol=rtol), (
                key,
                float((v1.double() - v2.double()).abs().max()),
            )
        assert len(r1.history) == len(r2.history)
        for row1, row2 in zip(r1.history, r2.history):
            assert row1.keys() == row2.keys()
            for key in row1:
                assert row1[key] == pytest.approx(row2[key], abs=1e-4, nan_ok=True), key
        assert r1.early_stop_step == r2.early_stop_step and r1.stopped_step == r2.stopped_step
        assert sorted(r1.snapshots) == sorted(r2.snapshots)
        for step in r1.snapshots:
            for key, v1 in r1.snapshots[step].items():
                assert torch.allclose(v1.float(), r2.snapshots[step][key].float(), atol=atol, rtol=rtol), (step, key)
        if mk is not None:
            params = prunable_parameters(m)
            for key, keep in mk.items():
                assert (params[key][~keep] == 0).all(), key  # exactly zero, not just small
                for step, snap in r2.snapshots.items():
                    assert (snap[key][~keep] == 0).all(), (step, key)
    return singles, many


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_mlp_three_seeds_three_masks_equal_single_runs(synthetic, recipe, device):
    models = three_models("mlp:784-32-16-10")
    masks = [random_mask(models[0], d, seed=i) for i, d in enumerate((1.0, 0.5, 0.2))]
    check_equal(
        synthetic, RECIPES[recipe], models, masks, [5, 6, 7], start_step=0, snapshot_steps=(0, 8, 20), device=device
    )


def test_mlp_resumed_start_and_end_on_best(synthetic):
    """start_step > 0 continues data order and LR schedule; end_on_best picks each model's own best."""
    recipe = Recipe(steps="30it", batch_size=50, lr=0.2, momentum=0.9, eval_every="5it")
    models = three_models("mlp:784-32-16-10")
    masks = [None, random_mask(models[0], 0.3, seed=4), None]
    _, many = check_equal(synthetic, recipe, models, masks, [0, 0, 9], start_step=7, end_step=27, end_on_best=True)
    assert {r.start_step for r in many} == {7} and {r.end_step for r in many} == {27}


def test_mlp_dropout_matches_per_model(synthetic):
    recipe = Recipe(steps="12it", batch_size=50, lr=0.05, eval_every="6it")
    models = three_models("mlp:784-32-16-10", dropout=0.3)
    masks = [random_mask(models[0], 0.5, seed=i) for i in range(3)]
    check_equal(synthetic, recipe, models, masks, [1, 2, 3], start_step=3, end_step=12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("recipe", ["sgd_momentum_wd", "adam"])
def test_conv_vmap_equals_single_runs(small_images, recipe, device):
    r = Recipe.model_validate({**RECIPES[recipe].model_dump(), "steps": "6it", "eval_every": "3it", "milestones": ()})
    models = three_models("conv2", input_shape=(1, 8, 8))
    assert vectorizable(models[0])
    masks = [random_mask(models[0], d, seed=i) for i, d in enumerate((0.8, 0.5, 0.2))]
    # Adam divides by sqrt(v): float-level gradient differences on near-zero gradients move a weight by a
    # visible fraction of the LR (1e-3), hence the looser absolute tolerance there.
    check_equal(
        small_images,
        r,
        models,
        masks,
        [3, 4, 5],
        snapshot_steps=(3,),
        atol=1e-4 if recipe == "adam" else 1e-5,
        device=device,
    )


def test_cifar_augmented_conv_stack_equals_single_runs():
    """Each stacked model's batches are augmented with its own seed's stream, as in train()."""
    data = dataclasses.replace(load_dataset("synthetic:3x8x8", val_size=60, seed=0), augment="cifar")
    recipe = Recipe(steps="6it", batch_size=40, lr=0.05, momentum=0.9, eval_every="3it")
    models = three_models("conv2", input_shape=(3, 8, 8))
    masks = [random_mask(models[0], d, seed=i) for i, d in enumerate((0.8, 0.5, 0.2))]
    check_equal(data, recipe, models, masks, [3, 4, 5])


def test_batchnorm_running_stats_per_model(small_images):
    """Running statistics are per model and updated as in train(). In float64: ResNet training on this
    tiny set is chaotic in float32 (a 1e-7 relative perturbation of the weights grows to 1e-4 within
    4 steps), while in float64 the stacked and single runs agree to ~1e-15."""
    data = dataclasses.replace(
        small_images, **{f"x_{s}": getattr(small_images, f"x_{s}").double() for s in ("train", "val", "test")}
    )
    recipe = Recipe(steps="4it", batch_size=32, lr=0.05, momentum=0.9, eval_every="2it")
    models = [initialize(build_model("resnet20", input_shape=(1, 8, 8)), seed=s).double() for s in (1, 2)]
    masks = [random_mask(models[0], 0.5, seed=1), None]
    check_equal(data, recipe, models, masks, [1, 2], atol=1e-10, rtol=1e-10)
    stats = [m.state_dict()["bn.running_mean"] for m in models]
    assert not torch.allclose(stats[0], stats[1])


def test_conv_with_dropout_falls_back_to_sequential_and_still_matches(small_images):
    recipe = Recipe(steps="3it", batch_size=32, lr=0.05, eval_every=None)
    models = three_models("conv2", dropout=0.5, input_shape=(1, 8, 8))
    assert not vectorizable(models[0])
    check_equal(small_images, recipe, models, [None] * 3, [1, 2, 3], atol=0)


def test_rejects_mixed_architectures(synthetic):
    models = [initialize(build_model("mlp:784-32-16-10"), seed=0), initialize(build_model("mlp:784-16-16-10"), seed=0)]
    with pytest.raises(ValueError, match="architecture"):
        train_many(models, synthetic, Recipe(steps="2it", batch_size=50), seeds=[0, 0], device="cpu")
