import pytest
import torch

from ticketlab.config.recipe import Recipe
from ticketlab.masks import Mask, prunable_parameters, select
from ticketlab.models import build_model, initialize
from ticketlab.seeding import epoch_order
from ticketlab.training.loop import train


def lenet(seed: int = 0):
    return initialize(build_model("mlp:784-64-32-10"), seed=seed)


def half_mask(model) -> Mask:
    return select(
        {
            k: torch.rand(p.shape, generator=torch.Generator().manual_seed(3))
            for k, p in prunable_parameters(model).items()
        },
        0.3,
    )


RECIPES = {
    "sgd": Recipe(steps="40it", batch_size=50, lr=0.05, eval_every=None),
    "sgd_momentum_wd": Recipe(steps="40it", batch_size=50, lr=0.05, momentum=0.9, weight_decay=5e-3, eval_every=None),
    "nesterov_l2": Recipe(steps="40it", batch_size=50, lr=0.05, momentum=0.9, nesterov=True, l2=1e-3, eval_every=None),
    "adam": Recipe(steps="40it", batch_size=50, optimizer="adam", lr=1e-3, weight_decay=1e-4, eval_every=None),
}


@pytest.mark.parametrize("name", list(RECIPES))
def test_pruned_weights_stay_exactly_zero_and_kept_ones_train(synthetic, name):
    model = lenet()
    before = {k: p.detach().clone() for k, p in prunable_parameters(model).items()}
    mask = half_mask(model)
    train(model, synthetic, RECIPES[name], mask=mask, device="cpu")
    for k, p in prunable_parameters(model).items():
        assert (p[~mask[k]] == 0).all(), k
        assert (p[mask[k]] != before[k][mask[k]]).float().mean() > 0.9, k


def test_same_seed_gives_bit_identical_weights(synthetic):
    recipe = Recipe(steps="30it", batch_size=50, momentum=0.9, eval_every="10it")
    a, b, c = lenet(), lenet(), lenet()
    train(a, synthetic, recipe, seed=5, device="cpu")
    train(b, synthetic, recipe, seed=5, device="cpu")
    train(c, synthetic, recipe, seed=6, device="cpu")
    for (k, va), vb, _vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not all(torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values()))


@pytest.mark.parametrize("name", list(RECIPES))
def test_repeated_masked_runs_in_one_process_are_bit_identical(synthetic, name):
    """Every optimiser, with a mask, several times in a row: a non-deterministic kernel (as PyTorch's fused
    CPU SGD was) shows up as a run that differs from the first."""
    runs = []
    for _ in range(4):
        model = lenet()
        train(model, synthetic, RECIPES[name], mask=half_mask(model), seed=1, device="cpu")
        runs.append(model.state_dict())
    for other in runs[1:]:
        assert all(torch.equal(runs[0][k], other[k]) for k in runs[0]), name


def test_dropout_is_seeded_too(synthetic):
    recipe = Recipe(steps="10it", batch_size=50, eval_every=None)
    nets = [initialize(build_model("lenet300", dropout=0.5), seed=1) for _ in range(2)]
    for net in nets:
        torch.manual_seed(len(str(net)))  # global RNG state must not matter
        train(net, synthetic, recipe, seed=2, device="cpu")
    assert all(torch.equal(x, y) for x, y in zip(nets[0].parameters(), nets[1].parameters()))


def test_split_training_equals_one_run_and_snapshots(synthetic):
    """Starting at step s continues the same data order and LR schedule (resume, LR rewinding)."""
    recipe = Recipe(steps="60it", batch_size=50, lr=0.05, lr_schedule="multistep", milestones=["25it"], eval_every=None)
    whole, parts = lenet(), lenet()
    full = train(whole, synthetic, recipe, snapshot_steps=[0, 20, 60], device="cpu")
    train(parts, synthetic, recipe, end_step=20, device="cpu")
    assert all(torch.equal(v, full.snapshots[20][k]) for k, v in parts.state_dict().items())
    train(parts, synthetic, recipe, start_step=20, device="cpu")
    assert all(torch.equal(v, full.snapshots[60][k]) for k, v in parts.state_dict().items())
    assert all(torch.equal(v, lenet().state_dict()[k]) for k, v in full.snapshots[0].items())


