import pytest
import torch
from torch import nn

from ticketlab.files import CorruptFileError
from ticketlab.masks import Mask, layer_collapse, prunable_parameters, select, top_k


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))


def scores_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().abs() for k, p in prunable_parameters(model).items()}


def test_prunable_parameters_are_linear_and_conv_weights_only():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    assert list(prunable_parameters(model)) == ["0.weight", "3.weight"]
    assert list(prunable_parameters(model, exempt=["3"])) == ["0.weight"]


@pytest.mark.parametrize("scope", ["global", "layerwise"])
@pytest.mark.parametrize("density", [1.0, 0.5, 0.37, 0.05, 0.01])
def test_exact_kept_count(scope, density):
    model = tiny()
    mask = select(scores_of(model), density, scope)
    if scope == "global":
        assert mask.kept() == round(density * mask.total())
    else:
        for name, keep in mask.items():
            assert int(keep.sum()) == round(density * keep.numel()), name


def test_global_keeps_the_largest_scores():
    scores = {"a": torch.tensor([5.0, 1.0, 3.0]), "b": torch.tensor([[4.0, 0.5], [2.0, 6.0]])}
    mask = select(scores, 3 / 7, "global")
    assert mask["a"].tolist() == [True, False, False]
    assert mask["b"].tolist() == [[True, False], [False, True]]


def test_ties_are_exact_and_broken_by_seeded_random_order_not_position():
    scores = {"w": torch.ones(1000)}
    first = select(scores, 0.3, seed=1)
    assert first.kept() == 300
    assert first == select(scores, 0.3, seed=1)  # deterministic
    assert first != select(scores, 0.3, seed=2)  # the seed decides
    # not by position: the kept ones are spread over the tensor, not the first (or last) 300
    positions = first["w"].nonzero().flatten().float()
    assert 350 < positions.mean() < 650


def test_previously_pruned_weights_stay_pruned_and_masks_nest():
    model = tiny()
    scores = scores_of(model)
    m1 = select(scores, 0.5)
    reversed_scores = {k: -v for k, v in scores.items()}  # would prefer exactly the pruned weights
    m2 = select(reversed_scores, 0.3, previous=m1)
    assert m2.kept() == round(0.3 * m2.total())
    for k in m1:
        assert not (m2[k] & ~m1[k]).any()


def test_density_larger_than_previous_is_an_error():
    m1 = select({"w": torch.arange(10.0)}, 0.3)
    with pytest.raises(ValueError, match="still unpruned"):
        select({"w": torch.arange(10.0)}, 0.5, previous=m1)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_bad_density_names_the_range(bad):
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\]"):
        select({"w": torch.ones(3)}, bad)


def test_bad_scope_lists_allowed():
    with pytest.raises(ValueError, match="global, layerwise"):
        select({"w": torch.ones(3)}, 0.5, scope="perlayer")


def test_nan_scores_rejected():
    with pytest.raises(ValueError, match="NaN"):
        select({"w": torch.tensor([1.0, float("nan")])}, 0.5)


def test_apply_zeroes_pruned_and_stats():
    model = tiny()
    mask = select(scores_of(model), 0.4, "layerwise")
    mask.apply(model)
    for name, p in prunable_parameters(model).items():
        assert (p[~mask[name]] == 0).all()
    assert mask.density() == pytest.approx(mask.kept() / mask.total())
    assert set(mask.layer_densities()) == set(mask)
    assert Mask.from_nonzero(model) == mask  # random init: no kept weight is exactly zero


def test_save_load_roundtrip_and_rejections(tmp_path):
    model = tiny()
    mask = select(scores_of(model), 0.25)
    path = mask.save(tmp_path / "mask.safetensors")
    assert Mask.load(path, model) == mask
    other = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    with pytest.raises(ValueError, match="another model"):
        Mask.load(path, other)
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) - 7])
    with pytest.raises(CorruptFileError):
        Mask.load(tmp_path / "trunc.safetensors")
    flipped = bytearray(data)
    flipped[-1] ^= 1
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(CorruptFileError, match="checksum"):
        Mask.load(tmp_path / "flip.safetensors")


def test_layer_collapse_detects_empty_layer_and_disconnection():
    model = tiny()
    dense = Mask.ones(model)
    assert not layer_collapse(model, dense, (6,)).collapsed
    empty = dense.clone()
    empty["2.weight"][:] = False
    report = layer_collapse(model, empty, (6,))
    assert report.empty_layers == ["2.weight"] and report.disconnected
    # every layer has weights, but layer 1 only feeds unit 0 of its output and layer 2 only reads unit 1
    cut = dense.clone()
    cut["0.weight"][:] = False
    cut["0.weight"][0, 0] = True
    cut["2.weight"][:] = False
    cut["2.weight"][0, 1] = True
    report = layer_collapse(model, cut, (6,))
    assert report.empty_layers == [] and report.disconnected
    cut["2.weight"][0, 0] = True
    assert not layer_collapse(model, cut, (6,)).collapsed


