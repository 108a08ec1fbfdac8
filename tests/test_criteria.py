"""Criteria: each checked against an independent plain computation, then contract tests over CRITERIA."""

import copy
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import ticketlab
from ticketlab.criteria import (
    CRITERIA,
    ScoringContext,
    Stack,
    criterion_names,
    is_data_aware,
    parse,
    score,
)
from ticketlab.masks import Mask, layer_collapse, prunable_parameters, select
from ticketlab.models import build_model, initialize
from ticketlab.registry import UnknownNameError

STACKS = ["stacked(grasp,snip)", "stacked(stacked(magnitude,snip),synflow)", "stacked(synflow,large_final_same_sign)"]
SETTINGS = [
    "prospr:first_order:new_data",
    "ntk_sap:eps=0.02:draws=2",
    "phew:visits=0.5",
]  # criteria with settings in their names
ALL = criterion_names() + STACKS + SETTINGS


def two_layer(bias: bool = True, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3, bias=bias), nn.ReLU(), nn.Linear(3, 2, bias=bias)).to(dtype)


def batches_for(in_features: int, classes: int, n: int = 2, size: int = 5, dtype=torch.float64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, in_features, generator=g, dtype=dtype), torch.randint(0, classes, (size,), generator=g))
        for _ in range(n)
    ]


def total_loss(model: nn.Module, batches) -> torch.Tensor:
    """The loss the data-aware criteria differentiate: Σ_batches mean cross-entropy."""
    return sum(F.cross_entropy(model(x), y) for x, y in batches)


def weight_list(model):
    return list(prunable_parameters(model).values())


# ---- names -----------------------------------------------------------------------------------------


def test_names_and_data_awareness():
    assert set(criterion_names()) == {
        "random", "magnitude", "snip", "grasp", "grasp_abs", "synflow", "large_final", "large_final_same_sign",
        "magnitude_increase", "movement", "large_init_large_final", "random_er", "random_erk",
        "prospr", "ntk_sap", "phew",
    }  # fmt: skip
    assert criterion_names() == CRITERIA.names()
    assert [n for n in criterion_names() if is_data_aware(n)] == ["grasp", "grasp_abs", "prospr", "snip"]
    assert is_data_aware("stacked(magnitude, snip)") and is_data_aware("stacked(stacked(grasp,magnitude),synflow)")
    assert not is_data_aware("stacked(stacked(magnitude,random),synflow)")
    assert parse(" Stacked( SNIP , stacked(magnitude,grasp) ) ") == Stack("snip", "stacked(magnitude,grasp)")
    assert parse("Stacked_Signed(SNIP, stacked(magnitude,grasp))") == Stack("snip", "stacked(magnitude,grasp)", True)
    assert is_data_aware("stacked_signed(magnitude, snip)") and not is_data_aware("stacked_signed(magnitude,synflow)")
    assert is_data_aware("stacked(stacked_signed(magnitude,grasp),synflow)")


@pytest.mark.parametrize("name", ["snipp", "stacked(snip,foo)", "stacked(stacked(foo,snip),grasp)"])
def test_unknown_names_list_the_allowed_ones(name):
    with pytest.raises(UnknownNameError, match="Allowed: grasp, grasp_abs.*stacked"):
        parse(name)


@pytest.mark.parametrize(
    "name", ["stacked(snip)", "stacked(snip,grasp,synflow)", "stacked(snip,", "stacked snip,grasp",
             "stacked(snip,grasp))", "stacked(,snip)", "snip(grasp)", "stacked(stacked(snip),grasp)",
             "stacked_signed(snip)", "stacked_signed snip,grasp"],
)  # fmt: skip
def test_malformed_stacked_is_a_value_error(name):
    with pytest.raises(ValueError, match="malformed"):
        parse(name)


# ---- each criterion against a plain computation ----------------------------------------------------


def test_magnitude_and_random_on_hand_made_tensors():
    model = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [-0.25, 3.0, -4.0]]))
    mask = Mask({"weight": torch.tensor([[True, True, False], [True, True, True]])})
    assert score("magnitude", model, mask, ScoringContext())["weight"].tolist() == [[1.0, 2.0, 0.0], [0.25, 3.0, 4.0]]
    a = score("random", model, mask, ScoringContext(seed=3))["weight"]
    assert torch.equal(a, score("random", model, mask, ScoringContext(seed=3))["weight"])
    assert not torch.equal(a, score("random", model, mask, ScoringContext(seed=4))["weight"])
    assert ((a >= 0) & (a < 1)).all() and a.dtype == torch.float32