def test_epoch_order_is_a_permutation_per_seed_and_epoch():
    a = epoch_order(100, 0, 0)
    assert sorted(a.tolist()) == list(range(100))
    assert torch.equal(a, epoch_order(100, 0, 0))
    assert not torch.equal(a, epoch_order(100, 0, 1)) and not torch.equal(a, epoch_order(100, 1, 0))


def test_learns_and_records_early_stop(synthetic):
    recipe = Recipe(steps="6ep", batch_size=60, lr=0.1, eval_every="1ep")
    model = lenet()
    result = train(model, synthetic, recipe, device="cpu")
    assert result.final["test_acc"] > 0.8
    assert [r["step"] for r in result.history] == [i * result.steps_per_epoch for i in range(7)]
    best = min(result.history, key=lambda r: r["val_loss"])
    assert result.early_stop_step == best["step"] and result.early_stop == best


def test_end_on_best_restores_the_min_val_loss_weights(synthetic):
    recipe = Recipe(steps="200it", batch_size=50, lr=2.0, eval_every="20it")  # too high a LR: val loss wanders
    model = lenet()
    result = train(model, synthetic, recipe, end_on_best=True, device="cpu", snapshot_steps=range(0, 201, 20))
    assert result.final == result.early_stop
    best = result.snapshots[result.early_stop_step]
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())


def _rgb(augment: str | None = "cifar"):
    from dataclasses import replace

    from ticketlab.data import load_dataset

    return replace(load_dataset("synthetic:3x8x8", val_size=50, seed=0), augment=augment)


@pytest.mark.parametrize("reuse", [False, True])
def test_one_run_batches_follow_the_seeded_order_across_epochs(reuse):
    """K = 1 (one index row, labels gathered once per epoch): every step's batch, one Batches object stepped
    through an epoch boundary as a training does, is the slice of that epoch's seeded order; with ``reuse``
    written into one tensor."""
    from ticketlab.training.core import Batches

    data = _rgb(None)
    spe = len(data.x_train) // 20
    batches = Batches(data, 20, [7], reuse=reuse)
    kept = [batches(0)[0]]  # all alive: without reuse, each has its own memory
    for step in (0, 1, spe - 1, spe, spe + 2):
        epoch, position = divmod(step, spe)
        idx = epoch_order(len(data.x_train), 7, epoch)[position * 20 : (position + 1) * 20]
        xb, yb = batches(step)
        assert xb.shape == (1, 20, *data.x_train.shape[1:]) and yb.shape == (1, 20)
        assert torch.equal(yb[0], data.y_train[idx])
        assert torch.equal(xb[0], data.x_train[idx])
        kept.append(xb)
    assert (len({x.data_ptr() for x in kept}) == 1) == reuse


def test_training_batches_are_the_seeded_order_augmented_by_the_registry_entry(monkeypatch):
    from ticketlab.data import AUGMENTATIONS, cifar_augment
    from ticketlab.registry import UnknownNameError
    from ticketlab.seeding import seed_for
    from ticketlab.training.core import Batches

    data = _rgb()
    spe = len(data.x_train) // 20
    for step in (0, 3, spe + 1):  # a step of the second epoch too
        epoch, position = divmod(step, spe)
        xb, yb = Batches(data, 20, [5, 6])(step)
        for k, seed in enumerate((5, 6)):
            idx = epoch_order(len(data.x_train), seed, epoch)[position * 20 : (position + 1) * 20]
            plain = data.x_train[idx]
            assert torch.equal(yb[k], data.y_train[idx])
            assert torch.equal(xb[k], cifar_augment(plain, torch.Generator().manual_seed(seed_for(seed, step, 2))))
            assert not torch.equal(xb[k], plain)
        again, _ = Batches(data, 20, [5, 6])(step)
        assert torch.equal(again, xb)  # same seeds and step: the same augmented batch
    assert not torch.equal(Batches(data, 20, [5])(0)[0], Batches(data, 20, [5])(1)[0])
    # the registry decides: a dataset naming another augmentation gets that one, an unknown name fails
    monkeypatch.setitem(AUGMENTATIONS._entries, "negate", lambda x, g: -x)
    xb, _ = Batches(_rgb("negate"), 20, [5])(0)
    assert torch.equal(xb, -Batches(_rgb(None), 20, [5])(0)[0])
    with pytest.raises(UnknownNameError, match="cifar"):
        Batches(_rgb("cifr"), 20, [5])


