"""NTK-SAP: |∂J/∂c| against central finite differences of J written out by hand (plain MLP and with
BatchNorm on noise-batch statistics), the draws (Kaiming θ, standard normal Δ and x), weight-agnosticism,
settings and the zoo."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.criteria import ScoringContext, parse, score
from ticketlab.criteria.ntk_sap import DEFAULTS, draw, noise_shapes
from ticketlab.masks import Mask, select
from ticketlab.models import build_model, initialize


def finite_differences(j, cs: dict[str, torch.Tensor], h: float = 1e-6) -> dict[str, torch.Tensor]:
    out = {}
    for name, c in cs.items():
        grad = torch.zeros_like(c)
        for idx in range(c.numel()):  # one entry of c at a time
            orig = c.view(-1)[idx].item()
            c.view(-1)[idx] = orig + h
            up = j(cs).item()
            c.view(-1)[idx] = orig - h
            down = j(cs).item()
            c.view(-1)[idx] = orig
            grad.view(-1)[idx] = (up - down) / (2 * h)
        out[name] = grad
    return out


def test_saliency_equals_finite_differences_of_the_output_change():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    mask = Mask({"0.weight": torch.rand(3, 4) < 0.7, "2.weight": torch.ones(2, 3, dtype=torch.bool)})
    ctx = ScoringContext(input_shape=(4,), seed=5)
    settings = {**DEFAULTS, "batch": 6, "draws": 2, "eps": 0.05}
    got = score("ntk_sap:batch=6:draws=2:eps=0.05", model, mask, ctx)
    draws = [draw(model, mask, ctx, "kaiming_normal", shape, r) for r, shape in enumerate(noise_shapes(ctx, settings))]
    assert len(draws) == 2 and draws[0][3].shape == (6, 4)

    def j(c):
        total = 0.0
        for probe, theta, delta, x in draws:
            b1, b2 = probe[0].bias.detach(), probe[2].bias.detach()
            assert not b1.any() and not b2.any()  # re-initialised: zero biases

            def f(w1, w2, x=x, b1=b1, b2=b2):
                return F.linear(torch.tanh(F.linear(x, w1 * c["0.weight"], b1)), w2 * c["2.weight"], b2)

            moved = f(theta["0.weight"] + 0.05 * delta["0.weight"], theta["2.weight"] + 0.05 * delta["2.weight"])
            total = total + ((f(theta["0.weight"], theta["2.weight"]) - moved) ** 2).sum()
        return total

    cs = {k: v.double() for k, v in mask.items()}
    expected = finite_differences(j, cs)
    for k in mask:
        torch.testing.assert_close(got[k], expected[k].abs() * mask[k], rtol=1e-5, atol=1e-10)
    assert bool((got["0.weight"][~mask["0.weight"]] == 0).all())


def test_batchnorm_uses_the_noise_batch_statistics_of_the_unperturbed_network_as_constants():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.BatchNorm1d(3), nn.Tanh(), nn.Linear(3, 2)).double()
    with torch.no_grad():  # trained-looking BN: none of it may survive the re-initialisation
        model[1].weight.fill_(3.0)
        model[1].running_mean.fill_(5.0)
    model.train()
    mask, ctx = Mask.ones(model), ScoringContext(input_shape=(4,), seed=2)
    got = score("ntk_sap:batch=7", model, mask, ctx)
    assert model.training and model[1].running_mean.eq(5.0).all()
    [(probe, theta, delta, x)] = [draw(model, mask, ctx, "kaiming_normal", (7, 4), 0)]
    assert not probe.training
    h = F.linear(x, theta["0.weight"])
    mean, var = h.mean(0), h.var(0, unbiased=True)  # PyTorch's running_var takes the unbiased variance
    torch.testing.assert_close(probe[1].running_mean, mean)
    torch.testing.assert_close(probe[1].running_var, var)

    def j(c):
        def f(w1, w2):
            z = (F.linear(x, w1 * c["0.weight"]) - mean) / torch.sqrt(var + probe[1].eps)  # γ = 1, β = 0
            return F.linear(torch.tanh(z), w2 * c["3.weight"])

        moved = f(theta["0.weight"] + 0.01 * delta["0.weight"], theta["3.weight"] + 0.01 * delta["3.weight"])
        return ((f(theta["0.weight"], theta["3.weight"]) - moved) ** 2).sum()

    expected = finite_differences(j, {k: v.double() for k, v in mask.items()})
    for k in mask:
        torch.testing.assert_close(got[k], expected[k].abs(), rtol=1e-5, atol=1e-12)


def test_draws_are_kaiming_weights_and_standard_normal_noise_and_ignore_the_models_weights():
    model = initialize(build_model("lenet300", input_shape=(1, 28, 28), num_classes=10), seed=0)
    mask = Mask.ones(model)
    ctx = ScoringContext(input_shape=(1, 28, 28), seed=0)
    _, theta, delta, x = draw(model, mask, ctx, "kaiming_normal", (100, 1, 28, 28), 0)
    w = theta["layers.0.weight"]
    assert abs(float(w.std()) / math.sqrt(2 / 784) - 1) < 0.02
    assert not torch.equal(w, model.layers[0].weight)  # re-drawn, not the model's
    assert abs(float(delta["layers.0.weight"].std()) - 1) < 0.02 and abs(float(x.std()) - 1) < 0.02
    again = draw(model, mask, ctx, "kaiming_normal", (100, 1, 28, 28), 0)
    assert torch.equal(again[1]["layers.0.weight"], w) and torch.equal(again[3], x)
    # weight-agnostic: another initialisation of the same architecture scores the same ...
    other = initialize(build_model("lenet300", input_shape=(1, 28, 28), num_classes=10), seed=9)
    torch.testing.assert_close(score("ntk_sap:batch=10", model, mask, ctx), score("ntk_sap:batch=10", other, mask, ctx))
    # ... and a mask keeping a different number of weights (the next multi-shot round) draws afresh
    half = select(score("magnitude", model, mask, ctx), 0.5)
    assert not torch.equal(draw(model, half, ctx, "kaiming_normal", (2, 1, 28, 28), 0)[1]["layers.0.weight"], w)


def test_noise_batches_follow_the_pruning_batches_when_given_and_settings_are_checked():
    data = [(torch.zeros(3, 1, 8, 8), torch.zeros(3)), (torch.zeros(5, 1, 8, 8), torch.zeros(5))]
    assert noise_shapes(ScoringContext(batches=data), {**DEFAULTS, "draws": 2}) == [(3, 1, 8, 8), (5, 1, 8, 8)] * 2
    assert noise_shapes(ScoringContext(input_shape=(1, 8, 8)), DEFAULTS) == [(100, 1, 8, 8)]
    with pytest.raises(ValueError, match="input_shape"):
        noise_shapes(ScoringContext(), DEFAULTS)
    assert parse("ntk_sap:eps=0.02:init=xavier") == "ntk_sap:eps=0.02:init=xavier"
    for bad in ["ntk_sap:eps=0", "ntk_sap:draws=0", "ntk_sap:init=nope", "ntk_sap:epsilon=1"]:
        with pytest.raises(ValueError):
            parse(bad)


@pytest.mark.parametrize("family", ["lenet5", "conv2", "resnet20"])
def test_zoo_exact_density(family):
    model = initialize(build_model(family, input_shape=(1, 28, 28), num_classes=10), seed=0)
    scores = score("ntk_sap:batch=8", model, Mask.ones(model), ScoringContext(input_shape=(1, 28, 28)))
    mask = select(scores, 0.05)
    assert mask.kept() == round(0.05 * mask.total())
    assert all(bool((s > 0).any()) for s in scores.values())
