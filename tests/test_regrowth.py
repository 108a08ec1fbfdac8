"""Double-pruning and scored-pruning (001 §5; the precise rules are ours, see methods/regrowth): pruned
weights come back, density stays exact, and with ``regrow: 0`` both are the plain lottery schedule bit for
bit."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from ticketlab.config.recipe import Recipe
from ticketlab.config.spec import ExperimentSpec, MethodSpec
from ticketlab.experiment.run import run_experiment
from ticketlab.files import load_tensors
from ticketlab.masks import Mask, select
from ticketlab.methods import check_method, options_of
from ticketlab.methods.regrowth.double import COMPLEMENT, double_pruning_scores, regrow_select
from ticketlab.methods.regrowth.scored import EVENTS, PRUNED_MASK, ScoredRegrowth
from ticketlab.models import build_model, initialize
from ticketlab.seeding import epoch_order
from ticketlab.store import RunDir
from ticketlab.training.loop import MaskUpdate, _switch_mask, train

MODEL = "mlp:784-32-16-10"
RECIPE = Recipe(steps="20it", batch_size=50, lr=0.05, momentum=0.9, eval_every="20it")
DENSITY = 0.64  # two levels at K = 0.8


def spec(name: str, **options) -> ExperimentSpec:
    return ExperimentSpec(
        model=MODEL,
        dataset="synthetic",
        val_size=200,
        recipe=RECIPE,
        densities=(DENSITY,),
        method=MethodSpec(name=name, options=options),
        save_scores=True,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run directory per method spec, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("runs")
    cache: dict[str, RunDir] = {}

    def get(name: str, **options) -> RunDir:
        s = spec(name, **options)
        if s.run_id() not in cache:
            cache[s.run_id()] = RunDir(run_experiment(s, root, device="cpu").path)
        return cache[s.run_id()]

    return get


def w0():
    return initialize(build_model(MODEL), "kaiming_normal", seed=0).state_dict()


# -- regrow: 0 is the plain schedule -------------------------------------------------------------------
@pytest.mark.parametrize("method", ["double_pruning", "scored_pruning"])
def test_regrow_zero_is_lottery_bit_for_bit(runs, method):
    plain, other = runs("lottery"), runs(method, regrow=0.0)
    for level in (0, 1, 2):
        a, b = plain.level(level), other.level(level)
        assert a.mask() == b.mask()
        for which in ("start", "final", "rewind"):
            wa, wb = a.weights(which), b.weights(which)
            assert wa.keys() == wb.keys()
            assert all(torch.equal(wa[k], wb[k]) for k in wa), (level, which)
        assert a.metrics()["test_acc"] == b.metrics()["test_acc"]
    assert not (other.path / "level_01" / COMPLEMENT).exists()  # regrow 0 trains no complement


# -- double-pruning ------------------------------------------------------------------------------------
def test_regrow_select_by_hand():
    # 10 weights, 5 kept; keep 4 with at most floor(0.5 * 4) = 2 from the pruned ones.
    mask = Mask({"w": torch.tensor([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=torch.bool)})
    scores = {"w": torch.tensor([5.0, 4.0, 0.1, 0.2, 3.0, 9.0, 8.0, 7.0, 0.0, 0.3])}
    got = regrow_select(scores, mask, 0.4, 0.5, "global", seed=0)
    assert sorted(got["w"].nonzero().flatten().tolist()) == [0, 1, 5, 6]
    # the cap binds: with regrow 0.25 only one (the best, 9.0) returns
    got = regrow_select(scores, mask, 0.4, 0.25, "global", seed=0)
    assert sorted(got["w"].nonzero().flatten().tolist()) == [0, 1, 4, 5]
    # regrow 0 is select() on the kept weights
    assert regrow_select(scores, mask, 0.4, 0.0, "global", seed=0) == select(scores, 0.4, previous=mask, seed=0)
    # layerwise: the cap is per layer
    two = Mask({"a": mask["w"], "b": mask["w"]})
    got = regrow_select({"a": scores["w"], "b": scores["w"]}, two, 0.4, 0.25, "layerwise", seed=0)
    assert all(sorted(got[n].nonzero().flatten().tolist()) == [0, 1, 4, 5] for n in ("a", "b"))


def test_double_pruning_scores_take_ticket_or_complement():
    mask = Mask({"w": torch.tensor([True, False, True, False])})
    trained = {"w": torch.tensor([-2.0, 0.0, 0.5, 0.0])}
    complement = {"w": torch.tensor([0.0, -3.0, 0.0, 0.25])}
    assert torch.equal(double_pruning_scores(trained, complement, mask)["w"], torch.tensor([2.0, 3.0, 0.5, 0.25]))


def test_double_pruning_brings_pruned_weights_back_within_the_cap(runs):
    regrow = 0.2
    rd = runs("double_pruning", regrow=regrow)
    init = w0()
    masks = [rd.level(level).mask() for level in (0, 1, 2)]
    total = masks[0].total()
    for level in (1, 2):
        assert masks[level].kept() == round(0.8**level * total)  # density exact
    back = {n: masks[2][n] & ~masks[1][n] for n in masks[2]}
    returned = sum(int(b.sum()) for b in back.values())
    assert returned > 0  # some weight pruned at level 1 is kept at level 2
    assert returned <= math.floor(regrow * masks[2].kept())
    # the complement of level 1 trained exactly the weights the ticket pruned, from the same rewind point
    comp = rd.level(1, COMPLEMENT)
    assert comp.mask() == Mask({n: ~m for n, m in masks[1].items()})
    assert comp.metrics()["start_step"] == rd.level(1).metrics()["start_step"]
    for name, keep in comp.mask().items():
        assert torch.equal(comp.weights("start")[name][keep], init[name][keep])
    # returning weights start from their rewound value (lottery: the initialisation)
    start = rd.level(2).weights("start")
    for name, b in back.items():
        assert torch.equal(start[name][b], init[name][b])
    # the next mask is the top of the saved scores: every returned weight outscores every pruned one left out
    scores = load_tensors(rd.level(2).path / "scores.safetensors")[0]
    back_scores = torch.cat([scores[n][back[n]] for n in scores])
    left_out = torch.cat([scores[n][~masks[1][n] & ~masks[2][n]] for n in scores])
    assert back_scores.min() >= left_out.max()


# -- scored-pruning ------------------------------------------------------------------------------------
def test_scored_accumulator_matches_explicit_autograd(synthetic):
    """Two SGD steps by hand: s_i = sum over steps of -dL/dw_eff_i * w0_i on the pruned weights only."""
    model = initialize(build_model("mlp:784-16-10"), "kaiming_normal", seed=3)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    names = ["layers.0.weight", "layers.1.weight"]
    g = torch.Generator().manual_seed(0)
    mask = select({n: torch.rand(start[n].shape, generator=g) for n in names}, 0.5)
    recipe = Recipe(steps="2it", batch_size=50, lr=0.1, eval_every=None)
    hooks = ScoredRegrowth(mask, start, regrow=0.1, every=0, start=0, end=2)
    train(model, synthetic, recipe, mask=mask, seed=0, hooks=hooks, device="cpu")

    params = {k: v.clone() for k, v in start.items()}
    for n in names:
        params[n] = params[n] * mask[n]
    expected = {n: torch.zeros(start[n].shape, dtype=torch.float64) for n in names}
    order = epoch_order(len(synthetic.x_train), 0, 0)
    for step in range(2):
        idx = order[step * 50 : (step + 1) * 50]
        leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        loss = F.cross_entropy(functional_call(model, leaves, (synthetic.x_train[idx],)), synthetic.y_train[idx])
        grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
        for n in names:
            expected[n] += torch.where(~mask[n], -(grads[n].double() * start[n].double()), 0.0)
        params = {k: (v - 0.1 * grads[k] * (mask.get(k, 1))).detach() for k, v in params.items()}
    for n in names:
        assert torch.allclose(hooks.s[n], expected[n], rtol=1e-5, atol=1e-9)
        assert (hooks.s[n][mask[n]] == 0).all()
        assert (expected[n] != 0).any()


def test_scored_regrowth_swaps_best_pruned_for_smallest_kept():
    mask = Mask({"w": torch.tensor([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=torch.bool)})
    reference = {"w": torch.arange(1.0, 16.0)}
    hooks = ScoredRegrowth(mask, reference, regrow=0.2, every=5, start=0, end=100)
    hooks.s["w"] = torch.tensor([0] * 10 + [0.5, -1.0, 3.0, 2.0, 0.1], dtype=torch.float64)
    weights = torch.tensor([0.9, -0.05, 0.3, 0.02, -0.7, 0.6, 0.5, 0.4, -0.8, 1.0, 0, 0, 0, 0, 0])
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(weights)
    assert hooks.update_mask(4, model) is None  # not an event step
    update = hooks.update_mask(5, model)
    kept = update.mask["w"].nonzero().flatten().tolist()
    # floor(0.2 * 10) = 2 move: pruned 12 (s=3) and 13 (s=2) in; kept 3 (|w|=0.02) and 1 (0.05) out
    assert sorted(kept) == [0, 2, 4, 5, 6, 7, 8, 9, 12, 13]
    assert torch.equal(update.values["w"], reference["w"])
    assert hooks.s["w"][12] == 0 and hooks.s["w"][13] == 0 and hooks.s["w"][10] == 0.5
    assert hooks.events == [{"step": 5, "moved": 2}]
    # positive_only: with a single positive score left only that one returns
    hooks.s["w"] = torch.tensor([0] * 10 + [0.5, -1.0, 0, 0, -0.1], dtype=torch.float64)
    hooks.s["w"][torch.tensor(kept)] = 0
    update = hooks.update_mask(10, model)
    assert update.mask["w"].sum() == 10 and bool(update.mask["w"][10])
    assert hooks.update_mask(100, model) is None  # never on the last step


def test_scored_pruning_options_say_how_many_move():
    """The regrow option's description (what a user reads) states the rule test_scored_regrowth_swaps_... checks."""
    from ticketlab.methods.regrowth.scored import ScoredPruningOptions

    text = ScoredPruningOptions.model_fields["regrow"].description
    for words in ["floor(regrow * k)", "kept (active) weights", "as in RigL", "s > 0", "smallest |w|"]:
        assert words in text, words
    assert ScoredPruningOptions.model_fields["regrow_every"].description
    assert ScoredPruningOptions.model_fields["positive_only"].description


