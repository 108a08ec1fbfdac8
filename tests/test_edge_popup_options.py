"""edge-popup's options beyond the paper (issue 22 item 4): ``shares`` (the kept weights split between the
layers in given proportions), ``score_init: magnitude`` (scores start at |w_0|) or ``criterion`` (from a
criterion's mask), and ``train`` (the mask's
weights trained with the recipe, the level is the trained ticket)."""

from __future__ import annotations

import pytest
import torch

from ticketlab.config import ExperimentSpec, MethodSpec, Recipe
from ticketlab.experiment import run_experiment
from ticketlab.masks import Mask
from ticketlab.methods.edge_popup import EdgePopup, rank_matched, share_counts
from ticketlab.methods.scoretrain import standardised
from ticketlab.store import RunDir


def test_share_counts_by_hand():
    sizes = {"a": 100, "b": 100, "c": 100}
    # 3.5, 2.1, 1.4: floors 3, 2, 1 and the one left to the largest remainder
    assert share_counts(sizes, {"a": 0.5, "b": 0.3, "c": 0.2}, 7) == {"a": 4, "b": 2, "c": 1}
    # 3.33 each: floors 3, the one left to the earliest layer (equal remainders)
    assert share_counts(sizes, {"a": 1.0, "b": 1.0, "c": 1.0}, 10) == {"a": 4, "b": 3, "c": 3}
    # the shares are proportions: scaling them changes nothing
    assert share_counts(sizes, {"a": 5.0, "b": 3.0, "c": 2.0}, 7) == {"a": 4, "b": 2, "c": 1}


def test_share_counts_caps_a_full_layer_and_spreads_its_excess():
    # 5, 5, 10 -> c holds only 4: the other 16 split 1:1
    assert share_counts({"a": 100, "b": 10, "c": 4}, {"a": 1.0, "b": 1.0, "c": 2.0}, 20) == {"a": 8, "b": 8, "c": 4}
    # 4, 4, 4 -> b and c full at 3 each: a gets the other 6
    assert share_counts({"a": 1000, "b": 3, "c": 3}, {"a": 1.0, "b": 1.0, "c": 1.0}, 12) == {"a": 6, "b": 3, "c": 3}
    # a cap that appears only after a first one: 10/3 each -> a full (2), then 4, 4 -> b full (3), c 5
    assert share_counts({"a": 2, "b": 3, "c": 100}, {"a": 1.0, "b": 1.0, "c": 1.0}, 10) == {"a": 2, "b": 3, "c": 5}
    assert share_counts({"a": 2, "b": 3}, {"a": 1.0, "b": 1.0}, 5) == {"a": 2, "b": 3}  # everything kept


def test_share_counts_always_reach_the_exact_total():
    sizes = {"l0": 784 * 300, "l1": 300 * 100, "l2": 1000}
    shares = {"l0": 0.526, "l1": 0.338, "l2": 0.136}
    for total in (1, 2, 7, 1331, 2662, 26620, 200000):
        counts = share_counts(sizes, shares, total)
        assert sum(counts.values()) == total and all(0 <= counts[n] <= sizes[n] for n in sizes)
    with pytest.raises(ValueError, match="cannot keep"):
        share_counts({"a": 2}, {"a": 1.0}, 3)


RECIPE = Recipe(steps="6it", batch_size=50, lr=0.05, eval_every="3it")


def spec(densities=(0.1,), **options) -> ExperimentSpec:
    return ExperimentSpec(
        model="mlp:784-32-10",
        dataset="synthetic",
        val_size=200,
        recipe=RECIPE,
        densities=densities,
        method=MethodSpec(name="edge_popup", options=options),
    )


def test_magnitude_scores_with_no_score_step_keep_the_largest_initial_weights_per_share(tmp_path):
    # a learning rate too small to move any score: the mask is the top-k_l of |w_0| in each layer, the
    # k_l those of share_counts (25088 + 320 weights, 10%: round(2540.8) = 2541 kept, split 9:1: 2286.9 and
    # 254.1, floored, the one left to the larger remainder)
    s = spec(steps="1it", lr=1e-30, momentum=0.0, weight_decay=0.0, weights="init", score_init="magnitude",
             shares=[9.0, 1.0], train=True)  # fmt: skip
    result = run_experiment(s, tmp_path / "a", device="cpu")
    run = RunDir(result.path)
    init, d = run.level(0).weights("start"), run.level(1)
    mask, start, final = d.mask(), d.weights("start"), d.weights("final")
    counts = {"layers.0.weight": 2287, "layers.1.weight": 254}
    for name, keep in mask.items():
        assert int(keep.sum()) == counts[name]
        w = init[name].abs().flatten()
        threshold = w.topk(counts[name]).values[-1]
        assert torch.equal(keep.flatten(), w >= threshold)  # the top-k of |w_0| (no ties in random floats)
        assert torch.equal(start[name], init[name] * keep)  # the ticket starts from w_0 ⊙ m
    assert any(not torch.equal(final[n][mask[n]], start[n][mask[n]]) for n in mask)  # and is trained
    row = next(r for r in result.rows if r["level"] == 1)
    assert row["end_step"] == 6 and row["mask_cost_passes"] == 1 and row["density"] == 2541 / 25408