def test_supermask_criteria_on_hand_made_tensors():
    # 004 §2.1's example: init 0.1, 0.2, 0.3 trained to -0.2, 0.05, 0.3 (plus one negative weight).
    model = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-0.2, 0.05, 0.3, -0.5]]))
    ctx = ScoringContext(initial={"weight": torch.tensor([[0.1, 0.2, 0.3, -0.1]])})
    mask = Mask.ones(model)

    def s(name):
        return [round(v, 6) for v in score(name, model, mask, ctx)["weight"].flatten().tolist()]

    assert s("large_final") == [0.2, 0.05, 0.3, 0.5]
    assert s("large_final_same_sign") == [-0.2, 0.05, 0.3, 0.5]
    assert s("magnitude_increase") == [0.1, -0.15, 0.0, 0.4]
    assert s("movement") == [0.3, 0.15, 0.0, 0.4]
    assert s("large_init_large_final") == [0.1, 0.05, 0.3, 0.1]
    # 004: threshold t = 0.1 on sign(w_0)·w_T keeps only the third of the three example weights.
    kept = select(score("large_final_same_sign", model, mask, ctx), 2 / 4)
    assert kept["weight"].tolist() == [[False, False, True, True]]
    with pytest.raises(ValueError, match="initial"):
        score("movement", model, mask, ScoringContext())


def test_snip_equals_per_weight_finite_differences():
    model, data = two_layer(), batches_for(4, 2)
    got = score("snip", model, Mask.ones(model), ScoringContext(batches=data))
    eps = 1e-6
    for name, w in prunable_parameters(model).items():
        expected = torch.zeros_like(w)
        for idx in range(w.numel()):  # one scalar at a time: independent of any vectorised gradient
            with torch.no_grad():
                orig = w.view(-1)[idx].item()
                w.view(-1)[idx] = orig + eps
                up = total_loss(model, data).item()
                w.view(-1)[idx] = orig - eps
                down = total_loss(model, data).item()
                w.view(-1)[idx] = orig
            expected.view(-1)[idx] = abs((up - down) / (2 * eps) * orig)
        torch.testing.assert_close(got[name], expected, atol=1e-8, rtol=1e-5)


def test_grasp_hessian_gradient_product_by_finite_differences_and_paper_sign():
    model, data = two_layer(), batches_for(4, 2)
    weights = weight_list(model)

    def grad_at() -> list[torch.Tensor]:
        return list(torch.autograd.grad(total_loss(model, data), weights))

    g = grad_at()
    eps = 1e-5
    with torch.no_grad():
        for w, gi in zip(weights, g):
            w.add_(eps * gi)
    up = grad_at()
    with torch.no_grad():
        for w, gi in zip(weights, g):
            w.sub_(2 * eps * gi)
    down = grad_at()
    with torch.no_grad():
        for w, gi in zip(weights, g):
            w.add_(eps * gi)
    hg = [(u - d) / (2 * eps) for u, d in zip(up, down)]

    mask, ctx = Mask.ones(model), ScoringContext(batches=data)
    keep, absolute = score("grasp:T=1", model, mask, ctx), score("grasp_abs:T=1", model, mask, ctx)
    for (name, w), h in zip(prunable_parameters(model).items(), hg):
        torch.testing.assert_close(keep[name], w.detach() * h, atol=1e-7, rtol=1e-4)
        torch.testing.assert_close(absolute[name], (w.detach() * h).abs(), atol=1e-7, rtol=1e-4)
    # The GraSP paper removes the weights with the HIGHEST -w ⊙ Hg: those are exactly the ones we prune.
    paper = torch.cat([(-w.detach() * h).flatten() for w, h in zip(weights, hg)])
    pruned = ~torch.cat([m.flatten() for m in select(keep, 0.5).values()])
    assert int(pruned.sum()) == len(paper) // 2
    assert paper[pruned].min() >= paper[~pruned].max()  # (ties, e.g. dead ReLUs' zeros, may go either way)
    assert paper[pruned].max() == paper.max() and paper[pruned].max() > 0


def mlp_16_12_12_10() -> nn.Module:
    torch.manual_seed(4)
    return nn.Sequential(
        nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 10)
    ).double()  # fmt: skip


