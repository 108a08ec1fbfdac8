"""random_er / random_erk: per-layer kept counts against RigL's density loop and an explicit seat-by-seat
apportionment, exact density, nesting, multi-shot = one-shot, determinism."""

import math

import pytest
import torch
from torch import nn

from ticketlab.criteria import ScoringContext, score
from ticketlab.masks import Mask, prunable_parameters, select
from ticketlab.models import build_model, initialize


def rigl_densities(shapes: dict[str, tuple[int, ...]], density: float, kernel: bool) -> dict[str, float]:
    """RigL's loop (Evci et al. 2020): solve ε, make the layer with the largest raw probability dense while
    ε·p exceeds 1, solve again for the rest."""
    dense: set[str] = set()
    while True:
        rhs, divisor, raw = 0.0, 0.0, {}
        for name, shape in shapes.items():
            n = math.prod(shape)
            if name in dense:
                rhs -= n * (1 - density)
                continue
            rhs += n * density
            if kernel:
                raw[name] = sum(shape) / math.prod(shape)
            else:
                raw[name] = (shape[0] + shape[1]) / (shape[0] * shape[1])
            divisor += raw[name] * n
        eps = rhs / divisor
        top = max(raw.values())
        if top * eps <= 1:
            return {name: 1.0 if name in dense else eps * raw[name] for name in shapes}
        dense |= {name for name, p in raw.items() if p == top}


def seat_by_seat(shapes: dict[str, tuple[int, ...]], k: int, kernel: bool) -> dict[str, int]:
    """Webster apportionment, one weight at a time to the layer with the largest a_l / (count + 1/2)."""
    counts = dict.fromkeys(shapes, 0)
    for _ in range(k):
        best, best_q = None, -1.0
        for name, shape in shapes.items():
            if counts[name] == math.prod(shape):
                continue
            a = sum(shape) if kernel else (shape[0] + shape[1]) * math.prod(shape[2:])
            q = a / (counts[name] + 0.5)
            if q > best_q:
                best, best_q = name, q
        counts[best] += 1
    return counts


def lenet5() -> nn.Module:
    return initialize(build_model("lenet5", input_shape=(1, 28, 28), num_classes=10), seed=0)


@pytest.mark.parametrize("name,kernel", [("random_erk", True), ("random_er", False)])
@pytest.mark.parametrize("density", [0.005, 0.03, 0.1, 0.4, 0.8])
def test_layer_counts_are_rigl_densities_rounded(name, kernel, density):
    model = lenet5()
    shapes = {k: tuple(p.shape) for k, p in prunable_parameters(model).items()}
    mask = select(score(name, model, Mask.ones(model), ScoringContext(seed=3)), density)
    kept = {k: int(v.sum()) for k, v in mask.items()}
    assert mask.kept() == round(density * mask.total())
    assert kept == seat_by_seat(shapes, mask.kept(), kernel)  # lenet5's a_l admit no ties between layers
    rigl = rigl_densities(shapes, mask.kept() / mask.total(), kernel)
    for k, shape in shapes.items():
        assert abs(kept[k] - rigl[k] * math.prod(shape)) < 1, (k, kept[k], rigl[k] * math.prod(shape))
    if density >= 0.4:  # conv1 and fc3 are capped at dense, the rest rescaled (RigL's loop)
        assert rigl["conv1.weight"] == 1.0 and kept["conv1.weight"] == math.prod(shapes["conv1.weight"])


def test_er_ignores_the_kernel_and_erk_does_not():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 8, 5), nn.Flatten(), nn.Linear(8 * 4 * 4, 64))
    # ERK: a = Σ dims = 26 (conv), 192 (linear); ER: a = (8 + 8)·25 = 400, 64 + 128 = 192.
    er = select(score("random_er", model, Mask.ones(model), ScoringContext()), 0.05)
    erk = select(score("random_erk", model, Mask.ones(model), ScoringContext()), 0.05)
    k = er.kept()
    counts = {n: int(v.sum()) for n, v in er.items()}
    assert counts == {"0.weight": round(k * 400 / 592), "2.weight": round(k * 192 / 592)}
    counts = {n: int(v.sum()) for n, v in erk.items()}
    assert counts == {"0.weight": round(k * 26 / 218), "2.weight": round(k * 192 / 218)}


def test_random_within_a_layer_nested_and_seeded():
    model = lenet5()
    ones = Mask.ones(model)
    a = score("random_erk", model, ones, ScoringContext(seed=1))
    assert all(torch.equal(a[k], v) for k, v in score("random_erk", model, ones, ScoringContext(seed=1)).items())
    b = score("random_erk", model, ones, ScoringContext(seed=2))
    small, large = select(a, 0.05), select(a, 0.2)
    assert all(bool((small[k] <= large[k]).all()) for k in small)  # growing k only adds weights
    other = select(b, 0.05)
    assert {k: int(v.sum()) for k, v in other.items()} == {k: int(v.sum()) for k, v in small.items()}
    assert small != other  # same counts, different weights
    # fc1 keeps ~5% of 48,000 weights uniformly: every row of 400 inputs is hit about 20 times.
    rows = small["fc1.weight"].sum(1).double()
    assert 10 < rows.mean() < 40 and rows.std() < 3 * math.sqrt(rows.mean())


def test_pruned_weights_score_zero_and_multishot_equals_one_shot():
    model = lenet5()
    ctx = ScoringContext(seed=4)
    one_shot = select(score("random_erk", model, Mask.ones(model), ctx), 0.01)
    mask = Mask.ones(model)
    for density in (0.5, 0.2, 0.05, 0.01):
        scores = score("random_erk", mask.apply(model), mask, ctx)
        assert all(bool((scores[k][~mask[k]] == 0).all()) and bool((scores[k][mask[k]] > 0).all()) for k in mask)
        mask = select(scores, density, previous=mask)
    assert mask == one_shot


@pytest.mark.parametrize("family", ["lenet5", "conv2", "resnet20"])
@pytest.mark.parametrize("name", ["random_er", "random_erk"])
def test_zoo_exact_density_no_empty_layer(family, name):
    model = initialize(build_model(family, input_shape=(1, 28, 28), num_classes=10), seed=0)
    mask = select(score(name, model, Mask.ones(model), ScoringContext(seed=0)), 0.01)
    assert mask.kept() == round(0.01 * mask.total()) and not mask.empty_layers()
