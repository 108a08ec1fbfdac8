"""The fused SGD step (and the hand-written backward under Adam) of stacked MLPs against autograd +
torch.optim.SGD / Adam, one model at a time."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from ticketlab.config.recipe import Recipe
from ticketlab.masks import prunable_parameters, select
from ticketlab.models import build_model, initialize
from ticketlab.training import fused_sgd
from ticketlab.training.fused_sgd import FusedSGD
from ticketlab.training.loop import train
from ticketlab.training.stacked import _Stack

RECIPES = {
    "plain": Recipe(lr=0.1),
    "plain_decay_l2": Recipe(lr=0.1, weight_decay=1e-2, l2=5e-3),
    "momentum": Recipe(lr=0.05, momentum=0.9),
    "momentum_decay_l2": Recipe(lr=0.05, momentum=0.9, weight_decay=1e-2, l2=5e-3),
}
SIZES = "mlp:784-24-12-10"


def _models_and_masks():
    models = [initialize(build_model(SIZES), seed=s) for s in (1, 2, 3)]
    g = torch.Generator().manual_seed(0)
    masks = [None]
    for density in (0.5, 0.2):
        scores = {k: torch.rand(p.shape, generator=g) for k, p in prunable_parameters(models[0]).items()}
        masks.append(dict(select(scores, density).items()))
    masks[1]["layers.2.weight"] = torch.ones_like(masks[1]["layers.2.weight"])  # a layer kept whole
    for m, mk in zip(models, masks):
        if mk is not None:
            with torch.no_grad():
                for k, p in prunable_parameters(m).items():
                    p.mul_(mk[k])
    return models, masks


def _reference_step(model, optimizer, mask, x, y, recipe) -> float:
    """What ticketlab.training.loop.train does in one step: mean CE (+ L2), masked gradients, SGD."""
    loss = F.cross_entropy(model(x), y)
    total = loss + recipe.l2 * sum(p.pow(2).sum() for p in model.parameters()) if recipe.l2 else loss
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if mask is not None:
        for k, p in prunable_parameters(model).items():
            p.grad.mul_(mask[k])
    optimizer.step()
    return float(loss.detach())


def _stacked_masks(stack, masks):
    """Layer name -> the K models' masks of that layer stacked as 0/1 floats (all ones for a model without one)."""
    return {
        name: torch.stack(
            [(mk[name] if mk is not None else torch.ones(w.shape[1:], dtype=torch.bool)) for mk in masks]
        ).float()
        for name, w in ((f"layers.{i}.weight", stack.params[f"layers.{i}.weight"]) for i in range(3))
    }


def _steps_agree(fused, singles, optimizers, masks, synthetic, recipe) -> None:
    """Six steps of ``fused`` on K models against one reference step per model; the losses agree."""
    g = torch.Generator().manual_seed(1)
    for step in range(6):
        idx = torch.stack([torch.randperm(len(synthetic.x_train), generator=g)[:20] for _ in singles])
        xb, yb = synthetic.x_train[idx], synthetic.y_train[idx]
        lr = recipe.lr * (1 - step / 10)  # a changing learning rate, as a schedule gives
        for opt in optimizers:
            opt.param_groups[0]["lr"] = lr
        expected = [
            _reference_step(m, o, mk, xb[k], yb[k], recipe)
            for k, (m, o, mk) in enumerate(zip(singles, optimizers, masks))
        ]
        losses = fused.step(xb, yb, lr)
        assert losses.tolist() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("blas", ["openblas", "torch_gemm"])