def masked_hg_reference(model: nn.Module, mask: Mask, data, t: float) -> list[torch.Tensor]:
    """w ⊙ Hg with g and Hg taken w.r.t. the underlying weights of the masked network (forward with m ⊙ w),
    by plain autograd: g = ∇L(w), Hg = hvp(L, w, g), L = Σ_batches mean cross-entropy of logits / t."""
    layers = [model[0], model[2], model[4]]
    keep = [mask[f"{i}.weight"].double() for i in (0, 2, 4)]

    def loss(*ws):
        total = 0.0
        for x, y in data:
            h = x
            for i, (layer, w, m) in enumerate(zip(layers, ws, keep)):
                h = F.linear(h, m * w, layer.bias.detach())
                h = F.relu(h) if i < 2 else h
            total = total + F.cross_entropy(h / t, y)
        return total

    w = tuple(layer.weight.detach() for layer in layers)
    g = torch.autograd.functional.jacobian(loss, w)
    _, hg = torch.autograd.functional.hvp(loss, w, g)
    return [m * wi * h for m, wi, h in zip(keep, w, hg)]


def test_grasp_on_a_pruned_network_differentiates_the_underlying_weights():
    """Pruned weights enter neither g nor Hg: Hg_i of a kept weight has no H_ij g_j term from a pruned j
    (the GraSP and Synaptic-Flow code forward with m ⊙ w and differentiate w)."""
    model, data = mlp_16_12_12_10(), batches_for(16, 10, n=3, size=8)
    g = torch.Generator().manual_seed(11)
    mask = Mask({n: torch.rand(p.shape, generator=g) < 0.5 for n, p in prunable_parameters(model).items()})
    expected = masked_hg_reference(model, mask, data, t=1.0)
    ctx = ScoringContext(batches=data)
    got, absolute = score("grasp:T=1", model, mask, ctx), score("grasp_abs:T=1", model, mask, ctx)
    torch.testing.assert_close(list(got.values()), expected, atol=1e-12, rtol=1e-7)
    torch.testing.assert_close(list(absolute.values()), [e.abs() for e in expected], atol=1e-12, rtol=1e-7)


def test_grasp_temperature_divides_the_logits():
    model, data = two_layer(), batches_for(4, 2)
    b1, b2, t = model[0].bias.detach(), model[2].bias.detach(), 4.0

    def loss(w1, w2):
        return sum(F.cross_entropy(F.linear(F.relu(F.linear(x, w1, b1)), w2, b2) / t, y) for x, y in data)

    w = tuple(p.detach() for p in weight_list(model))
    g = torch.autograd.functional.jacobian(loss, w)
    _, hg = torch.autograd.functional.hvp(loss, w, g)
    got = score("grasp:T=4", model, Mask.ones(model), ScoringContext(batches=data))
    torch.testing.assert_close(list(got.values()), [wi * h for wi, h in zip(w, hg)])


def test_grasp_temperature_is_a_parameter_default_200_and_the_mask_follows_the_formula():
    model, data = mlp_16_12_12_10(), batches_for(16, 10, n=3, size=8)
    g = torch.Generator().manual_seed(12)
    mask = Mask({n: torch.rand(p.shape, generator=g) < 0.5 for n, p in prunable_parameters(model).items()})
    ctx, names = ScoringContext(batches=data), list(mask)
    masks = {}
    for t, name in [(1.0, "grasp:T=1"), (50.0, "GraSP:t=50.0"), (200.0, "grasp"), (200.0, "grasp:T=200")]:
        expected = dict(zip(names, masked_hg_reference(model, mask, data, t)))
        masks[name] = select(score(name, model, mask, ctx), 0.2, previous=mask, seed=3)
        assert masks[name] == select(expected, 0.2, previous=mask, seed=3), name
        absolute = select(
            score(name.lower().replace("grasp", "grasp_abs"), model, mask, ctx), 0.2, previous=mask, seed=3
        )
        assert absolute == select({n: e.abs() for n, e in expected.items()}, 0.2, previous=mask, seed=3), name
    assert masks["grasp"] == masks["grasp:T=200"]  # the default is T = 200
    assert masks["grasp:T=1"] != masks["grasp"]  # ... and the temperature changes which weights are kept
    torch.testing.assert_close(score("grasp", model, mask, ctx), score("grasp:T=200", model, mask, ctx), rtol=0, atol=0)


