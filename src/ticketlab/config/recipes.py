"""Named training recipes: the source documents' stated hyperparameters, one registered Recipe each.

A spec names one with ``recipe: cifar_wrn``, or names one and overrides some of its fields with
``recipe: {name: cifar_wrn, steps: 2ep}``. The name is expanded to the full Recipe before validation, so
a spec that names a recipe has the same run id as the spec that writes its fields out, and specs that
name none keep theirs (the run id hashes fields that differ from their defaults, never the name).

Every entry cites where its figures are stated (``SOURCES``); what a document leaves unstated is our
choice and marked "ours". Coefficients are given as the document gives them: 002 §3.4 states L2
coefficients (``l2``: ``l2·||w||²`` added to the loss), which equal weight decay ``2·l2``; "decrease
five-fold" is ``gamma = 0.2``, "tenfold" ``gamma = 0.1``. BatchNorm momentum and epsilon are spec fields,
not recipe fields: 002 §3.4 uses TensorFlow's (0.997, 1e-5) for ResNets and (0.99, 1e-3) for VGG and
WRN, i.e. ``bn_momentum`` 0.003 / 0.01 in PyTorch's convention (1 - TensorFlow's momentum).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ticketlab.config.recipe import Recipe
from ticketlab.registry import Registry, split_name

RECIPES: Registry[Recipe] = Registry("recipe")
SOURCES: dict[str, str] = {}  # recipe name -> where its figures are stated


def _add(name: str, source: str, recipe: Recipe) -> None:
    RECIPES.register(name)(recipe)
    SOURCES[name] = source


# -- 002 §3.4 (CIFAR-10, batch 128, L2 on every model, piecewise-constant LR) -------------------------
# SGD momentum is not stated in 002; 0.9 is He et al. 2016a's and Zagoruyko & Komodakis's, which §3.4
# says it follows. eval_every is ours (a few dozen evaluations per run).
_add(
    "cifar_resnet",
    "002 §3.4: ResNets, 72k steps, LR 0.1, /10 at 36k and 54k, L2 1e-4, batch 128",
    Recipe(
        steps="72000it",
        batch_size=128,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        l2=1e-4,
        lr_schedule="multistep",
        milestones=("36000it", "54000it"),
        gamma=0.1,
        eval_every="2000it",
    ),
)
_add(
    "cifar_vgg",
    "002 §3.4: VGG, 80k steps, LR 0.1, /5 at 32k, 48k and 64k, L2 1e-4, batch 128",
    Recipe(
        steps="80000it",
        batch_size=128,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        l2=1e-4,
        lr_schedule="multistep",
        milestones=("32000it", "48000it", "64000it"),
        gamma=0.2,
        eval_every="2000it",
    ),
)
_add(
    "cifar_wrn",
    "002 §3.4: WRN, 80k steps, LR 0.2, /5 at 32k, 48k and 64k, L2 2e-4, batch 128",
    Recipe(
        steps="80000it",
        batch_size=128,
        optimizer="sgd",
        lr=0.2,
        momentum=0.9,
        l2=2e-4,
        lr_schedule="multistep",
        milestones=("32000it", "48000it", "64000it"),
        gamma=0.2,
        eval_every="2000it",
    ),
)

# -- LeNet-300-100 and small MLPs on MNIST -------------------------------------------------------------
# Frankle & Carbin 2019 figure 2 (the LTH paper 003 presents; the text of 003 does not carry the
# figure's numbers): Adam 1.2e-3, 50k iterations of batch 60. 004 §3.3 states the same Adam 0.0012 ("as
# in" Zhou et al.) and batch 60. eval_every is ours.
_add(
    "lenet_lth",
    "Frankle & Carbin 2019 fig. 2 (presented in 003); 004 §3.3: Adam 1.2e-3, batch 60, 50k steps",
    Recipe(steps="50000it", batch_size=60, optimizer="adam", lr=1.2e-3, eval_every="1000it"),
)
# 000 appendix C, table C.1 (settings of the Synaptic-Flow code that 000 builds on, appendix A.1):
# optimizer "sgd" (plain SGD: that code's "momentum" optimizer is the one with momentum), lr 0.1, no LR
# drops, weight decay 0, train batch 64, 100 epochs. ISS trains "until an early stopping criterion is met"
# (000 §5.1.1; OpenLTH's rule, appendix A.2): the spec's end_on_best, not a recipe field.
_add(
    "lenet_synflow",
    "000 appendix C (table C.1): SGD, LR 0.1 constant, weight decay 0, batch 64, 100 epochs",
    Recipe(steps="100ep", batch_size=64, optimizer="sgd", lr=0.1, eval_every="1ep"),
)
# 004 §3.3: the dense 784-200-30-10 network is trained 20,000 iterations with Adam 0.0012, batch 60,
# validation loss every 100 iterations (to find the early-stopping iteration, ~5000).
_add(
    "mlp_supermask",
    "004 §3.3: Adam 0.0012, batch 60, 20k iterations, validation every 100 iterations",
    Recipe(steps="20000it", batch_size=60, optimizer="adam", lr=1.2e-3, eval_every="100it"),
)


def named_recipe(name: object, **overrides: Any) -> Recipe:
    """The registered recipe ``name``, with ``overrides`` (Recipe fields) replacing its values."""
    return Recipe.model_validate(expand_recipe({"name": name, **overrides}))


def expand_recipe(value: Any) -> Any:
    """A spec's ``recipe`` value with a recipe name expanded, still to be validated as a Recipe:
    ``"cifar_wrn"`` -> the registered Recipe; ``{"name": "cifar_wrn", "steps": "2ep"}`` -> its fields with
    ``steps`` replaced; anything else unchanged. An unknown name is a ValueError listing the known ones."""
    if isinstance(value, str):
        return _lookup(value)
    if isinstance(value, Mapping) and "name" in value:
        base = _lookup(value["name"])
        overrides = {k: v for k, v in value.items() if k != "name"}
        return {**base.model_dump(), **overrides} if overrides else base
    return value


def _lookup(name: object) -> Recipe:
    if not isinstance(name, str):
        raise ValueError(f"a recipe name is a string, one of: {', '.join(RECIPES.names())}; got {name!r}")
    if split_name(name)[1] is not None:
        raise ValueError(
            f"recipe {name!r}: recipe names take no ':argument'; override fields instead, "
            "e.g. {name: cifar_wrn, steps: 2ep}"
        )
    return RECIPES.get(name)
