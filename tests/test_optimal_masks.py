"""Training Optimal Masks (002 §3.3.1): the straight-through estimator and both clips checked against an
independent computation; the evaluation mask is the exact top-k of the logits; the final phase starts from
the pretrained weights under that mask."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.config.recipe import Recipe
from ticketlab.config.spec import ExperimentSpec, MethodSpec
from ticketlab.experiment import check_spec
from ticketlab.experiment.run import run_experiment
from ticketlab.masks import Mask, select
from ticketlab.methods.tom import (
    LOGITS_FILE,
    PHASE_FILE,
    TomOptions,
    mask_step,
    penalty_grad,
    topk_mask,
    train_logits,
)
from ticketlab.models import build_model, initialize, snapshot
from ticketlab.store import RunDir

MODEL = "mlp:784-32-16-10"
RECIPE = Recipe(steps="60it", batch_size=50, lr=0.05, momentum=0.9, eval_every="30it")


def tiny() -> tuple[nn.Module, dict, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return model, state, x, y


def independent_grad_c(model: nn.Module, state: dict, c: dict, x: torch.Tensor, y: torch.Tensor) -> dict:
    """∂L/∂c the plain way: a copy of the model with weights w ⊙ c, backward, then chain rule
    ∂L/∂c = ∂L/∂(w ⊙ c) ⊙ w."""
    clone = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    clone.load_state_dict({k: v * c[k] if k in c else v for k, v in state.items()})
    F.cross_entropy(clone(x), y).backward()
    params = dict(clone.named_parameters())
    return {k: params[k].grad * state[k] for k in c}


@pytest.mark.parametrize("penalty", ["l1", "l2"])
def test_logit_update_is_clipped_straight_through_gradient_plus_penalty(penalty):
    model, state, x, y = tiny()
    logits = {"0.weight": torch.randn(5, 6), "2.weight": torch.randn(3, 5) * 20}
    logits["2.weight"].clamp_(-15, 15)
    before = {k: v.clone() for k, v in logits.items()}
    options = TomOptions(mask_lr=3.0, grad_clip=0.01, penalty=penalty, penalty_weight=0.05)
    g1 = torch.Generator().manual_seed(5)
    out = mask_step(model, state, logits, x, y, g1, options)
    # the sample is Bernoulli(σ(b)) with the same generator stream
    g2 = torch.Generator().manual_seed(5)
    expected_c = {k: torch.bernoulli(torch.sigmoid(b), generator=g2) for k, b in before.items()}
    for k in expected_c:
        assert torch.equal(out.sample[k], expected_c[k])
    dc = independent_grad_c(model, state, expected_c, x, y)
    clipped_somewhere = False
    for k, b in before.items():
        assert torch.allclose(out.grad[k], dc[k], atol=1e-6)
        clipped_somewhere |= bool((dc[k].abs() > 0.01).any())
        s = torch.sigmoid(b)
        pen = 0.05 * s * (1 - s) * (1 if penalty == "l1" else 2 * s)
        expected = (b - 3.0 * (dc[k].clamp(-0.01, 0.01) + pen)).clamp(-15, 15)
        assert torch.allclose(logits[k], expected, atol=1e-6)
    assert clipped_somewhere  # the test exercises the gradient clip


def test_penalty_grad_matches_autograd():
    b = torch.randn(50, dtype=torch.float64, requires_grad=True)
    for kind, p in (("l1", lambda s: s.sum()), ("l2", lambda s: s.pow(2).sum())):
        (g,) = torch.autograd.grad(0.3 * p(torch.sigmoid(b)), b)
        assert torch.allclose(penalty_grad(b.detach(), kind, 0.3), g)
    with pytest.raises(ValueError, match="penalty"):
        penalty_grad(b.detach(), "l3", 1.0)


def test_logits_never_leave_the_clip_range(synthetic):
    model = initialize(build_model(MODEL), "kaiming_normal", seed=0)
    options = TomOptions(mask_lr=1e4, logit_clip=2.5, logit_init=2.0)  # huge steps: every logit hits a bound
    logits, curve = train_logits(
        model,
        snapshot(model),
        synthetic,
        batch_size=50,
        steps=30,
        options=options,
        seed=0,
        densities=(0.3,),
        scope="global",
        eval_every=10,
    )
    values = torch.cat([b.flatten() for b in logits.values()])
    assert values.min() >= -2.5 and values.max() <= 2.5
    assert (values.abs() == 2.5).float().mean() > 0.5
    assert [r["step"] for r in curve] == [10, 20, 30]


def test_mask_phase_learns_a_mask_better_than_random(synthetic):
    """The mask of learned logits on frozen pretrained weights beats a random mask of the same density."""
    from ticketlab.masks import masked_state
    from ticketlab.training.evaluate import evaluate
    from ticketlab.training.loop import train

    model = initialize(build_model(MODEL), "kaiming_normal", seed=0)
    train(model, synthetic, Recipe(steps="40it", batch_size=50, lr=0.05, momentum=0.9, eval_every=None), seed=0)
    w = snapshot(model)
    logits, _ = train_logits(
        model, w, synthetic, batch_size=50, steps=200, options=TomOptions(), seed=0, densities=(0.1,), scope="global"
    )
    learned = topk_mask(logits, 0.1, "global", 0)
    random = select({k: torch.rand_like(v) for k, v in logits.items()}, 0.1, "global", seed=0)
    accs = []
    for mask in (learned, random):
        model.load_state_dict(masked_state(w, mask))
        accs.append(evaluate(model, synthetic.x_val, synthetic.y_val)["acc"])
    assert accs[0] > accs[1] + 0.1, accs


def test_topk_of_logits_keeps_exactly_round_density_n_even_with_ties():
    logits = {"a": torch.full((7, 9), 15.0), "b": torch.cat([torch.full((20,), 15.0), torch.full((20,), -15.0)])}
    for density in (0.1, 0.37, 0.5):
        mask = topk_mask(logits, density, "global", seed=3)
        assert mask.kept() == round(density * 103)
    layerwise = topk_mask(logits, 0.37, "layerwise", seed=3)
    assert int(layerwise["a"].sum()) == round(0.37 * 63) and int(layerwise["b"].sum()) == round(0.37 * 40)
    assert bool(layerwise["b"][:20].sum() == round(0.37 * 40))  # the larger logits first


def spec(**options) -> ExperimentSpec:
    return ExperimentSpec(
        model=MODEL,
        dataset="synthetic",
        val_size=200,
        recipe=RECIPE,
        densities=(0.2, 0.05),
        method=MethodSpec(name="tom", options={"mask_steps": "40it", **options}),
        controls=("reinit",),
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("tom")
    s = spec()
    result = run_experiment(s, root, device="cpu")
    return s, result, RunDir(result.path), root


def test_final_phase_starts_from_pretrained_weights_under_the_topk_mask(finished):
    _s, result, rd, root = finished
    pretrained = rd.level(0).weights("rewind")
    assert rd.level(0).metrics()["end_step"] == 60
    # the pretrained point is the dense run after 10% of it: retrain 6 steps from init and compare
    from ticketlab.data import load_dataset
    from ticketlab.files import load_tensors
    from ticketlab.training.loop import train

    init = load_tensors(next((root / "inits").glob("*.safetensors")))[0]
    model = build_model(MODEL)
    model.load_state_dict(init)
    train(model, load_dataset("synthetic", val_size=200, seed=0), RECIPE, mask=Mask.ones(model), seed=0, end_step=6)
    for k, v in snapshot(model).items():
        assert torch.allclose(pretrained[k], v)
    logits = load_tensors(rd.path / LOGITS_FILE)[0]
    tickets = [r for r in result.rows if r["control"] == "" and r["level"] > 0]
    assert [t["target_density"] for t in tickets] == [0.2, 0.05]
    for row in tickets:
        d = rd.level(row["level"])
        mask, start, final = d.mask(), d.weights("start"), d.weights("final")
        assert mask == select(logits, row["target_density"], "global", seed=_seed(row["level"]))
        assert mask.kept() == round(row["target_density"] * mask.total())
        for k in start:
            expected = pretrained[k] * mask[k] if k in mask else pretrained[k]
            assert torch.equal(start[k], expected)
        for k, keep in mask.items():
            assert (final[k][~keep] == 0).all()
        assert row["start_step"] == 0 and row["end_step"] == 60  # the full run
        assert rd.level(row["level"], "reinit").done
    phase = json.loads((rd.path / PHASE_FILE).read_text())
    assert phase["pretrain_steps"] == 6 and phase["mask_steps"] == 40
    assert set(phase["curve"][-1]) >= {"step", "mean_sigmoid", "val_acc@0.2", "val_acc@0.05"}


def _seed(level: int) -> int:
    from ticketlab.seeding import seed_for

    return seed_for(0, level)


def test_rerun_skips_mask_phase_and_levels(finished):
    s, result, _rd, root = finished
    messages = []
    again = run_experiment(s, root, device="cpu", log=messages.append)
    assert not any("training masks" in m for m in messages)
    assert [r["test_acc"] for r in again.rows] == [r["test_acc"] for r in result.rows]


def test_options_are_validated_by_name():
    with pytest.raises(ValueError, match="penalty"):
        check_spec(spec(penalty="l0"))
    with pytest.raises(ValueError, match="pretrain"):
        check_spec(spec(pretrain=1.5))
    with pytest.raises(ValueError, match="mask_steps"):
        check_spec(spec(mask_steps="ten"))