def test_grasp_temperature_names():
    assert parse("GraSP:t=200.0") == "grasp:T=200" and parse("grasp_abs: T = 0.5") == "grasp_abs:T=0.5"
    assert parse("stacked(grasp:T=50, snip)") == Stack("grasp:T=50", "snip")
    assert is_data_aware("grasp:T=50") and is_data_aware("grasp_abs:T=50")
    for bad in ["grasp:T=0", "grasp:T=-1", "grasp:200", "grasp:T=abc", "grasp:temp=5", "grasp:T=inf", "grasp:"]:
        with pytest.raises(ValueError, match="T=|malformed"):
            parse(bad)
    with pytest.raises(UnknownNameError, match="grasp:T=<softmax temperature, default 200>"):
        parse("graps")


def test_synflow_closed_form_on_two_layers():
    """y = |W2| relu(|W1| 1): R = 1ᵀ|W2||W1|1, ∂R/∂W1_ij = (1ᵀ|W2|)_i, ∂R/∂W2_ki = (|W1|1)_i."""
    model = two_layer(bias=True)
    w1, w2 = (w.detach().abs() for w in weight_list(model))
    got = score("synflow", model, Mask.ones(model), ScoringContext(input_shape=(4,)))
    torch.testing.assert_close(got["0.weight"], w1 * w2.sum(0)[:, None])
    torch.testing.assert_close(got["2.weight"], w2 * w1.sum(1)[None, :])
    assert got["0.weight"].dtype == torch.float64
    # include_bias (the Synaptic-Flow code): hidden = |W1|1 + |b1|, so only W2's scores change.
    b1 = model[0].bias.detach().abs()
    with_bias = score(
        "synflow", model, Mask.ones(model), ScoringContext(input_shape=(4,), options={"include_bias": True})
    )
    torch.testing.assert_close(with_bias["0.weight"], got["0.weight"])
    torch.testing.assert_close(with_bias["2.weight"], w2 * (w1.sum(1) + b1)[None, :])
    # The input shape may come from a batch instead.
    from_batch = score("synflow", model, Mask.ones(model), ScoringContext(batches=batches_for(4, 2)))
    torch.testing.assert_close(from_batch["0.weight"], got["0.weight"])
    with pytest.raises(ValueError, match="input_shape"):
        score("synflow", model, Mask.ones(model), ScoringContext())