def test_trained_level_with_shares_is_exact_and_deterministic(tmp_path):
    s = spec(densities=(0.2, 0.05), steps="4it", weights="init", score_init="magnitude", shares=[1.0, 1.0],
             train=True)  # fmt: skip
    first = run_experiment(s, tmp_path / "a", device="cpu")
    second = run_experiment(s, tmp_path / "b", device="cpu")
    for level, target in ((1, 0.2), (2, 0.05)):
        mask = RunDir(first.path).level(level).mask()
        total = round(target * 25408)
        assert mask.kept() == total
        assert mask.layer_densities()["layers.1.weight"] == 1.0  # its half would exceed its 320 weights
        assert int(mask["layers.0.weight"].sum()) == total - 320
        assert RunDir(second.path).level(level).mask() == mask
        a = RunDir(first.path).level(level).weights("final")
        b = RunDir(second.path).level(level).weights("final")
        assert all(torch.equal(a[n], b[n]) for n in a)


def test_bad_shares_are_refused_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match="method.options.shares"):
        run_experiment(spec(shares=[1.0, -1.0]), tmp_path / "sign", device="cpu")
    with pytest.raises(ValueError, match="method.options.score_init"):
        run_experiment(spec(score_init="snip"), tmp_path / "init", device="cpu")
    assert not (tmp_path / "sign").exists() and not (tmp_path / "init").exists()  # nothing written
    with pytest.raises(ValueError, match=r"method.options.shares: give one share per prunable layer, 2 here"):
        run_experiment(spec(shares=[1.0, 1.0, 1.0]), tmp_path / "layers", device="cpu")
    assert not (tmp_path / "layers").exists()  # refused before anything is written


@pytest.mark.parametrize("counts", [{"w": 2}, 2])  # per layer, and one top-k over all layers
def test_rank_by_value_or_by_magnitude_by_hand(counts):
    for rank, kept, gradient in (("abs", [1, 0, 1, 0], [-1, 1, 1, -1]), ("value", [0, 1, 1, 0], [1, 1, 1, 1])):
        s = torch.tensor([-3.0, 1.0, 2.0, -0.5], requires_grad=True)
        m = EdgePopup(counts, rank).masks({"w": s})["w"]
        assert m.tolist() == kept  # abs: -3 is the largest |s|; value: -3 is the smallest s
        m.sum().backward()
        assert s.grad is not None and s.grad.tolist() == gradient  # straight through |s| or s


def test_standardised_outputs_inside_and_untouched_outside():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    x = torch.randn(16, 5)
    before = model(x)
    weights = [p.clone() for p in model.parameters()]
    with standardised(model, ["0.weight"]):
        hidden = model[0](x)
        inside = model(x)
    z = torch.nn.functional.linear(x, weights[0], weights[1])  # by hand: (z - mean) / sqrt(biased var + eps)
    by_hand = (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)
    assert torch.allclose(hidden, by_hand, atol=1e-6)
    assert torch.allclose(inside, model[2](torch.relu(by_hand)), atol=1e-6)
    assert torch.equal(model(x), before)  # the hook is gone
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), weights))


def test_global_ranking_with_no_score_step_is_global_magnitude_pruning(tmp_path):
    s = spec(steps="1it", lr=1e-30, momentum=0.0, weight_decay=0.0, weights="init", score_init="magnitude",
             rank="value", ranking="global", normalise=True, train=True)  # fmt: skip
    result = run_experiment(s, tmp_path, device="cpu")
    run = RunDir(result.path)
    init, mask = run.level(0).weights("start"), run.level(1).mask()
    names = sorted(mask)
    everything = torch.cat([init[n].abs().flatten() for n in names])
    threshold = everything.sort(descending=True).values[2540]  # the 2541st largest |w_0|
    for n in names:
        assert torch.equal(mask[n], init[n].abs() >= threshold)
    assert mask.kept() == 2541
    with pytest.raises(ValueError, match="method.options.shares: ranking global learns"):
        run_experiment(spec(ranking="global", shares=[1.0, 1.0]), tmp_path / "both", device="cpu")


def test_normalised_global_score_phase_is_deterministic_and_moves_the_mask(tmp_path):
    base = dict(steps="6it", lr=0.3, weight_decay=0.0, weights="init", score_init="magnitude", rank="value",
                ranking="global", train=True)  # fmt: skip
    a = RunDir(run_experiment(spec(normalise=True, **base), tmp_path / "a", device="cpu").path).level(1)
    b = RunDir(run_experiment(spec(normalise=True, **base), tmp_path / "b", device="cpu").path).level(1)
    c = RunDir(run_experiment(spec(normalise=False, **base), tmp_path / "c", device="cpu").path).level(1)
    assert a.mask() == b.mask() and a.mask().kept() == 2541
    assert all(torch.equal(a.weights("final")[n], b.weights("final")[n]) for n in a.weights("final"))
    assert a.mask() != c.mask()  # the standardisation changes what the scores learn


