"""The reproduction suites (benchmarks/reproduce): every suite expands to valid specs at full and reduced
budget, run.sh runs each of them, and docs/results puts each suite's settings beside its document's."""

import re
import shlex
from pathlib import Path

import pytest

from ticketlab.config.recipes import RECIPES
from ticketlab.sweep import grid_points, load_sweep, set_base

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "benchmarks" / "reproduce"
RESULTS = ROOT / "docs" / "results" / "README.md"
NAMES = sorted(p.stem for p in SUITES.glob("*.yaml"))
# what the Hyperparameters table of every suite compares (the fidelity issue's list)
ROWS = [
    "optimizer",
    "learning rate",
    "batch size",
    "training length",
    "LR schedule",
    "momentum",
    "weight decay / L2",
    "early stopping",
    "seeds",
]


def reduced_settings() -> dict[str, list[str]]:
    """suite -> its --set assignments under run.sh --reduced."""
    text = (SUITES / "run.sh").read_text()
    out = {}
    for name, sets in re.findall(r'^\s*"([0-9]{3}_\w+)\|([^|]*)\|[^"]*"\s*$', text, re.M):
        words = shlex.split(sets)
        assert words[::2] == ["--set"] * (len(words) // 2), sets
        out[name] = words[1::2]
    return out


def test_run_sh_runs_every_suite_once():
    assert sorted(reduced_settings()) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_suite_expands_at_full_and_reduced_budget(name):
    sweep = load_sweep(SUITES / f"{name}.yaml")
    full = grid_points(sweep)
    reduced = grid_points(set_base(sweep, reduced_settings()[name]))
    assert len(full) == len(reduced) > 0
    for (_, big), (_, small) in zip(full, reduced):
        assert small.recipe.optimizer == big.recipe.optimizer and small.recipe.lr == big.recipe.lr
        assert small.recipe.batch_size == big.recipe.batch_size and small.seed == big.seed


def test_cifar_suite_gives_each_family_its_002_recipe_and_pairs_the_batchnorm_settings():
    family = {"resnet20": "cifar_resnet", "vgg19": "cifar_vgg", "wrn16_8": "cifar_wrn"}
    specs = [s for _, s in grid_points(load_sweep(SUITES / "002_cifar_bn.yaml"))]
    assert {s.model for s in specs} == set(family)
    for spec in specs:
        assert spec.recipe == RECIPES.get(family[spec.model])
        assert (spec.bn_momentum, spec.bn_eps) in {(0.01, 1e-3), (0.003, 1e-5)}  # 002 fig. 3.12, in conjunction
        assert spec.val_size == 0 and spec.method.K == 0.7  # 002 §3.4: all 50,000 images; 30% pruning steps


@pytest.mark.parametrize(
    ("name", "weights"), [("004_supermask", "init"), ("004_supermask_signed_constant", "signed_constant")]
)
def test_supermask_suites_train_from_a_random_init(name, weights):
    for _, spec in grid_points(load_sweep(SUITES / f"{name}.yaml")):
        assert spec.init == "kaiming_normal" and spec.model == "mlp:784-200-30-10"  # 004 §3.2
        assert spec.method.options["eval_weights"] == weights


def test_docs_put_every_suites_hyperparameters_beside_the_documents():
    text = RESULTS.read_text().split("## Hyperparameters", 1)[1].split("\n## ", 1)[0]
    tables = dict(re.findall(r"^### `(\w+)`\n(.*?)(?=^### |\Z)", text, re.M | re.S))
    assert sorted(tables) == NAMES
    for name, table in tables.items():
        rows = [
            [c.strip() for c in line.strip().strip("|").split("|")]
            for line in table.splitlines()
            if line.startswith("|")
        ]
        assert rows[0][0] == "setting" and set(rows[1][0]) == {"-"}, name
        settings = {row[0]: row for row in rows[2:]}
        assert all(len(row) == 4 for row in settings.values()), name
        for wanted in ROWS:
            assert wanted in settings, f"{name}: no '{wanted}' row"
        for setting, document, ours, why in settings.values():
            assert document and ours, f"{name}: {setting}"
            # a setting that differs from what the document states says why
            same = ours.startswith("same") and "reduced" not in ours
            if not same and "not stated" not in document:
                assert why, f"{name}: '{setting}' differs from the document without a reason"
