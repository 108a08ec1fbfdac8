"""Scores as Weights (000 §3.4, §5.4) and the bimodal control initialisation."""

import pytest
import torch

from ticketlab.config.recipe import Recipe
from ticketlab.config.spec import ExperimentSpec, MethodSpec
from ticketlab.criteria import ScoringContext, score
from ticketlab.criteria.saw import saw_initialize, scores_as_weights
from ticketlab.data.batches import pruning_batches
from ticketlab.experiment import check_spec
from ticketlab.experiment.run import initial_weights, run_experiment
from ticketlab.masks import Mask, prunable_parameters
from ticketlab.models import build_model, initialize
from ticketlab.models.init import kaiming_std
from ticketlab.store import RunDir

MODEL = "mlp:784-32-16-10"
RECIPE = Recipe(steps="20it", batch_size=50, lr=0.05, momentum=0.9, eval_every="20it")


def test_scores_as_weights_by_hand():
    w = {"a": torch.tensor([0.3, -0.2, 0.0, -1.0]), "b": torch.tensor([[-1.0, 2.0]])}
    s = {"a": torch.tensor([2.0, 4.0, 1.0, 0.5]), "b": torch.tensor([[-3.0, 1.5]])}  # b signed, like GraSP
    out = scores_as_weights(w, s)
    assert out["a"].tolist() == [0.5, -1.0, 0.25, -0.125]
    assert out["b"].tolist() == [[-1.0, 0.5]]
    with pytest.raises(ValueError, match="all zero"):
        scores_as_weights({"a": w["a"]}, {"a": torch.zeros(4)})
    # SynFlow-sized scores scale without overflow
    huge = scores_as_weights({"a": w["a"]}, {"a": torch.tensor([1e300, 2e300, 1.0, 0.0], dtype=torch.float64)})
    assert huge["a"].tolist() == [0.5, -1.0, 0.0, -0.0] and huge["a"].dtype == torch.float32


@pytest.mark.parametrize("criterion", ["snip", "synflow", "stacked(magnitude,synflow)"])
def test_saw_signs_scale_and_order(synthetic, criterion):
    base = initialize(build_model(MODEL), "kaiming_normal", seed=2)
    model = saw_initialize(build_model(MODEL), criterion, synthetic, seed=2)
    # independently: the criterion's scores on the Kaiming model, with the same pruning batches
    ctx = ScoringContext(
        batches=pruning_batches(synthetic, 10, 10, 2), input_shape=(1, 28, 28), initial=base.state_dict(), seed=2
    )
    scores = score(criterion, base, Mask.ones(base), ctx)
    before, after = prunable_parameters(base), prunable_parameters(model)
    for name, w in after.items():
        w, w0, s = w.detach(), before[name].detach(), scores[name].detach().double().abs()
        assert torch.equal(w >= 0, w0 >= 0)  # the original signs
        assert w.abs().max() == 1.0  # per-layer scale to [-1, 1]
        assert torch.allclose(w.abs().double(), s / s.max(), rtol=1e-6, atol=0)
        # ordering of |w| is the ordering of the scores
        order = torch.argsort(s.flatten(), stable=True)
        assert (w.abs().flatten()[order].diff() >= 0).all()
    for (n, p), (_, q) in zip(base.named_parameters(), model.named_parameters()):
        if n not in after:  # biases keep the base initialisation
            assert torch.equal(p, q)


def test_saw_init_is_validated_and_normalised():
    assert ExperimentSpec(init="saw:SNIP").init == "saw:snip"
    assert ExperimentSpec(init="saw:stacked(Magnitude, synflow)").init == "saw:stacked(magnitude,synflow)"
    with pytest.raises(ValueError, match="snp"):
        check_spec(ExperimentSpec(init="saw:snp"))
    with pytest.raises(ValueError, match="saw:<criterion>"):
        ExperimentSpec(init="saw")
    with pytest.raises(ValueError, match="controls"):
        ExperimentSpec(init="saw:snip", controls=("reinit",))
    assert ExperimentSpec(init="bimodal").init == "bimodal"


def test_shared_init_store_keeps_saw_apart(tmp_path, synthetic):
    def state(**fields):
        s = ExperimentSpec(model=MODEL, dataset="synthetic", val_size=200, **fields)
        return initial_weights(build_model(MODEL), s, (1, 28, 28), 10, tmp_path, data=synthetic)

    kaiming, saw = state(), state(init="saw:snip")
    assert len(list((tmp_path / "inits").iterdir())) == 2
    assert not torch.equal(kaiming["layers.0.weight"], saw["layers.0.weight"])
    assert torch.equal(state(init="saw:snip")["layers.0.weight"], saw["layers.0.weight"])  # read back
    fewer = state(init="saw:snip", method=MethodSpec(pruning_batches=2))  # other pruning batches: other scores
    assert len(list((tmp_path / "inits").iterdir())) == 3
    assert not torch.equal(fewer["layers.0.weight"], saw["layers.0.weight"])
    with pytest.raises(ValueError, match="data"):
        initial_weights(build_model(MODEL), ExperimentSpec(init="saw:snip"), (1, 28, 28), 10, tmp_path / "x")


@pytest.mark.parametrize("method", ["synflow", "stacked(magnitude,synflow)"])
def test_methods_run_on_saw_snip(tmp_path, method, synthetic):
    """000 fig 5.13: "SynFlow on SNIP" and "stacked(Mag, SynFlow) on SNIP (UMS)"."""
    s = ExperimentSpec(
        model=MODEL,
        dataset="synthetic",
        val_size=200,
        recipe=RECIPE,
        init="saw:snip",
        densities=(0.05,),
        method=MethodSpec(name=method, rounds=10),
    )
    result = run_experiment(s, tmp_path, device="cpu")
    rd = RunDir(result.path)
    saw = prunable_parameters(saw_initialize(build_model(MODEL), "snip", synthetic, seed=0))
    mask, start = rd.level(1).mask(), rd.level(1).weights("start")
    assert mask.kept() == round(0.05 * mask.total())
    for name, keep in mask.items():
        assert torch.equal(start[name][keep], saw[name].detach()[keep])
    assert result.rows[-1]["test_acc"] > 0.1


def test_bimodal_keeps_kaiming_signs_with_two_modes():
    k = prunable_parameters(initialize(build_model("lenet300"), "kaiming_normal", seed=5))
    b = prunable_parameters(initialize(build_model("lenet300"), "bimodal", seed=5))
    for name, w in b.items():
        w, std = w.detach(), kaiming_std(w)
        assert torch.equal(w >= 0, k[name].detach() >= 0)
        ratio = w.abs() / std
        assert abs(float(ratio.mean()) - 2.0) < 0.05
        assert float((ratio < 0.5).float().mean()) < 0.01  # almost nothing near zero: two modes at ±2 std
        assert float((k[name].detach().abs() / std < 0.5).float().mean()) > 0.3  # unlike the Kaiming normal
    again = prunable_parameters(initialize(build_model("lenet300"), "bimodal", seed=5))
    assert all(torch.equal(again[n], b[n]) for n in b)