def test_rank_matched_by_hand():
    # kept first (b0, a1), by the last scores (a1: 5 > b0: 2); then the rest by the last scores (a0: 1), then
    # by |w_0| (b1 before a2: 0.7 > 0.2, both last score 0); the values are |w_0| sorted: 0.9 0.7 0.5 0.3 0.2
    mask = Mask({"a": torch.tensor([False, True, False]), "b": torch.tensor([True, False])})
    last = {"a": torch.tensor([1.0, 5.0, 0.0]), "b": torch.tensor([2.0, 0.0])}
    magnitude = {"a": torch.tensor([0.5, 0.3, 0.2]), "b": torch.tensor([0.9, 0.7])}
    out = rank_matched(mask, last, magnitude, per_layer=False)
    assert torch.equal(out["a"], torch.tensor([0.5, 0.9, 0.2])) and torch.equal(out["b"], torch.tensor([0.7, 0.3]))
    # within each layer: a ranks a1, a0, a2 on its own values 0.5 0.3 0.2; b ranks b0, b1 on 0.9 0.7
    out = rank_matched(mask, last, magnitude, per_layer=True)
    assert torch.equal(out["a"], torch.tensor([0.3, 0.5, 0.2])) and torch.equal(out["b"], torch.tensor([0.9, 0.7]))


@pytest.mark.parametrize("ranking", ["global", "layer"])
def test_criterion_start_with_no_score_step_is_the_criterions_mask(tmp_path, ranking):
    """With no score step the mask is multishot's mask for the same criterion, rounds and seed; the
    criterion's scoring is counted in the mask's cost."""
    options = dict(steps="1it", lr=1e-30, momentum=0.0, weight_decay=0.0, weights="init", rank="value",
                   ranking=ranking, train=True)  # fmt: skip
    ours = spec(densities=(0.05,), score_init="criterion", **options)
    ours = ours.model_copy(update={"method": ours.method.model_copy(update={"criterion": "synflow", "rounds": 5})})
    level = RunDir(run_experiment(ours, tmp_path / "ep", device="cpu").path).level(1)
    reference = ours.model_copy(update={"method": MethodSpec(name="multishot", criterion="synflow", rounds=5)})
    expected = RunDir(run_experiment(reference, tmp_path / "ms", device="cpu").path).level(1).mask()
    if ranking == "global":
        assert level.mask() == expected
    else:  # the criterion's ranking within each layer, at edge-popup's per-layer counts
        assert level.mask().kept() == expected.kept() and level.mask() != expected
        for n in expected:  # per layer, one of the two masks holds the other: the same ranking, other counts
            ours_n, theirs = level.mask()[n], expected[n]
            assert bool((ours_n | ~theirs).all()) or bool((theirs | ~ours_n).all())
    plain = spec(densities=(0.05,), score_init="magnitude", **options)
    base = RunDir(run_experiment(plain, tmp_path / "mag", device="cpu").path).level(1)
    assert level.metrics()["mask_cost_passes"] == base.metrics()["mask_cost_passes"] + 5  # one SynFlow pass a round


def test_criterion_goes_with_score_init_criterion_only(tmp_path):
    with_criterion = spec(score_init="magnitude")
    with_criterion = with_criterion.model_copy(
        update={"method": with_criterion.method.model_copy(update={"criterion": "synflow"})}
    )
    with pytest.raises(ValueError, match="method.criterion: edge_popup learns its scores"):
        run_experiment(with_criterion, tmp_path / "a", device="cpu")
    with pytest.raises(ValueError, match="method.criterion: edge_popup learns its scores"):
        run_experiment(spec(score_init="criterion"), tmp_path / "b", device="cpu")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing written


@pytest.mark.parametrize("family", ["lenet5", "resnet20"])
def test_criterion_start_on_conv_and_batchnorm_models(tmp_path, family):
    s = ExperimentSpec(
        model=family,
        dataset="synthetic",
        val_size=200,
        recipe=Recipe(steps="1it", batch_size=8, eval_every=None),
        densities=(0.2,),
        method=MethodSpec(
            name="edge_popup",
            criterion="snip",
            rounds=2,
            options=dict(
                steps="2it", score_init="criterion", weights="init", rank="value", ranking="global", train=True
            ),
        ),
    )
    run = RunDir(run_experiment(s, tmp_path, device="cpu").path)
    mask = run.level(1).mask()
    assert mask.kept() == round(0.2 * mask.total()) and run.level(1).metrics()["mask_cost_passes"] > 2
