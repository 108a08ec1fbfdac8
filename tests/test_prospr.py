"""ProsPr: the meta-gradient against central finite differences of L(θ_M) in c, written out by hand on a tiny
MLP in float64; the first-order form; settings; masks; the zoo."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.criteria import ScoringContext, parse, score
from ticketlab.masks import Mask, select
from ticketlab.models import build_model, initialize


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()


def batches(n: int = 3):
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randint(0, 2, (5,), generator=g)) for _ in range(n)
    ]


def loss_after_steps(model, c1, c2, data, steps, lr, momentum=0.0, new_data=False, keep1=None):
    """L(θ_M) written out: θ_0 = (W1 ⊙ c1, b1, W2 ⊙ c2, b2), M plain SGD steps on every parameter (W1's
    update multiplied by ``keep1``: a fixed mask holds pruned weights at 0)."""
    w1, b1, w2, b2 = (p.detach() for p in model.parameters())
    hold = [torch.ones_like(w1) if keep1 is None else keep1, 1.0, 1.0, 1.0]

    def loss(theta, k):
        x, y = data[k % len(data)] if new_data else data[0]
        return F.cross_entropy(F.linear(torch.tanh(F.linear(x, theta[0], theta[1])), theta[2], theta[3]), y)

    theta = [w1 * c1, b1.clone(), w2 * c2, b2.clone()]
    velocity = None
    with torch.enable_grad():
        for k in range(steps):
            leaves = [t.detach().requires_grad_(True) for t in theta]
            grads = torch.autograd.grad(loss(leaves, k), leaves)
            velocity = list(grads) if velocity is None else [momentum * v + g for v, g in zip(velocity, grads)]
            theta = [t - lr * v * m for t, v, m in zip(theta, velocity, hold)]
    return loss(theta, steps)


@pytest.mark.parametrize(
    "name,steps,lr,momentum,new_data",
    [("prospr", 3, 0.1, 0.0, False), ("prospr:steps=2:lr=0.5:momentum=0.9:new_data", 2, 0.5, 0.9, True)],
)
def test_meta_gradient_equals_finite_differences(name, steps, lr, momentum, new_data):
    model, data = tiny(), batches()
    got = score(name, model, Mask.ones(model), ScoringContext(batches=data))
    c1, c2 = torch.ones(3, 4, dtype=torch.float64), torch.ones(2, 3, dtype=torch.float64)
    h = 1e-6
    for key, c in (("0.weight", c1), ("2.weight", c2)):
        expected = torch.zeros_like(c)
        for idx in range(c.numel()):  # one entry of c at a time
            c.view(-1)[idx] = 1 + h
            up = loss_after_steps(model, c1, c2, data, steps, lr, momentum, new_data).item()
            c.view(-1)[idx] = 1 - h
            down = loss_after_steps(model, c1, c2, data, steps, lr, momentum, new_data).item()
            c.view(-1)[idx] = 1.0
            expected.view(-1)[idx] = abs(up - down) / (2 * h)
        torch.testing.assert_close(got[key], expected, rtol=1e-5, atol=1e-9)
    # the steps matter: more than SNIP's one-batch |w ⊙ g|
    snip_like = score("prospr:steps=0", model, Mask.ones(model), ScoringContext(batches=data))
    assert not torch.allclose(got["0.weight"], snip_like["0.weight"])


def test_first_order_and_zero_steps():
    model, data = tiny(), batches()
    steps, lr = 3, 0.1
    w1, b1, w2, b2 = (p.detach() for p in model.parameters())
    theta = [w1.clone(), b1.clone(), w2.clone(), b2.clone()]
    x, y = data[0]
    for _ in range(steps + 1):
        leaves = [t.requires_grad_(True) for t in (t.detach() for t in theta)]
        loss = F.cross_entropy(F.linear(torch.tanh(F.linear(x, leaves[0], leaves[1])), leaves[2], leaves[3]), y)
        grads = torch.autograd.grad(loss, leaves)
        last, theta = grads, [t.detach() - lr * g for t, g in zip(leaves, grads)]
    got = score("prospr:first_order", model, Mask.ones(model), ScoringContext(batches=data))
    torch.testing.assert_close(got["0.weight"], (w1 * last[0]).abs())
    torch.testing.assert_close(got["2.weight"], (w2 * last[2]).abs())
    # no inner step: SNIP on the first batch (no BatchNorm here, so train and eval mode agree)
    zero = score("prospr:steps=0", model, Mask.ones(model), ScoringContext(batches=data))
    torch.testing.assert_close(zero, score("snip", model, Mask.ones(model), ScoringContext(batches=data[:1])))


def test_pruned_weights_stay_pruned_in_the_inner_steps_and_score_zero():
    model, data = tiny(), batches()
    mask = Mask({"0.weight": torch.rand(3, 4, generator=torch.Generator().manual_seed(0)) < 0.5,
                 "2.weight": torch.ones(2, 3, dtype=torch.bool)})  # fmt: skip
    got = score("prospr", model, mask, ScoringContext(batches=data))
    assert bool((got["0.weight"][~mask["0.weight"]] == 0).all())
    # the masked network's meta-gradient: c = mask in the hand-written L(θ_M) with the pruned entries held at 0
    c1 = mask["0.weight"].double()

    def loss_of(c):
        return loss_after_steps(model, c * c1, torch.ones(2, 3, dtype=torch.float64), data, 3, 0.1, keep1=c1)

    c = torch.ones(3, 4, dtype=torch.float64)
    for idx in torch.nonzero(mask["0.weight"].flatten()).flatten().tolist():
        c.view(-1)[idx] = 1 + 1e-6
        up = loss_of(c).item()
        c.view(-1)[idx] = 1 - 1e-6
        down = loss_of(c).item()
        c.view(-1)[idx] = 1.0
        assert got["0.weight"].view(-1)[idx].item() == pytest.approx(abs(up - down) / 2e-6, rel=1e-5, abs=1e-9)


def test_settings_are_checked_when_the_name_is_parsed():
    assert parse("prospr:steps=5:first_order") == "prospr:steps=5:first_order"
    assert parse("stacked(prospr:first_order, synflow)")[:2] == ("prospr:first_order", "synflow")
    for bad in ["prospr:stepz=3", "prospr:steps=x", "prospr:lr=-1", "prospr:first_order=maybe", "prospr:steps"]:
        with pytest.raises(ValueError, match="prospr"):
            parse(bad)
    with pytest.raises(ValueError, match="batches"):
        score("prospr", tiny(), Mask.ones(tiny()), ScoringContext())


@pytest.mark.parametrize("family", ["lenet5", "conv2", "resnet20"])
def test_zoo_exact_density(family):
    model = initialize(build_model(family, input_shape=(1, 28, 28), num_classes=10), seed=0)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 1, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g))]
    scores = score("prospr", model, Mask.ones(model), ScoringContext(batches=data))
    mask = select(scores, 0.05)
    assert mask.kept() == round(0.05 * mask.total())
    assert all(bool((s > 0).any()) for s in scores.values())