@pytest.mark.parametrize("name", list(RECIPES))
def test_fused_step_equals_autograd_sgd_per_model(request, synthetic, blas, name):
    request.getfixturevalue(blas)
    recipe = RECIPES[name]
    models, masks = _models_and_masks()
    singles = [copy.deepcopy(m) for m in models]
    optimizers = [
        torch.optim.SGD(m.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
        for m in singles
    ]
    stack = _Stack(models, torch.device("cpu"))
    layers = range(3)
    stacked_masks = list(_stacked_masks(stack, masks).values())
    fused = FusedSGD(
        [stack.params[f"layers.{i}.weight"] for i in layers],
        [stack.params[f"layers.{i}.bias"] for i in layers],
        stacked_masks,
        recipe,
    )
    _steps_agree(fused, singles, optimizers, masks, synthetic, recipe)
    for k, (single, mask) in enumerate(zip(singles, masks)):
        state = stack.state(k)
        for key, value in single.state_dict().items():
            assert torch.allclose(state[key], value, atol=1e-6, rtol=1e-5), (k, key)
        if mask is not None:
            for key, keep in mask.items():
                assert (state[key][~keep] == 0).all(), (k, key)  # exactly zero
                assert (state[key][keep] != 0).all(), (k, key)  # and the kept ones moved off zero


@pytest.mark.parametrize("name", list(RECIPES))
def test_one_model_fused_step_equals_autograd_sgd(synthetic, name):
    """K = 1 (the step of ``train``, on 2-D views of the model's tensors): each model alone, with and without
    a mask, against autograd + torch.optim.SGD; pruned weights and their momentum stay exactly zero."""
    recipe = RECIPES[name]
    models, masks = _models_and_masks()
    for model, mask in zip(models, masks):
        single = copy.deepcopy(model)
        optimizer = torch.optim.SGD(
            single.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
        )
        stack = _Stack([model], torch.device("cpu"))
        fused = FusedSGD(
            [stack.params[f"layers.{i}.weight"] for i in range(3)],
            [stack.params[f"layers.{i}.bias"] for i in range(3)],
            list(_stacked_masks(stack, [mask]).values()),
            recipe,
        )
        assert fused.flat
        _steps_agree(fused, [single], [optimizer], [mask], synthetic, recipe)
        state = stack.state(0)
        for key, value in single.state_dict().items():
            assert torch.allclose(state[key], value, atol=1e-6, rtol=1e-5), key
        for key, keep in (mask or {}).items():
            assert (state[key][~keep] == 0).all(), key
            assert (state[key][keep] != 0).all(), key
        for w, m in zip(fused._w, fused._m):  # momentum buffers: zero wherever the weight is pruned
            buf = fused._buffers.get(id(w))
            assert (buf is not None) == bool(recipe.momentum)
            if buf is not None and m is not None:
                assert (buf[m == 0] == 0).all()


def test_hand_computed_step():
    """One plain SGD step of a single-layer model, by hand: dW = (softmax(z) - onehot) x^T / B."""
    w = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # K = 1, 2 classes, 2 inputs
    b = torch.tensor([[0.0, 0.0]])
    x = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]])  # batch of 2
    y = torch.tensor([[0, 1]])
    loss = FusedSGD([w], [b], [None], Recipe(lr=1.0)).step(x, y, lr=1.0)
    p = torch.tensor(1.0).exp() / (torch.tensor(1.0).exp() + torch.tensor(2.0).exp())  # softmax([1, 2])[0]
    # example 1: z = (1, 2), target 0 -> dz = (p - 1, 1 - p); example 2: z = (0, 0), target 1 -> (0.5, -0.5)
    dz = torch.tensor([[p - 1, 1 - p], [0.5, -0.5]]) / 2
    expected_w = torch.tensor([[1.0, 0.0], [0.0, 1.0]]) - dz.T @ torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    assert torch.allclose(w[0], expected_w, atol=1e-6)
    assert torch.allclose(b[0], -dz.sum(0), atol=1e-6)
    assert float(loss[0]) == pytest.approx(float((-torch.log(p) + torch.log(torch.tensor(2.0))) / 2), rel=1e-6)