def test_synflow_batchnorm_is_its_eval_scale_without_shift():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))
    bn = model[1]
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, -2.0, 1.5]))
        bn.bias.copy_(torch.tensor([3.0, -1.0, 0.2]))
        bn.running_mean.copy_(torch.tensor([1.0, -5.0, 2.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
    w1, w2 = (w.detach().abs().double() for w in weight_list(model))
    scale = bn.weight.detach().double().abs() / torch.sqrt(bn.running_var.double() + bn.eps)
    got = score("synflow", model, Mask.ones(model), ScoringContext(input_shape=(4,)))
    torch.testing.assert_close(got["0.weight"], w1 * (w2.sum(0) * scale)[:, None])
    torch.testing.assert_close(got["3.weight"], w2 * (scale * w1.sum(1))[None, :])
    # include_bias (the Synaptic-Flow code): every parameter and buffer made absolute, shifts included.
    hidden = F.relu(scale * (w1.sum(1) - bn.running_mean.double().abs()) + bn.bias.detach().double().abs())
    code = score("synflow", model, Mask.ones(model), ScoringContext(input_shape=(4,), options={"include_bias": True}))
    torch.testing.assert_close(code["3.weight"], w2 * hidden[None, :])
    torch.testing.assert_close(code["0.weight"], w1 * (w2.sum(0) * scale * (hidden > 0))[:, None])
    assert bool((hidden == 0).any()) and bool((hidden > 0).any())  # the |running_mean| shift kills a unit here


def test_stacked_hand_computed():
    model, data = two_layer(), batches_for(4, 2)
    mask = Mask.ones(model)
    init = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    ctx = ScoringContext(batches=data, initial=init, input_shape=(4,), seed=5)
    # Signed variant, data-aware B: the copy's weights are sign(w)·|S_A|; sign(w)·|w| = w, so
    # magnitude-then-SNIP is SNIP.
    signed = score("stacked_signed(magnitude,snip)", model, mask, ctx)
    torch.testing.assert_close(signed, score("snip", model, mask, ctx))
    # ... and with random scores the copy's weights are sign(w)·u.
    rand = score("random", model, mask, ctx)
    probe = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in prunable_parameters(probe).items():
            p.copy_(torch.sign(p) * rand[n])
    torch.testing.assert_close(score("stacked_signed(random,snip)", model, mask, ctx), score("snip", probe, mask, ctx))
    # 000's algorithm 1: B sees A's scores as they are, so magnitude-then-SNIP is SNIP of the network with |w|.
    with torch.no_grad():
        for n, p in prunable_parameters(probe).items():
            p.copy_(prunable_parameters(model)[n].abs())
    torch.testing.assert_close(score("stacked(magnitude,snip)", model, mask, ctx), score("snip", probe, mask, ctx))
    # Data-free B sees A's scores as they are in both: large_final_same_sign after magnitude = sign(w_0)·|w|.
    for name in ["stacked(magnitude,large_final_same_sign)", "stacked_signed(magnitude,large_final_same_sign)"]:
        got = score(name, model, mask, ctx)
        for n, p in prunable_parameters(model).items():
            torch.testing.assert_close(got[n], torch.sign(init[n]) * p.detach().abs())
    # Nesting: SynFlow on weights = the inner stack's SNIP scores, which are normalised (÷ Σ): the closed form
    # with |W| replaced by S / Σ S, S the SNIP scores of the |w| network.
    s = score("snip", probe, mask, ctx)
    total = sum(v.sum() for v in s.values())
    s = {n: v / total for n, v in s.items()}
    nested = score("stacked(stacked(magnitude,snip),synflow)", model, mask, ctx)
    torch.testing.assert_close(nested["0.weight"], s["0.weight"] * s["2.weight"].sum(0)[:, None])
    torch.testing.assert_close(nested["2.weight"], s["2.weight"] * s["0.weight"].sum(1)[None, :])


def algorithm_1(a: str, b: str, model: nn.Module, mask: Mask, ctx: ScoringContext) -> dict[str, torch.Tensor]:
    """000 §3.3.2, algorithm 1, step by step: S_a <- a(θ_0); the weights temporarily replaced by S_a, normalised
    as 000's code base does (SNIP ÷ Σ S, GraSP ÷ |Σ S|); S_b <- b(S_a); the weights reset."""
    s_a = score(a, model, mask, ctx)
    total = sum(float(v.detach().sum()) for v in s_a.values())
    if a == "snip":
        s_a = {n: v / total for n, v in s_a.items()}
    elif a.startswith("grasp"):
        s_a = {n: v / abs(total) for n, v in s_a.items()}
    saved = {n: p.detach().clone() for n, p in prunable_parameters(model).items()}
    with torch.no_grad():
        for n, p in prunable_parameters(model).items():
            p.copy_(s_a[n])
    s_b = score(b, model, mask, ctx)
    with torch.no_grad():
        for n, p in prunable_parameters(model).items():
            p.copy_(saved[n])
    return s_b


def test_stacked_is_algorithm_1_of_000():
    model, data = mlp_16_12_12_10(), batches_for(16, 10, n=3, size=8)
    g = torch.Generator().manual_seed(13)
    mask = Mask({n: torch.rand(p.shape, generator=g) < 0.5 for n, p in prunable_parameters(model).items()})
    ctx = ScoringContext(batches=data, input_shape=(16,))
    differs = 0
    for a in ["magnitude", "snip", "grasp", "grasp_abs", "synflow"]:
        for b in ["snip", "grasp", "synflow", "magnitude"]:
            expected = select(algorithm_1(a, b, model, mask, ctx), 0.2, previous=mask, seed=1)
            got = select(score(f"stacked({a},{b})", model, mask, ctx), 0.2, previous=mask, seed=1)
            assert got == expected, (a, b)
            differs += got != select(score(f"stacked_signed({a},{b})", model, mask, ctx), 0.2, previous=mask, seed=1)
    assert differs >= 4  # the signed variant is another algorithm
    # Magnitude then SynFlow is SynFlow: SynFlow sees |θ| anyway.
    stacked = score("stacked(magnitude,synflow)", model, mask, ctx)
    torch.testing.assert_close(stacked, score("synflow", model, mask, ctx), rtol=0, atol=0)


def test_stacked_refuses_scores_that_overflow_the_weights():
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(8, 8) for _ in range(4)])
    with torch.no_grad():
        for w in weight_list(model):
            w.mul_(1e15)  # SynFlow scores ~1e60: fine in float64, not as float32 weights
    ctx = ScoringContext(batches=[(torch.randn(2, 8), torch.tensor([0, 1]))])
    with pytest.raises(ValueError, match="overflow"):
        score("stacked(synflow,snip)", model, Mask.ones(model), ctx)


# ---- contract, parametrized over every criterion ---------------------------------------------------


def small_bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, bias=False), nn.BatchNorm2d(4),
        nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3),
    )  # fmt: skip