def test_augmented_training_is_deterministic_per_seed_and_differs_from_plain_training():
    recipe = Recipe(steps="8it", batch_size=20, lr=0.05, eval_every="4it")

    def run(data, seed):
        model = initialize(build_model("conv2", input_shape=data.input_shape), seed=0)
        result = train(model, data, recipe, seed=seed, device="cpu")
        return result.history, model.state_dict()

    augmented, again, plain, other = run(_rgb(), 1), run(_rgb(), 1), run(_rgb(None), 1), run(_rgb(), 2)
    assert augmented[0][1:] == again[0][1:]  # (row 0's train_loss is nan: nothing trained yet)
    assert all(torch.equal(v, again[1][k]) for k, v in augmented[1].items())
    first = next(iter(augmented[1]))  # the first layer's weights
    for different in (plain, other):
        assert augmented[0][-1]["train_loss"] != different[0][-1]["train_loss"]
        assert not torch.equal(augmented[1][first], different[1][first])


def test_bad_arguments():
    with pytest.raises(ValueError, match="start_step"):
        train(lenet(), _tiny(), Recipe(steps="5it", batch_size=10), start_step=9, device="cpu")
    with pytest.raises(ValueError, match="batch_size"):
        train(lenet(), _tiny(), Recipe(steps="5it", batch_size=10_000), device="cpu")


def _tiny():
    from ticketlab.data import load_dataset

    return load_dataset("synthetic", val_size=100)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_evaluate_equals_the_models_own_forward(dropout):
    """``evaluate``'s MLP path (ReLUs in place) gives exactly what ``model(x)`` gives in eval mode, and
    leaves the model's mode and its inputs as they were."""
    import torch.nn.functional as F

    from ticketlab.models import build_model
    from ticketlab.training.evaluate import evaluate

    torch.manual_seed(0)
    model = build_model("mlp:784-32-16-10", input_shape=(1, 28, 28), num_classes=10, dropout=dropout)
    x, y = torch.randn(700, 1, 28, 28), torch.randint(0, 10, (700,))
    before = x.clone()
    model.train()
    got = evaluate(model, x, y, batch_size=300)
    assert model.training and torch.equal(x, before)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert got["loss"] == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-6)
    assert got["acc"] == int((out.argmax(1) == y).sum()) / len(y)


def test_evaluation_chunks_change_the_metrics_by_float_rounding_only():
    from ticketlab.models import build_model
    from ticketlab.training.evaluate import eval_chunk, evaluate

    torch.manual_seed(0)
    model = build_model("lenet300", input_shape=(1, 28, 28), num_classes=10)
    cpu = torch.device("cpu")
    assert eval_chunk(model, cpu) == (1 << 18) // 300 and eval_chunk(model, cpu, models=4) == 5000
    assert eval_chunk(model, torch.device("cuda")) == 5000
    x, y = torch.randn(3000, 1, 28, 28), torch.randint(0, 10, (3000,))
    whole, chunked = evaluate(model, x, y, batch_size=3000), evaluate(model, x, y)
    assert chunked["acc"] == whole["acc"] and chunked["loss"] == pytest.approx(whole["loss"], rel=1e-6)


def test_evaluate_calls_a_hooked_model_so_its_hooks_count_the_passes():
    from ticketlab.methods.cost import measure
    from ticketlab.models import build_model
    from ticketlab.training.evaluate import evaluate

    model = build_model("mlp:784-16-10", input_shape=(1, 28, 28), num_classes=10)
    x, y = torch.randn(600, 1, 28, 28), torch.randint(0, 10, (600,))
    with measure(model) as meter:
        evaluate(model, x, y, batch_size=250)
    assert meter.passes == 3 and meter.examples == 600