@pytest.mark.parametrize(
    "recipe, fused",
    [
        (Recipe(), True),
        (Recipe(momentum=0.9, weight_decay=1e-4), True),
        (Recipe(momentum=0.9, nesterov=True), False),
        (Recipe(optimizer="adam", lr=1e-3), True),
    ],
)
def test_the_fused_step_is_taken_for_sgd_and_adam_mlps_only(recipe, fused):
    models = [initialize(build_model(SIZES), seed=s) for s in (1, 2)]
    stack = _Stack(models, torch.device("cpu"))
    assert (fused_sgd.for_mlp(stack.template, stack.params, {}, recipe) is not None) == fused
    convs = [initialize(build_model("conv2", input_shape=(1, 8, 8)), seed=s) for s in (1, 2)]
    assert not fused_sgd.applies(convs[0], recipe)
    hooked = models[0]
    hooked.layers[0].register_forward_hook(lambda *args: None)  # the fused forward would skip it
    assert not fused_sgd.applies(hooked, recipe)


class _NoHooks:
    """TrainHooks that do nothing: train() with them takes the autograd step."""

    def after_backward(self, step, grads):
        pass

    def update_mask(self, done, model):
        return None


@pytest.mark.parametrize(
    "dropout, device",
    [
        (0.0, "cpu"),
        (0.3, "cpu"),
        # on CUDA F.dropout has its own kernel and random stream, so only the dropout-free case can agree
        pytest.param(0.0, "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
    ],
)
@pytest.mark.parametrize(
    "recipe",
    [
        Recipe(steps="20it", batch_size=40, lr=0.1, l2=1e-3, lr_schedule="cosine", eval_every="10it"),
        Recipe(steps="20it", batch_size=40, lr=0.05, momentum=0.9, weight_decay=1e-3, eval_every="10it"),
        Recipe(steps="20it", batch_size=40, optimizer="adam", lr=2e-3, l2=1e-3, weight_decay=1e-3, eval_every="10it"),
    ],
)
def test_train_fused_equals_train_autograd(synthetic, recipe, dropout, device):
    """train() on one MLP: the fused step (a view of the model as K = 1) against the autograd step,
    dropout drawn from the global generator as F.dropout draws it."""
    model = initialize(build_model(SIZES, dropout=dropout), seed=4)
    assert fused_sgd.applies(model, recipe)
    mask = select(
        {
            k: torch.rand(p.shape, generator=torch.Generator().manual_seed(2))
            for k, p in prunable_parameters(model).items()
        },
        0.3,
    )
    autograd_model = copy.deepcopy(model)
    fused_run = train(model, synthetic, recipe, mask=mask, seed=3, device=device, snapshot_steps=(7,))
    autograd_run = train(
        autograd_model, synthetic, recipe, mask=mask, seed=3, device=device, snapshot_steps=(7,), hooks=_NoHooks()
    )
    for key, value in autograd_model.state_dict().items():
        assert torch.allclose(model.state_dict()[key], value, atol=1e-6, rtol=1e-5), key
        assert torch.allclose(fused_run.snapshots[7][key], autograd_run.snapshots[7][key], atol=1e-6, rtol=1e-5), key
    for row1, row2 in zip(fused_run.history, autograd_run.history):
        for key in row1:
            assert row1[key] == pytest.approx(row2[key], rel=1e-5, nan_ok=True), key
    for key, keep in mask.items():
        assert (prunable_parameters(model)[key][~keep] == 0).all()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_fused_trained_model_stays_an_ordinary_autograd_model(synthetic, optimizer):
    """The fused step runs in inference mode; the parameters it updates in place stay ordinary tensors
    that autograd can differentiate afterwards (scoring, a further autograd training), and a second
    fused training goes on from them."""
    model = initialize(build_model(SIZES), seed=4)
    recipe = Recipe(steps="6it", batch_size=20, optimizer=optimizer, lr=0.01, momentum=0.9 * (optimizer == "sgd"))
    assert fused_sgd.applies(model, recipe)
    before = copy.deepcopy(model.state_dict())
    run = train(model, synthetic, recipe, seed=1)
    assert all(isinstance(row["train_loss"], float) for row in run.history[1:])
    assert not any(torch.equal(before[k], v) for k, v in model.state_dict().items())  # it trained
    params = list(model.parameters())
    assert all(not p.is_inference() and p.requires_grad for p in params)
    F.cross_entropy(model(synthetic.x_train[:8]), synthetic.y_train[:8]).backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params)
    train(model, synthetic, recipe, seed=2)  # the same parameters, trained again


