"""edge-popup (Ramanujan et al. 2020) and Gem-Miner (Sreenivasan et al. 2022): the straight-through score
update on hand-computed examples, the freezing schedule, exact densities, the untrained supermask as
edge-popup's result, the trained ticket (and mask-only accuracy) as Gem-Miner's, determinism, cost, weights
untouched and every model family."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ticketlab.config import ExperimentSpec, MethodSpec, Recipe
from ticketlab.experiment import run_experiment
from ticketlab.masks import Mask
from ticketlab.methods.edge_popup import EdgePopup, layer_counts
from ticketlab.methods.gem_miner import GemMiner, freezing_events, split_ranked
from ticketlab.methods.scoretrain import score_step, signed_kaiming_constant
from ticketlab.store import RunDir

W = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]])
X = torch.tensor([[1.0, 2.0, -1.0]])
Y = torch.tensor([0])


def linear() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    model = nn.Sequential(nn.Linear(3, 2, bias=False))
    return model, {"0.weight": W.clone()}


def hand_gradient(effective: torch.Tensor) -> torch.Tensor:
    """∂CE/∂W_eff of one example by hand: (softmax(W_eff x) - onehot(y)) xᵀ."""
    z = effective @ X[0]
    p = torch.exp(z) / torch.exp(z).sum()
    return torch.outer(p - torch.tensor([1.0, 0.0]), X[0])


def test_edge_popup_step_is_the_straight_through_gradient_by_hand():
    model, state = linear()
    s = torch.tensor([[0.3, -0.1, -0.5], [0.05, 0.4, -0.2]])
    scores = {"0.weight": s.clone().requires_grad_()}
    optimizer = torch.optim.SGD(list(scores.values()), lr=0.5)
    loss = score_step(model, state, scores, EdgePopup({"0.weight": 3}), X, Y, optimizer, lr=0.5)

    m = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # the 3 largest |s|: 0.5, 0.4, 0.3
    z = (W * m) @ X[0]
    assert loss == pytest.approx(float(torch.logsumexp(z, 0) - z[0]), rel=1e-6)
    expected = s - 0.5 * torch.sign(s) * W * hand_gradient(W * m)  # every score moves, kept or not
    assert torch.allclose(scores["0.weight"].detach(), expected, atol=1e-6)


def test_gem_miner_step_rounds_freezes_penalises_and_clips_by_hand():
    model, state = linear()
    s = torch.tensor([[0.9, 0.45, 0.6], [0.55, 0.02, 0.98]])
    kept = Mask({"0.weight": torch.tensor([[True, True, True], [False, True, True]])})
    rule = GemMiner(kept, events={}, penalty=0.1, scope="global", seed=0)
    scores = {"0.weight": s.clone().requires_grad_()}
    optimizer = torch.optim.SGD(list(scores.values()), lr=1.0)
    score_step(model, state, scores, rule, X, Y, optimizer, lr=1.0)
    with torch.no_grad():
        rule.after_step(1, scores)

    f = kept["0.weight"].float()
    m = (s > 0.5).float() * f  # [[1, 0, 1], [0, 0, 1]]: 0.55 is rounded up but frozen out
    grad = f * W * hand_gradient(W * m) + 2 * 0.1 * s  # the frozen weight gets the penalty only
    expected = (s - grad).clamp(0, 1)
    assert torch.allclose(scores["0.weight"].detach(), expected, atol=1e-6)
    assert (s - grad)[0, 0] > 1 and (s - grad)[0, 1] < 0  # the clip was needed on both sides
    assert expected[0, 0] == 1.0 and expected[0, 1] == 0.0 and 0 < expected[1, 0] < 1


def test_gem_miner_freezes_the_lowest_scores_among_those_kept():
    kept = Mask({"a": torch.tensor([True, True, True, False])})
    rule = GemMiner(kept, events={2: 0.5}, penalty=0.0, scope="global", seed=0)
    scores = {"a": torch.tensor([0.2, 0.9, 0.7, 1.0])}
    rule.after_step(1, scores)
    assert rule.kept == kept  # no event at step 1
    rule.after_step(2, scores)
    assert rule.kept == Mask({"a": torch.tensor([False, True, True, False])})  # 0.2 frozen; 1.0 stays out


def test_freezing_events_follow_the_exponential_schedule():
    assert freezing_events(0.1, steps=150, period=5) == pytest.approx(
        {5 * j: 0.1 ** (j / 29) for j in range(1, 30)}
    )  # their 150 epochs / iter_period 5: 29 events
    assert freezing_events(0.1, steps=20, period=10) == {10: 0.1}
    assert freezing_events(0.1, steps=10, period=10) == {}


def test_layer_counts_add_up_to_the_exact_total():
    sizes = {"a": 784 * 300, "b": 300 * 100, "c": 1000, "d": 7}
    for density in (0.5, 0.1, 0.0123, 0.001):
        counts = layer_counts(sizes, density)
        assert sum(counts.values()) == round(density * sum(sizes.values()))
        assert all(abs(counts[n] - density * sizes[n]) < 1 for n in sizes)


def test_signed_kaiming_constant():
    w = torch.tensor([[0.3, -0.2], [0.0, -1.0]])
    got = signed_kaiming_constant({"w": w, "b": torch.ones(2)}, ["w"])
    std = math.sqrt(2 / 2)
    assert torch.equal(got["w"], torch.tensor([[std, -std], [std, -std]])) and torch.equal(got["b"], torch.ones(2))


RECIPE = Recipe(steps="6it", batch_size=50, lr=0.05, eval_every="3it")


def spec(name: str, model: str = "mlp:784-32-10", densities=(0.3,), **options) -> ExperimentSpec:
    return ExperimentSpec(
        model=model,
        dataset="synthetic",
        val_size=200,
        recipe=RECIPE,
        densities=densities,
        method=MethodSpec(name=name, options=options),
    )


def test_edge_popup_level_is_the_untrained_supermask_on_signed_constants(tmp_path):
    s = spec("edge_popup", densities=(0.3, 0.1), steps="8it")
    first = run_experiment(s, tmp_path / "a", device="cpu")
    run = RunDir(first.path)
    init = run.level(0).weights("start")
    for level, target in ((1, 0.3), (2, 0.1)):
        d = run.level(level)
        mask, start, final = d.mask(), d.weights("start"), d.weights("final")
        assert mask.kept() == round(target * mask.total())
        assert all(abs(int(m.sum()) - target * m.numel()) < 1 for m in mask.values())  # per layer
        for name, keep in mask.items():
            assert torch.equal(final[name], start[name])  # never trained
            std = math.sqrt(2 / init[name].shape[1])
            expected = torch.where(init[name] >= 0, std, -std)
            assert torch.equal(final[name][keep], expected[keep]) and not final[name][~keep].any()
        row = next(r for r in first.rows if r["level"] == level)
        assert row["end_step"] == 0 and row["mask_cost_passes"] == 8 and row["mask_cost_examples"] == 8 * 50
    second = run_experiment(s, tmp_path / "b", device="cpu")
    assert all(RunDir(second.path).level(k).mask() == run.level(k).mask() for k in (1, 2))


def test_gem_miner_trains_the_ticket_and_records_the_mask_only_accuracy(tmp_path):
    s = spec("gem_miner", densities=(0.2,), steps="8it", period="2it", lr=5.0)
    result = run_experiment(s, tmp_path / "a", device="cpu")
    d = RunDir(result.path).level(1)
    mask, start, final = d.mask(), d.weights("start"), d.weights("final")
    assert mask.kept() == round(0.2 * mask.total())
    assert any(not torch.equal(final[n][mask[n]], start[n][mask[n]]) for n in mask)  # the weights trained
    row = next(r for r in result.rows if r["level"] == 1)
    assert row["end_step"] == 6 and row["mask_cost_passes"] == 8
    assert 0 <= row["mask_only_val_acc"] <= 1 and 0 < row["gem_miner_rounded_density"] <= row["density"]
    again = run_experiment(s, tmp_path / "b", device="cpu")
    assert RunDir(again.path).level(1).mask() == mask


@pytest.mark.parametrize("name", ["edge_popup", "gem_miner"])
def test_learned_masks_take_no_criterion(tmp_path, name):
    bad = spec(name).model_copy(update={"method": MethodSpec(name=name, criterion="snip")})
    with pytest.raises(ValueError, match="criterion"):
        run_experiment(bad, tmp_path, device="cpu")


@pytest.mark.parametrize("family", ["lenet5", "conv2", "resnet20"])
@pytest.mark.parametrize("name", ["edge_popup", "gem_miner"])
def test_every_model_family(tmp_path, family, name):
    s = spec(
        name,
        model=family,
        densities=(0.2,),
        steps="2it",
        batch_size=8,
        **({"period": "1it"} if name == "gem_miner" else {}),
    )
    s = s.model_copy(update={"recipe": Recipe(steps="1it", batch_size=8, eval_every=None)})
    result = run_experiment(s, tmp_path, device="cpu")
    run = RunDir(result.path)
    init, level = run.level(0).weights("start"), run.level(1)
    mask, start = level.mask(), level.weights("start")
    assert mask.kept() == round(0.2 * mask.total())
    for name_, keep in mask.items():  # the mask sits on signed Kaiming constants
        std = math.sqrt(2 / init[name_][0].numel())
        assert torch.allclose(start[name_][keep].abs(), torch.full_like(start[name_][keep], std))


@pytest.mark.parametrize("family", ["mlp:784-16-10", "resnet20"])
def test_score_training_leaves_the_model_untouched(synthetic, family):
    from ticketlab.methods.scoretrain import train_scores
    from ticketlab.models import build_model, initialize, snapshot

    model = initialize(build_model(family, input_shape=(1, 28, 28), num_classes=10), seed=0)
    before = snapshot(model)
    names = sorted(Mask.ones(model))
    weights = signed_kaiming_constant(before, names)
    scores = {n: torch.rand(weights[n].shape).requires_grad_() for n in names}
    rule = EdgePopup(layer_counts({n: weights[n].numel() for n in names}, 0.5))
    state, curve = train_scores(model, weights, scores, rule, synthetic, Recipe(steps="2it", batch_size=8), seed=0)
    assert all(torch.equal(before[k], v) for k, v in snapshot(model).items())
    assert [row["step"] for row in curve] == [2]
    assert all(torch.equal(state[n], weights[n]) for n in names)  # the weights stay frozen
    moved = [k for k in state if "running_mean" in k and not torch.equal(state[k], before[k])]
    assert bool(moved) == (family == "resnet20")  # BatchNorm statistics follow the masked networks


def test_the_score_curve_is_written_beside_the_level(tmp_path):
    import json

    result = run_experiment(spec("edge_popup", steps="6it"), tmp_path, device="cpu")
    curve = json.loads((result.path / "level_01" / "score_curve.json").read_text())
    assert [row["step"] for row in curve] == [3, 6] and all(row["train_loss"] > 0 for row in curve)
    assert "score_curve" not in result.rows[1]  # the metrics stay flat


def test_split_ranked_by_hand():
    # order: weight 2 best, then 0, 1, 3; two kept: 1 and 0.75 above 0.5, then 0.5·(4-1-j)/2: 0.25 and 0
    values = split_ranked(torch.tensor([2, 0, 1, 3]), kept=2)
    assert torch.equal(values, torch.tensor([0.75, 0.25, 1.0, 0.0], dtype=torch.float64))
    many = split_ranked(torch.randperm(1000, generator=torch.Generator().manual_seed(0)), kept=37)
    assert int((many > 0.5).sum()) == 37 and many.min() == 0 and many.max() == 1 and many.unique().numel() == 1000


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_gem_miner_criterion_start_with_no_score_step_is_the_criterions_mask(tmp_path, scope):
    """No freezing event and a learning rate too small to move a score: the mask is the top κ·N of the start,
    i.e. multishot's mask for the same criterion, rounds, scope and seed; the start rounds to that mask
    (every kept weight above 0.5, every other below) and the criterion's scoring counts in the mask's cost."""
    options = dict(steps="1it", period="5it", lr=1e-30, momentum=0.0, penalty=0.0, weights="init",
                   score_init="criterion")  # fmt: skip
    ours = spec("gem_miner", densities=(0.05,), **options)
    ours = ours.model_copy(
        update={"method": ours.method.model_copy(update={"criterion": "synflow", "rounds": 5, "scope": scope})}
    )
    run = run_experiment(ours, tmp_path / "gm", device="cpu")
    level = RunDir(run.path).level(1)
    reference = ours.model_copy(
        update={"method": MethodSpec(name="multishot", criterion="synflow", rounds=5, scope=scope)}
    )
    expected = RunDir(run_experiment(reference, tmp_path / "ms", device="cpu").path).level(1).mask()
    assert level.mask() == expected
    row = next(r for r in run.rows if r["level"] == 1)
    assert row["gem_miner_rounded_density"] == pytest.approx(expected.kept() / expected.total())
    plain = spec("gem_miner", densities=(0.05,), **{**options, "score_init": "uniform"})
    base = next(r for r in run_experiment(plain, tmp_path / "u", device="cpu").rows if r["level"] == 1)
    assert row["mask_cost_passes"] == base["mask_cost_passes"] + 5  # one SynFlow pass a round


def test_gem_miner_criterion_start_trains_and_freezes(tmp_path):
    """With score steps and freezing events the criterion's start is revised: exact density, a trained
    ticket, deterministic per seed."""
    s = spec("gem_miner", densities=(0.1,), steps="8it", period="2it", lr=5.0, score_init="criterion")
    s = s.model_copy(update={"method": s.method.model_copy(update={"criterion": "snip", "rounds": 2})})
    first = RunDir(run_experiment(s, tmp_path / "a", device="cpu").path).level(1)
    assert first.mask().kept() == round(0.1 * first.mask().total())
    again = RunDir(run_experiment(s, tmp_path / "b", device="cpu").path).level(1)
    assert again.mask() == first.mask()


def test_gem_miner_criterion_goes_with_score_init_criterion_only(tmp_path):
    with pytest.raises(ValueError, match="method.criterion: gem_miner learns its scores"):
        run_experiment(spec("gem_miner", score_init="criterion"), tmp_path / "a", device="cpu")
    assert not (tmp_path / "a").exists()  # nothing written
