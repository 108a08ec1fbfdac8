"""Named recipes (ticketlab.config.recipes): each equals the figures its document states, a spec names one
in a word and hashes as if it wrote the fields out, and sweeps can give each model its own."""

import re

import pytest
from pydantic import ValidationError

from ticketlab.config.duration import Duration
from ticketlab.config.recipe import Recipe
from ticketlab.config.recipes import RECIPES, SOURCES, named_recipe
from ticketlab.config.spec import ExperimentSpec, load_spec
from ticketlab.sweep import SweepSpec, grid_points, instantiate, set_base

# Written from the documents, not from the registry. 002 §3.4: "We train ResNet architectures for 72 000
# iterations starting with learning rate 0.1. We decrease the learning rate tenfold after 36 000 and 54 000
# iterations [...] VGG [...] 80 000 iterations starting with learning rate 0.1, then decaying it five-fold
# three times at iterations 32 000, 48 000 and 64 000. [...] WRN [...] 80 000 steps starting with learning
# rate 0.2 [...] five-fold three times at 32 000, 48 000 and 64 000"; "L2 [...] WRN 0.0002, other models
# 0.0001"; "batches of size of 128". 000 table C.1: lr 0.1, lr_drops [], weight_decay 0.0, optimizer sgd,
# train_batch_size 64, train_epochs 100. 004 §3.3: 20.000 iterations, Adam, learning rate 0.0012, batch 60,
# validation loss every 100 iterations. Frankle & Carbin fig. 2 (003): Adam 1.2e-3, 50K iterations / batch 60.
DOCUMENT = {
    "cifar_resnet": dict(
        steps="72000it",
        lr=0.1,
        lr_schedule="multistep",
        milestones=("36000it", "54000it"),
        gamma=0.1,
        l2=0.0001,
        weight_decay=0.0,
        batch_size=128,
        optimizer="sgd",
    ),
    "cifar_vgg": dict(
        steps="80000it",
        lr=0.1,
        lr_schedule="multistep",
        milestones=("32000it", "48000it", "64000it"),
        gamma=0.2,
        l2=0.0001,
        weight_decay=0.0,
        batch_size=128,
        optimizer="sgd",
    ),
    "cifar_wrn": dict(
        steps="80000it",
        lr=0.2,
        lr_schedule="multistep",
        milestones=("32000it", "48000it", "64000it"),
        gamma=0.2,
        l2=0.0002,
        weight_decay=0.0,
        batch_size=128,
        optimizer="sgd",
    ),
    "lenet_synflow": dict(
        steps="100ep",
        lr=0.1,
        lr_schedule="constant",
        weight_decay=0.0,
        l2=0.0,
        momentum=0.0,
        batch_size=64,
        optimizer="sgd",
    ),
    "mlp_supermask": dict(
        steps="20000it",
        lr=0.0012,
        batch_size=60,
        optimizer="adam",
        eval_every="100it",
        lr_schedule="constant",
        weight_decay=0.0,
        l2=0.0,
    ),
    "lenet_lth": dict(
        steps="50000it", lr=0.0012, batch_size=60, optimizer="adam", lr_schedule="constant", weight_decay=0.0, l2=0.0
    ),
}
WRN_FIELDS = dict(DOCUMENT["cifar_wrn"], momentum=0.9, eval_every="2000it")  # + the two values 002 leaves open


def _value(field: str, value):
    if field in ("steps", "eval_every"):
        return Duration.parse(value)
    if field == "milestones":
        return tuple(Duration.parse(v) for v in value)
    return value


def test_every_named_recipe_has_a_row_in_the_document_table_and_a_cited_source():
    assert set(RECIPES.names()) == set(DOCUMENT) == set(SOURCES)
    for name, source in SOURCES.items():
        assert re.search(r"\b00[0-4] (§|appendix)|Frankle & Carbin", source), name


@pytest.mark.parametrize("name", sorted(DOCUMENT))
def test_named_recipe_equals_the_documents_figures(name):
    recipe = RECIPES.get(name)
    for field, value in DOCUMENT[name].items():
        assert getattr(recipe, field) == _value(field, value), f"{name}.{field}"


@pytest.mark.parametrize(
    ("name", "before", "after"),
    # the LR just before and after each milestone: /10 for ResNet ("finishing with 0.001"), /5 for VGG, WRN
    [
        ("cifar_resnet", [0.1, 0.01, 0.001], [35999, 36000, 54000]),
        ("cifar_vgg", [0.1, 0.02, 0.004, 0.0008], [31999, 32000, 48000, 64000]),
        ("cifar_wrn", [0.2, 0.04, 0.008, 0.0016], [31999, 32000, 48000, 64000]),
    ],
)
def test_cifar_schedules_decay_as_002_states(name, before, after):
    recipe = RECIPES.get(name)
    assert [recipe.lr_at(step, 390) for step in after] == pytest.approx(before)
    assert recipe.lr_at(recipe.total_steps(390) - 1, 390) == pytest.approx(before[-1])