def test_layer_collapse_sees_paths_through_batchnorm_without_running_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.BatchNorm2d(2, track_running_stats=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    dense = Mask.ones(model)
    assert not layer_collapse(model, dense, (1, 4, 4)).collapsed
    cut = dense.clone()
    cut["0.weight"][1] = False  # channel 1 gets no input, and the output layer only reads channel 1
    cut["4.weight"][:, :4] = False
    assert layer_collapse(model, cut, (1, 4, 4)).disconnected
    cut["4.weight"][0, 0] = True
    assert not layer_collapse(model, cut, (1, 4, 4)).collapsed


def test_layer_collapse_leaves_model_untouched():
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layer_collapse(model, select(scores_of(model), 0.1), (6,))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_select_does_not_depend_on_the_order_of_the_scores_mapping(scope):
    """Ties at the threshold are broken by a seeded order over a canonical layer order: a mask loaded
    from disk (keys in safetensors' hash order) must give the same next mask as the one in memory."""
    scores = {"b.weight": torch.tensor([3.0, 1.0, 1.0, 0.5]), "a.weight": torch.tensor([1.0, 1.0, 2.0, 0.1])}
    reordered = {"a.weight": scores["a.weight"], "b.weight": scores["b.weight"]}
    for seed in range(20):  # 4 tied scores of 1.0 compete for the last kept places
        first, second = select(scores, 0.5, scope, seed=seed), select(reordered, 0.5, scope, seed=seed)
        assert list(first) == list(scores) and list(second) == list(reordered)  # the caller's order is kept
        assert first == second, seed


def test_top_k_by_hand():
    scores = {"a": torch.tensor([5.0, 1.0, 4.0]), "b": torch.tensor([[3.0, 6.0], [0.0, 2.0]])}
    # global: the 3 highest of all 7 are 6, 5, 4
    assert top_k(scores, 3) == {"a": torch.tensor([1, 0, 1]), "b": torch.tensor([[0, 1], [0, 0]])}
    # only allowed entries compete: without 6 and 5 the 3 highest are 4, 3, 2
    allowed = {"a": torch.tensor([False, True, True]), "b": torch.tensor([[True, False], [True, True]])}
    assert top_k(scores, 3, allowed) == {"a": torch.tensor([0, 0, 1]), "b": torch.tensor([[1, 0], [0, 1]])}
    # per layer: 1 of a, 2 of b
    assert top_k(scores, {"a": 1, "b": 2}, allowed) == {
        "a": torch.tensor([0, 0, 1]),
        "b": torch.tensor([[1, 0], [0, 1]]),
    }
    with pytest.raises(ValueError, match="asked for 6 weights of the model but only 5 are allowed"):
        top_k(scores, 6, allowed)
    with pytest.raises(ValueError, match="only 2 are allowed"):
        top_k(scores, {"a": 3, "b": 0}, allowed)


def test_top_k_breaks_ties_by_the_seed_and_select_is_top_k_in_sorted_order():
    tied = {"w": torch.ones(10)}
    picks = {tuple(top_k(tied, 4, seed=seed)["w"].tolist()) for seed in range(10)}
    assert len(picks) > 1 and all(sum(p) == 4 for p in picks)
    assert top_k(tied, 4, seed=3) == top_k(tied, 4, seed=3)
    scores = {"b": torch.tensor([1.0, 1.0, 2.0]), "a": torch.tensor([1.0, 0.0, 1.0, 1.0])}
    ordered = {"a": scores["a"], "b": scores["b"]}
    for seed in range(10):
        assert select(scores, 3 / 7, seed=seed) == top_k(ordered, 3, seed=seed)
        assert select(scores, 0.5, "layerwise", seed=seed) == top_k(ordered, {"a": 2, "b": 2}, seed=seed)


def test_a_loaded_mask_has_its_keys_in_a_fixed_order(tmp_path):
    names = [f"layers.{i}.weight" for i in (2, 0, 1, 10)]
    mask = Mask({n: torch.ones(3, dtype=torch.bool) for n in names})
    mask.save(tmp_path / "m.safetensors")
    orders = {tuple(Mask.load(tmp_path / "m.safetensors")) for _ in range(20)}
    assert orders == {tuple(sorted(names))}