ADAM_RECIPES = {
    "adam": Recipe(optimizer="adam", lr=1e-2),
    "adam_decay_l2": Recipe(optimizer="adam", lr=1e-2, weight_decay=1e-2, l2=5e-3, betas=(0.8, 0.99)),
}


@pytest.mark.parametrize("blas", ["openblas", "torch_gemm"])
@pytest.mark.parametrize("name", list(ADAM_RECIPES))
def test_fused_adam_equals_autograd_adam_per_model(request, synthetic, blas, name):
    """K stacked models under FusedAdam against each model alone with autograd and torch.optim.Adam
    (the gradient masked after backward, as train's autograd step): losses, weights, pruned weights 0."""
    request.getfixturevalue(blas)
    recipe = ADAM_RECIPES[name]
    models, masks = _models_and_masks()
    singles = [copy.deepcopy(m) for m in models]
    optimizers = [
        torch.optim.Adam(m.parameters(), lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay)
        for m in singles
    ]
    stack = _Stack(models, torch.device("cpu"))
    stacked_masks = _stacked_masks(stack, masks)
    fused = fused_sgd.for_mlp(stack.template, stack.params, stacked_masks, recipe)
    assert isinstance(fused, fused_sgd.FusedAdam)
    _steps_agree(fused, singles, optimizers, masks, synthetic, recipe)
    for k, (single, mask) in enumerate(zip(singles, masks)):
        state = stack.state(k)
        for key, value in single.state_dict().items():
            # Adam divides by sqrt(v): a gradient near 0 in one summation order and a hair off it in the
            # other moves its weight by a visible fraction of lr, so a few weights may differ more
            diff = (state[key] - value).abs()
            assert float(diff.max()) < 1e-4, (k, key)
            assert int((diff > 1e-6).sum()) <= max(2, diff.numel() // 1000), (k, key)
        if mask is not None:
            for key, keep in mask.items():
                assert (state[key][~keep] == 0).all(), (k, key)
                assert (state[key][keep] != 0).all(), (k, key)


def test_fused_adam_hand_computed_first_step():
    """Adam's first step moves every weight with a non-zero gradient by lr * sign(gradient) (m / sqrt(v)
    = g / |g| after bias correction, up to eps), a masked weight not at all."""
    w = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], requires_grad=True)  # K = 1, 2 classes, 2 inputs
    b = torch.zeros(1, 2, requires_grad=True)
    mask = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    with torch.no_grad():
        w.mul_(mask)
    x = torch.tensor([[[1.0, 2.0], [0.5, 0.0]]])
    y = torch.tensor([[0, 1]])
    fused = fused_sgd.FusedAdam([w], [b], [mask], Recipe(optimizer="adam", lr=0.1))
    fused.step(x, y, lr=0.1)
    p = torch.softmax(torch.tensor([[1.0, 2.0], [0.5, 0.0]]), -1)  # z = x W^T
    dz = (p - torch.eye(2)[[0, 1]]) / 2
    grad_w = (dz.T @ torch.tensor([[1.0, 2.0], [0.5, 0.0]])) * mask[0]
    expected = torch.tensor([[1.0, 0.0], [0.0, 1.0]]) - 0.1 * grad_w.sign()
    assert torch.allclose(w.detach()[0], expected, atol=1e-6)
    assert w.detach()[0, 0, 1] == 0  # pruned, stays exactly 0
    assert torch.allclose(b.detach()[0], -0.1 * dz.sum(0).sign(), atol=1e-6)