def test_spec_naming_a_recipe_validates_and_hashes_as_the_spec_writing_it_out(tmp_path):
    named = ExperimentSpec(model="wrn16_8", dataset="cifar10", recipe="cifar_wrn")
    explicit = ExperimentSpec(model="wrn16_8", dataset="cifar10", recipe=WRN_FIELDS)
    assert named == explicit and named.recipe == RECIPES.get("cifar_wrn")
    # the id of the explicit spec as computed before named recipes existed (commit 0b087fb)
    assert named.run_id() == explicit.run_id() == "be79b2d1f2c1"
    path = tmp_path / "wrn.yaml"
    path.write_text("model: wrn16_8\ndataset: cifar10\nrecipe: cifar_wrn\n")
    assert load_spec(path).run_id() == "be79b2d1f2c1"
    assert "name" not in named.non_default()["recipe"]  # the name is not hashed: the fields are


def test_specs_without_names_keep_their_run_ids():
    # computed at commit 0b087fb, before named recipes existed
    assert ExperimentSpec().run_id() == "44136fa355b3"
    spec = ExperimentSpec(
        recipe=dict(steps="50000it", batch_size=60, optimizer="adam", lr=0.0012, eval_every="1000it"),
        method=dict(name="lottery", K=0.8, scope="layerwise"),
        densities=[0.018],
        controls=["reinit"],
    )
    assert spec.run_id() == "34f8ab31c84a"
    assert spec.model_copy(update={"recipe": named_recipe("lenet_lth")}).run_id() == "34f8ab31c84a"


def test_fields_beside_the_name_override_it():
    spec = ExperimentSpec(recipe={"name": "cifar_wrn", "steps": "2ep", "milestones": ["1ep"]})
    assert str(spec.recipe.steps) == "2ep" and [str(m) for m in spec.recipe.milestones] == ["1ep"]
    assert spec.recipe.lr == 0.2 and spec.recipe.l2 == 0.0002 and spec.recipe.gamma == 0.2
    assert spec.run_id() == ExperimentSpec(recipe=dict(WRN_FIELDS, steps="2ep", milestones=["1ep"])).run_id()
    assert named_recipe("cifar_wrn", steps="2ep") == Recipe(**dict(WRN_FIELDS, steps="2ep"))
    with pytest.raises(ValidationError, match=r"recipe\.lr\n.*greater than 0"):
        ExperimentSpec(recipe={"name": "cifar_wrn", "lr": -1})
    with pytest.raises(ValidationError, match=r"recipe\.stepz\n.*Extra inputs"):
        ExperimentSpec(recipe={"name": "cifar_wrn", "stepz": "2ep"})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("cifar_wrm", r"unknown recipe 'cifar_wrm'\. Did you mean 'cifar_wrn'"),
        ({"name": "resnet", "steps": "2ep"}, r"unknown recipe 'resnet'"),
        ({"name": 3}, r"a recipe name is a string"),
        ("cifar_wrn:2ep", r"recipe names take no ':argument'"),
    ],
)
def test_a_bad_recipe_name_is_one_error_naming_the_allowed_ones(value, message):
    with pytest.raises(ValidationError) as info:
        ExperimentSpec(recipe=value)
    assert len(info.value.errors()) == 1 and info.value.errors()[0]["loc"] == ("recipe",)
    text = info.value.errors()[0]["msg"]
    assert re.search(message, text)
    if "unknown" in message or "string" in message:
        assert "cifar_resnet, cifar_vgg, cifar_wrn, lenet_lth, lenet_synflow, mlp_supermask" in text


# -- sweeps: a named recipe per model, --set on a named recipe ----------------------------------------
CIFAR = {
    "model": "{net.model}",
    "dataset": "cifar10",
    "recipe": "{net.recipe}",
    "bn_momentum": "{bn.momentum}",
    "bn_eps": "{bn.eps}",
}
NETS = [{"model": "resnet20", "recipe": "cifar_resnet"}, {"model": "wrn16_8", "recipe": "cifar_wrn"}]
BNS = [{"momentum": 0.01, "eps": 0.001}, {"momentum": 0.003, "eps": 1e-5}]


def test_a_mapping_valued_grid_axis_couples_fields():
    points = grid_points(SweepSpec(base=CIFAR, grid={"net": NETS, "bn": BNS}))
    got = {(s.model, s.recipe.lr, s.recipe.l2, s.bn_momentum, s.bn_eps) for _, s in points}
    # 2 x 2 points, each model with its own recipe, each momentum with its own epsilon
    assert got == {
        (m, lr, l2, mom, eps)
        for m, lr, l2 in (("resnet20", 0.1, 1e-4), ("wrn16_8", 0.2, 2e-4))
        for mom, eps in ((0.01, 0.001), (0.003, 1e-5))
    }


def test_set_overrides_fields_of_a_named_recipe_in_a_sweep():
    sweep = set_base(
        SweepSpec(base=CIFAR, grid={"net": NETS, "bn": BNS[:1]}), ["recipe.steps=2ep", "recipe.milestones=[1ep]"]
    )
    for _, spec in grid_points(sweep):
        assert str(spec.recipe.steps) == "2ep" and [str(m) for m in spec.recipe.milestones] == ["1ep"]
        assert spec.recipe.lr == (0.1 if spec.model == "resnet20" else 0.2)
    plain = set_base(SweepSpec(base={"recipe": "lenet_lth"}, grid={"seed": [0]}), ["recipe.steps=1ep"])
    assert plain.base["recipe"] == {"name": "lenet_lth", "steps": "1ep"}


def test_a_missing_key_of_a_mapping_value_names_the_grid_point():
    with pytest.raises(ValueError, match=r"grid point \(net=.*\): \{net\.recipe\}: .* has no key 'recipe'"):
        instantiate(CIFAR, {"net": {"model": "resnet20"}, "bn": BNS[0]})
