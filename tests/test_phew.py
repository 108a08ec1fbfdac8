"""PHEW: the walks' steps against |w| proportions, round-robin starts and unbroken paths; the scores against a
slow rebuild from the walks and PHEW's stopping rule written as a loop; the graph of a residual net; no
layer collapse at 0.5% on lenet300; pruned weights never walked; the zoo."""

import math
from collections import defaultdict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.criteria import ScoringContext, parse, score
from ticketlab.criteria.phew import DEFAULTS, INPUT, OUTPUT, phew_walks, walk_graph, walks
from ticketlab.masks import Mask, layer_collapse, prunable_parameters, select
from ticketlab.models import build_model, initialize


def absolute(model, mask=None):
    mask = Mask.ones(model) if mask is None else mask
    return {n: (p.detach() * mask[n]).abs().double() for n, p in prunable_parameters(model).items()}


def run(model, n, forward, seed=0, input_shape=(3,)):
    graph = walk_graph(model, Mask.ones(model), input_shape)
    return walks(graph, absolute(model), n, forward, torch.Generator().manual_seed(seed))


def assert_frequencies(counts: torch.Tensor, probs: torch.Tensor):
    """Each row of counts against its row of probabilities, within 5 binomial standard deviations."""
    total = counts.sum(1, keepdim=True).double()
    sd = (total * probs * (1 - probs)).sqrt()
    assert bool(((counts - total * probs).abs() <= 5 * sd + 1).all()), (counts, total * probs)