def context_for(model: nn.Module, input_shape, classes: int, batch: int = 4, n: int = 2) -> ScoringContext:
    g = torch.Generator().manual_seed(7)
    batches = [
        (torch.randn(batch, *input_shape, generator=g), torch.randint(0, classes, (batch,), generator=g))
        for _ in range(n)
    ]
    initial = {k: v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
               for k, v in model.state_dict().items()}  # fmt: skip
    return ScoringContext(batches=batches, input_shape=tuple(input_shape), initial=initial, seed=1)


def half_mask(model: nn.Module) -> Mask:
    g = torch.Generator().manual_seed(3)
    return Mask({n: torch.rand(p.shape, generator=g) < 0.5 for n, p in prunable_parameters(model).items()})


def snapshot(model: nn.Module):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        [m.training for m in model.modules()],
    )


def assert_same_snapshot(a, b):
    assert a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
    assert a[1].keys() == b[1].keys()
    assert all((a[1][k] is None and b[1][k] is None) or torch.equal(a[1][k], b[1][k]) for k in a[1])
    assert a[2] == b[2]


@pytest.mark.parametrize("name", ALL)
def test_contract(name):
    model = small_bn_net().train()
    model[4].eval()  # a mixed mode must come back as it was
    ctx, mask = context_for(model, (1, 8, 8), 3), half_mask(model)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e3  # stale gradients must neither count nor change
    before = snapshot(model)
    got = score(name, model, mask, ctx)
    assert_same_snapshot(before, snapshot(model))
    assert list(got) == list(mask)
    for k, s in got.items():
        assert s.shape == mask[k].shape and s.is_floating_point() and s.device == mask[k].device
        assert torch.isfinite(s).all()
    # Deterministic, and stale gradients made no difference.
    for p in model.parameters():
        p.grad = None
    again = score(name, model, mask, ctx)
    assert all(torch.equal(got[k], again[k]) for k in got)
    # The masked network is what is scored: zeroing the pruned weights first changes nothing.
    masked = mask.apply(copy.deepcopy(model))
    torch.testing.assert_close(score(name, masked, mask, ctx), got)


@pytest.mark.parametrize("name", ["snip", "grasp", "grasp_abs"])
def test_data_aware_criteria_need_batches_and_train_mode_keeps_running_stats(name):
    model = small_bn_net().eval()
    ctx = context_for(model, (1, 8, 8), 3)
    with pytest.raises(ValueError, match="batches"):
        score(name, model, Mask.ones(model), ScoringContext())
    before = snapshot(model)
    train = score(name, model, Mask.ones(model), ScoringContext(batches=ctx.batches, options={"train_mode": True}))
    assert_same_snapshot(before, snapshot(model))
    evaluated = score(name, model, Mask.ones(model), ctx)
    assert not all(torch.allclose(train[k], evaluated[k]) for k in train)  # batch statistics were used


def test_pruned_weights_do_not_carry_signal():
    """Scoring never re-enables a pruned weight: SNIP/GraSP/SynFlow give it exactly 0."""
    model = small_bn_net()
    ctx, mask = context_for(model, (1, 8, 8), 3), half_mask(model)
    for name in ["snip", "grasp", "grasp_abs", "synflow", "magnitude"]:
        got = score(name, model, mask, ctx)
        assert all((got[k][~mask[k]] == 0).all() for k in got), name


FAMILIES = ["lenet300", "lenet5", "conv2", "vgg11", "resnet20", "wrn16_4"]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_criterion_on_every_zoo_family(family):
    model = initialize(build_model(family, input_shape=(1, 28, 28), num_classes=10), seed=0)
    ctx, mask = context_for(model, (1, 28, 28), 10, batch=2, n=1), half_mask(model)
    before = snapshot(model)
    for name in ALL:
        got = score(name, model, mask, ctx)
        assert list(got) == list(mask), name
        assert all(torch.isfinite(s).all() and s.shape == mask[k].shape for k, s in got.items()), name
        if name != "random":
            assert all(bool((s[mask[k]] != 0).any()) for k, s in got.items()), f"{name}: a layer scored all zero"
    assert_same_snapshot(before, snapshot(model))