def test_train_hooks_switch_mask_mid_run(synthetic):
    """A mask change mid-run: revived weights take the given values, newly pruned ones are zero."""
    model = initialize(build_model("mlp:784-16-10"), "kaiming_normal", seed=1)
    name = "layers.0.weight"
    dense = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters() if n.endswith("weight")}
    revive, drop = torch.zeros_like(dense[name]), torch.zeros_like(dense[name])
    revive[0, :10], drop[1, :7] = True, True
    first, second = Mask({**dense, name: ~revive}), Mask({**dense, name: ~drop})
    values = {n: torch.full_like(p, 0.125) for n, p in model.named_parameters()}
    seen = {}

    class Hooks:
        def after_backward(self, step, grads):
            seen[step] = grads[name].clone()

        def update_mask(self, done, model):
            return MaskUpdate(second, values) if done == 3 else None

    recipe = Recipe(steps="3it", batch_size=50, lr=0.1, momentum=0.9, eval_every=None)
    train(model, synthetic, recipe, mask=first, hooks=Hooks(), device="cpu")
    w = dict(model.named_parameters())[name].detach()
    assert (w[0, :10] == 0.125).all() and (w[1, :7] == 0).all()
    assert set(seen) == {0, 1, 2}
    assert (seen[0][0, :10] != 0).any()  # pruned weights' gradients are seen before masking
    with pytest.raises(ValueError, match="mask"):
        train(model, synthetic, recipe, hooks=Hooks(), device="cpu")