def test_forward_steps_follow_magnitudes_from_round_robin_starts():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4)).double()
    w0, w1 = (w.abs() for w in absolute(model).values())
    n = 30000
    v = run(model, n, forward=True)
    ids0, flat0 = v["0.weight"]
    ids1, flat1 = v["2.weight"]
    assert torch.equal(ids0, 2 * torch.arange(n)) and torch.equal(ids1, ids0)  # every walk, numbered 2t
    assert torch.equal(flat0 % 3, torch.arange(n) % 3)  # input unit t mod 3
    assert torch.equal(flat1 % 5, flat0 // 3)  # the path goes on from the unit it reached
    # from input unit i, output unit o with probability |w0[o, i]| / Σ_o |w0[o, i]|
    counts0 = torch.zeros(3, 5)
    counts0.index_put_((flat0 % 3, flat0 // 3), torch.ones(n), accumulate=True)
    assert_frequencies(counts0, (w0 / w0.sum(0)).T)
    counts1 = torch.zeros(5, 4)
    counts1.index_put_((flat1 % 5, flat1 // 5), torch.ones(n), accumulate=True)
    assert_frequencies(counts1, (w1 / w1.sum(0)).T)


def test_backward_steps_follow_magnitudes_and_conv_to_linear_mapping():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 2), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 3 * 3, 4)).double()
    wc, wl = (w.abs() for w in absolute(model).values())
    n = 40000
    back = run(model, n, forward=False, input_shape=(2, 4, 4))
    ids_l, flat_l = back["3.weight"]
    ids_c, flat_c = back["0.weight"]
    assert torch.equal(ids_l, 2 * torch.arange(n) + 1) and torch.equal(flat_l // 27, torch.arange(n) % 4)
    feature = flat_l % 27
    assert torch.equal(ids_c, ids_l) and torch.equal(flat_c // 8, feature // 9)  # conv output channel = feature // 9
    counts = torch.zeros(4, 27)
    counts.index_put_((flat_l // 27, feature), torch.ones(n), accumulate=True)
    assert_frequencies(counts, wl / wl.sum(1, keepdim=True))
    # a conv step backward from channel o: (input channel, kernel position) ∝ |w[o, i, a, b]|
    rows = wc.reshape(3, 8)
    counts = torch.zeros(3, 8)
    counts.index_put_((flat_c // 8, flat_c % 8), torch.ones(n), accumulate=True)
    assert_frequencies(counts, rows / rows.sum(1, keepdim=True))
    # forward: from input channel i, (output channel, position) ∝ |w[o, i, a, b]|, then a uniform feature of o
    ahead = run(model, n, forward=True, input_shape=(2, 4, 4))
    flat_c, flat_l = ahead["0.weight"][1], ahead["3.weight"][1]
    i, o = (flat_c % 8) // 4, flat_c // 8
    assert torch.equal(i, torch.arange(n) % 2) and torch.equal((flat_l % 27) // 9, o)
    assert_frequencies(torch.bincount(flat_l % 9, minlength=9)[None].float(), torch.full((1, 9), 1 / 9).double())
    by_input = wc.transpose(0, 1).reshape(2, 12)  # columns (o, a, b)
    counts = torch.zeros(2, 12)
    counts.index_put_((i, o * 4 + flat_c % 4), torch.ones(n), accumulate=True)
    assert_frequencies(counts, by_input / by_input.sum(1, keepdim=True))


def mlp():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3))


def test_scores_rebuilt_slowly_and_phews_stopping_rule():
    model, ctx = mlp(), ScoringContext(input_shape=(6,), seed=4)
    got = score("phew:visits=0.5", model, Mask.ones(model), ctx)
    n, (ahead, behind) = phew_walks(model, Mask.ones(model), ctx, {**DEFAULTS, "visits": 0.5})
    assert n == math.ceil(0.5 * (48 + 40 + 15) / 6)
    paths = defaultdict(list)  # walk number -> the weights it took
    for direction in (ahead, behind):
        for name, (ids, flat) in direction.items():
            for walk, index in zip(ids.tolist(), flat.tolist()):
                paths[walk].append((name, index))
    assert sorted(paths) == list(range(2 * n)) and all(len(p) == 3 for p in paths.values())
    absw = absolute(model)
    largest = max(float(w.max()) for w in absw.values())
    expected = {name: 0.5 * w.flatten() / largest for name, w in absw.items()}
    for walk in sorted(paths, reverse=True):  # one weight at a time; earlier walks overwrite later ones
        for name, index in paths[walk]:
            expected[name][index] = 2 * n - walk + 0.5 * float(absw[name].flatten()[index]) / largest
    for name, w in got.items():
        torch.testing.assert_close(w.flatten(), expected[name])
    taken_by_walks = len({weight for path in paths.values() for weight in path})
    for k in range(1, taken_by_walks + 1, 7):  # PHEW: add whole walks until k weights are enabled
        kept = select(got, k / 103)
        chosen = {(name, i) for name, m in kept.items() for i in torch.nonzero(m.flatten()).flatten().tolist()}
        enabled: set = set()
        for walk in range(2 * n):
            new = set(paths[walk]) - enabled
            if len(enabled) + len(new) >= k:
                break
            enabled |= new
        assert enabled <= chosen <= enabled | new and len(chosen) == k
        rest = sorted(new, key=lambda nw: -float(absw[nw[0]].flatten()[nw[1]]))
        assert chosen - enabled == set(rest[: k - len(enabled)])  # the last walk's weights by |w|


class Block(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(cin, cout, 3, padding=1), nn.Conv2d(cout, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        out = self.conv2(F.relu(self.bn(self.conv1(x))))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


def test_graph_of_a_residual_net_never_takes_identity_shortcuts():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), Block(4, 4), Block(4, 6), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)
    )
    graph = walk_graph(model, Mask.ones(model), (1, 8, 8))
    assert graph.order == ["0.weight", "1.conv1.weight", "1.conv2.weight", "2.conv1.weight", "2.conv2.weight",
                           "2.shortcut.weight", "5.weight"]  # fmt: skip
    assert graph.ahead[INPUT] == [("0.weight", 1.0)]
    assert graph.ahead["0.weight"] == [("1.conv1.weight", 1.0)]  # not around block 1 by its identity
    assert graph.ahead["1.conv2.weight"] == [("2.conv1.weight", 0.5), ("2.shortcut.weight", 0.5)]
    assert graph.ahead["2.shortcut.weight"] == graph.ahead["2.conv2.weight"] == [("5.weight", 1.0)]
    assert graph.ahead["5.weight"] == [(OUTPUT, 1.0)] and graph.behind[OUTPUT] == [("5.weight", 1.0)]
    assert graph.behind["5.weight"] == [("2.conv2.weight", 0.5), ("2.shortcut.weight", 0.5)]
    assert graph.behind["2.conv1.weight"] == graph.behind["2.shortcut.weight"] == [("1.conv2.weight", 1.0)]
    assert graph.behind["1.conv1.weight"] == [("0.weight", 1.0)] and graph.behind["0.weight"] == [(INPUT, 1.0)]
    got = score("phew", model, Mask.ones(model), ScoringContext(input_shape=(1, 8, 8)))
    assert all(bool((s >= 1).any()) for s in got.values())  # every layer is walked


def test_lenet300_at_half_a_percent_keeps_every_layer_connected_exact_and_seeded():
    model = initialize(build_model("lenet300", input_shape=(1, 28, 28), num_classes=10), seed=0)
    ctx = ScoringContext(input_shape=(1, 28, 28), seed=0)
    scores = score("phew", model, Mask.ones(model), ctx)
    mask = select(scores, 0.005)
    assert mask.kept() == round(0.005 * mask.total())
    assert not layer_collapse(model, mask, (1, 28, 28)).collapsed
    assert all(torch.equal(scores[k], v) for k, v in score("phew", model, Mask.ones(model), ctx).items())
    other = select(score("phew", model, Mask.ones(model), ScoringContext(input_shape=(1, 28, 28), seed=1)), 0.005)
    assert other != mask


def test_pruned_weights_are_never_walked():
    model = mlp()
    g = torch.Generator().manual_seed(0)
    mask = Mask({n: torch.rand(p.shape, generator=g) < 0.3 for n, p in prunable_parameters(model).items()})
    ctx = ScoringContext(input_shape=(6,))
    _, visits = phew_walks(model, mask, ctx, DEFAULTS)
    assert all(bool(mask[name].flatten()[flat].all()) for v in visits for name, (_, flat) in v.items())
    got = score("phew", model, mask, ctx)
    assert all(bool((got[k][~mask[k]] == 0).all()) for k in got)
    assert parse("phew:visits=4") == "phew:visits=4"
    with pytest.raises(ValueError):
        parse("phew:visits=0")


def test_layers_the_mask_leaves_dense_are_walked_through_not_scored():
    model = mlp()
    mask = Mask({k: v for k, v in Mask.ones(model).items() if k != "2.weight"})  # the middle layer kept dense
    ctx = ScoringContext(input_shape=(6,))
    _, (ahead, _) = phew_walks(model, mask, ctx, DEFAULTS)
    assert torch.equal(ahead["2.weight"][1] % 8, ahead["0.weight"][1] // 6)  # paths run on through it
    assert torch.equal(ahead["4.weight"][1] % 5, ahead["2.weight"][1] // 8)
    got = score("phew", model, mask, ctx)
    assert list(got) == ["0.weight", "4.weight"] and all(bool((s >= 1).any()) for s in got.values())


@pytest.mark.parametrize("family", ["lenet5", "conv2", "resnet20"])
def test_zoo_exact_density_without_collapse(family):
    model = initialize(build_model(family, input_shape=(1, 28, 28), num_classes=10), seed=0)
    mask = select(score("phew:visits=0.5", model, Mask.ones(model), ScoringContext(input_shape=(1, 28, 28))), 0.01)
    assert mask.kept() == round(0.01 * mask.total())
    assert not layer_collapse(model, mask, (1, 28, 28)).collapsed
