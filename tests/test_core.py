import math
import operator

import pytest

from ticketlab.config.duration import Duration
from ticketlab.config.recipe import Recipe
from ticketlab.registry import Registry, UnknownNameError, split_name


def test_registry_register_get_and_did_you_mean():
    reg: Registry[int] = Registry("widget")
    reg.register("alpha")(1)
    reg.register("beta")(2)
    assert reg.get("alpha") == 1 and reg.get("BETA:arg") == 2
    assert reg.names() == ["alpha", "beta"] and "alpha:x" in reg
    with pytest.raises(UnknownNameError, match=r"unknown widget 'alph'\. Did you mean 'alpha'\? Allowed: alpha, beta"):
        reg.get("alph")
    with pytest.raises(ValueError, match="twice"):
        reg.register("alpha")(3)


def test_split_name():
    assert split_name("mlp:784-10") == ("mlp", "784-10")
    assert split_name("Snip") == ("snip", None)


@pytest.mark.parametrize(("text", "spe", "steps"), [("40ep", 100, 4000), ("1500it", 7, 1500), ("0.5ep", 10, 5)])
def test_duration(text, spe, steps):
    assert Duration.parse(text).steps(spe) == steps


@pytest.mark.parametrize("bad", ["40", 40, "ep", "1.5it", "3 epochs", "-1ep"])
def test_bad_duration(bad):
    with pytest.raises(ValueError, match="'ep'.*'it'|whole number"):
        Duration.parse(bad)


def test_durations_have_no_order_only_their_step_counts_do():
    two_epochs, hundred_steps = Duration.parse("2ep"), Duration.parse("100it")
    for compare in (operator.lt, operator.le, operator.gt, operator.ge):
        with pytest.raises(TypeError):
            compare(two_epochs, hundred_steps)  # fields in order would say 2 < 100 whatever an epoch is
    with pytest.raises(TypeError):
        sorted([hundred_steps, two_epochs])
    assert two_epochs != Duration.parse("2it") and two_epochs == Duration.parse("2.0ep")
    assert two_epochs.steps(30) < hundred_steps.steps(30) and two_epochs.steps(60) > hundred_steps.steps(60)


def test_recipe_schedules():
    r = Recipe(steps="10it", lr=1.0, lr_schedule="multistep", milestones=["4it", "8it"], gamma=0.5)
    assert [r.lr_at(s, 1) for s in range(10)] == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25]
    c = Recipe(steps="10it", lr=2.0, lr_schedule="cosine", warmup="2it")
    assert c.lr_at(0, 1) == 1.0 and c.lr_at(1, 1) == 2.0
    assert c.lr_at(2, 1) == pytest.approx(2.0)
    assert c.lr_at(6, 1) == pytest.approx(1.0)
    assert c.lr_at(9, 1) == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert Recipe(steps="2ep").total_steps(50) == 100


def test_recipe_validation_names_field():
    with pytest.raises(ValueError, match="optimizer"):
        Recipe(optimizer="rmsprop")
    with pytest.raises(ValueError, match="nesterov"):
        Recipe(nesterov=True)
    with pytest.raises(ValueError, match="extra|not permitted|unexpected"):
        Recipe(learning_rate=0.1)
    assert Recipe(steps="3ep").model_dump(mode="json")["steps"] == "3ep"


def test_lr_past_the_end_keeps_the_final_rate():
    c = Recipe(steps="10it", lr=1.0, lr_schedule="cosine")
    assert c.lr_at(25, 1) == c.lr_at(9, 1) > 0


def test_resolve_device_names_the_allowed_values():
    import torch

    from ticketlab.hardware.device import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match=r"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