def test_switch_mask_clears_optimiser_state_of_pruned_weights():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0, 0.0]))
    optimizer = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.tensor([1.0, 1.0, 1.0, 0.0])
    optimizer.step()
    current = [torch.tensor([1.0, 1.0, 1.0, 0.0])]
    update = MaskUpdate({"p": torch.tensor([True, False, True, True])}, {"p": torch.tensor([9.0, 9.0, 9.0, 7.0])})
    _switch_mask(update, ["p"], [p], current, optimizer)
    assert p.tolist() == pytest.approx([0.9, 0.0, 2.9, 7.0])
    assert optimizer.state[p]["momentum_buffer"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert current[0].tolist() == [1.0, 0.0, 1.0, 1.0]


def test_scored_pruning_regrows_mid_training_at_exact_density(runs):
    regrow = 0.1
    rd = runs("scored_pruning", regrow=regrow, regrow_every="5it")
    total = rd.level(0).mask().total()
    init = w0()
    for level in (1, 2):
        d = rd.level(level)
        pruned, final = Mask.load(d.path / PRUNED_MASK), d.mask()
        k = round(0.8**level * total)
        assert pruned.kept() == final.kept() == k  # density exact after every regrowth
        events = json.loads((d.path / EVENTS).read_text())
        assert [e["step"] for e in events] == [5, 10, 15]
        assert all(0 < e["moved"] <= math.floor(regrow * k) for e in events)
        back = {n: final[n] & ~pruned[n] for n in final}
        assert sum(int(b.sum()) for b in back.values()) > 0  # pruned weights came back during training
        weights = d.weights("final")
        for name, keep in final.items():
            assert (weights[name][~keep] == 0).all()
        assert d.metrics()["kept"] == k
    # level 2 prunes from level 1's final mask: returned weights start from their rewound value w_0
    start, mask1 = rd.level(2).weights("start"), rd.level(1).mask()
    pruned1 = Mask.load(rd.level(1).path / PRUNED_MASK)
    for name, _keep in rd.level(2).mask().items():
        came_back = Mask.load(rd.level(2).path / PRUNED_MASK)[name] & mask1[name] & ~pruned1[name]
        assert torch.equal(start[name][came_back], init[name][came_back])


def test_options_are_validated():
    with pytest.raises(ValueError, match="regrow"):
        check_method(MethodSpec(name="double_pruning", options={"regrow": 1.5}))
    with pytest.raises(ValueError, match="base"):
        check_method(MethodSpec(name="scored_pruning", options={"base": "oneshot"}))
    with pytest.raises(ValueError, match="regrow_evry"):
        check_method(MethodSpec(name="scored_pruning", options={"regrow_evry": "1ep"}))
    assert (
        options_of(MethodSpec(name="scored_pruning", options={"regrow_every": "100it"})).regrow_every.steps(10) == 100
    )


def test_double_pruning_rejects_other_criteria(tmp_path):
    s = ExperimentSpec(
        model=MODEL,
        dataset="synthetic",
        val_size=200,
        recipe=RECIPE,
        densities=(0.8,),
        method=MethodSpec(name="double_pruning", criterion="snip"),
    )
    with pytest.raises(ValueError, match="magnitude"):
        run_experiment(s, tmp_path, device="cpu")


@pytest.mark.parametrize("method", ["double_pruning", "scored_pruning"])
def test_rerun_reads_levels_back(runs, method, monkeypatch):
    import ticketlab.methods.context as job_module
    import ticketlab.methods.regrowth.scored as scored_module

    options = {"regrow": 0.2} if method == "double_pruning" else {"regrow": 0.1, "regrow_every": "5it"}
    rd = runs(method, **options)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished level was trained again")

    monkeypatch.setattr(job_module, "train", no_training)
    monkeypatch.setattr(scored_module, "train", no_training)
    result = run_experiment(spec(method, **options), rd.path.parent, device="cpu")
    assert [r["level"] for r in result.rows if not r["control"]] == [0, 1, 2]
    for row in result.rows:
        assert row["test_acc"] == rd.level(row["level"], row["control"] or None).metrics()["test_acc"]


def test_scored_pruning_rejects_a_regrow_every_that_never_fires(tmp_path):
    # synthetic: 40 steps per epoch at batch 50, so the default regrow_every of 1ep never falls inside 20 steps
    s = spec("scored_pruning", regrow=0.1)
    with pytest.raises(ValueError, match=r"regrow_every \(40 steps\) must be shorter than the retraining \(20 steps\)"):
        run_experiment(s, tmp_path, device="cpu")