# ---- SynFlow at scale and against layer collapse ---------------------------------------------------


def test_synflow_does_not_overflow_on_wrn28_10():
    model = initialize(build_model("wrn28_10", input_shape=(3, 32, 32)), seed=0)
    start = time.perf_counter()
    got = score("synflow", model, Mask.ones(model), ScoringContext(input_shape=(3, 32, 32)))
    print(f"synflow on wrn28_10: {time.perf_counter() - start:.1f} s")
    assert all(torch.isfinite(s).all() and bool((s > 0).any()) for s in got.values())


def test_multishot_synflow_keeps_lenet300_connected_where_single_shot_snip_collapses():
    model = initialize(build_model("lenet300", input_shape=(1, 28, 28)), seed=0)
    target, rounds = 0.001, 100
    ctx = ScoringContext(input_shape=(1, 28, 28))
    mask = Mask.ones(model)
    for r in range(1, rounds + 1):
        mask = select(score("synflow", model, mask, ctx), target ** (r / rounds), "global", previous=mask)
    synflow_report = layer_collapse(model, mask, (1, 28, 28))

    g = torch.Generator().manual_seed(0)  # random data: 10 batches x 100 samples (classes·10), as the spec's default
    batches = [(torch.rand(100, 1, 28, 28, generator=g), torch.randint(0, 10, (100,), generator=g)) for _ in range(10)]
    snip_mask = select(score("snip", model, Mask.ones(model), ScoringContext(batches=batches)), target, "global")
    snip_report = layer_collapse(model, snip_mask, (1, 28, 28))
    print(f"synflow x{rounds}: {mask.layer_densities()} {synflow_report}")
    print(f"snip x1: {snip_mask.layer_densities()} {snip_report}")

    assert mask.kept() == round(target * mask.total())
    assert not synflow_report.collapsed
    assert snip_report.collapsed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ALL)
def test_cuda_matches_cpu(name):
    model = small_bn_net()
    ctx, mask = context_for(model, (1, 8, 8), 3), half_mask(model)
    on_cpu = score(name, model, mask, ctx)
    cuda = torch.device("cuda")
    ctx_cuda = ScoringContext(
        batches=[(x.to(cuda), y.to(cuda)) for x, y in ctx.batches], input_shape=ctx.input_shape,
        initial={k: v.to(cuda) for k, v in ctx.initial.items()}, seed=ctx.seed,
    )  # fmt: skip
    on_gpu = score(name, copy.deepcopy(model).to(cuda), mask.to(cuda), ctx_cuda)
    assert all(s.device.type == "cuda" for s in on_gpu.values())
    for k, s in on_cpu.items():  # cuDNN convolutions may run in TF32: compare at 1e-3 of the layer's scale
        torch.testing.assert_close(on_gpu[k].cpu(), s, rtol=1e-2, atol=1e-3 * float(s.abs().max()) + 1e-12)


# ---- no per-weight Python loops ------------------------------------------------------------------


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def _work(name: str, width: int) -> tuple[int, int]:
    """(tensor ops dispatched, lines of ticketlab code run) while scoring a masked conv+MLP of ``width``."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, width, 3),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(width * 6 * 6, width),
        nn.ReLU(),
        nn.Linear(width, 3),
    )
    ctx, mask = context_for(model, (1, 8, 8), 3), half_mask(model)
    package = str(Path(ticketlab.__file__).parent)
    lines = 0

    def tracer(frame, event, arg):
        nonlocal lines
        if not frame.f_code.co_filename.startswith(package):
            return None
        if event == "line":
            lines += 1
        return tracer

    counter = _CountOps()
    previous = sys.gettrace()  # e.g. a coverage tool's, put back afterwards
    sys.settrace(tracer)
    try:
        with counter:
            score(name, model, mask, ctx)
    finally:
        sys.settrace(previous)
    return counter.ops, lines


@pytest.mark.parametrize("name", ALL)
def test_scoring_work_does_not_grow_with_the_number_of_weights(name):
    """No criterion loops over weights in Python. About 15x the weights (same layers) must run
    the same ticketlab lines and dispatch the same tensor operations; a loop over weights, units or channels
    would add work in proportion."""
    small, large = _work(name, 2), _work(name, 8)
    assert large == small, f"{name}: (ops, lines) {small} at width 2, {large} at width 8"
