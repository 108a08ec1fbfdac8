"""benchmarks/reproduce/claims.py and the budget suites of issue 23: the figure-5.14 ordering rule and the
SaW rule on small synthetic result tables (checked against an explicit Welch test), the budget table's
"not run yet" rows, and the budget suite files against their parents' recipes."""

import importlib.util
import itertools
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from ticketlab.analysis.stats import tidy
from ticketlab.sweep import grid_points, load_sweep

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks" / "reproduce"
BUDGET = HERE / "budget"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"reproduce_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


claims = load("claims")
budget_page = load("budget_page")

TIERS = {  # tier -> (method, criterion, init, rounds)
    "IMP": ("lottery", "magnitude", "kaiming_normal", 1),
    "stacked/SaW": ("multishot", "stacked(magnitude, synflow)", "saw:snip", 100),
    "SynFlow": ("multishot", "synflow", "kaiming_normal", 100),
    "magnitude": ("oneshot", "magnitude", "kaiming_normal", 1),
    "SNIP": ("multishot", "snip", "kaiming_normal", 100),
    "random": ("oneshot", "random", "kaiming_normal", 1),
}


def rows(tier_values: dict[str, list[float]], density: float = 0.005, **extra) -> list[dict]:
    out = []
    for tier, accs in tier_values.items():
        method, criterion, init, rounds = TIERS[tier]
        for seed, acc in enumerate(accs):
            out.append(
                {"method": method, "criterion": criterion, "init": init, "rounds": rounds, "seed": seed}
                | {"density": density, "target_density": density, "test_acc": acc, "control": "ticket"}
                | extra
            )
    return out


def frame(*groups: list[dict]) -> pd.DataFrame:
    return tidy(pd.DataFrame([r for g in groups for r in g]))


IN_ORDER = {
    "IMP": [0.90, 0.91, 0.92],
    "stacked/SaW": [0.85, 0.86, 0.87],
    "SynFlow": [0.80, 0.81, 0.82],
    "magnitude": [0.60, 0.62, 0.64],
    "SNIP": [0.61, 0.63, 0.63],
    "random": [0.10, 0.11, 0.12],
}


def test_pair_rule_by_hand():
    hi, lo = np.array([3.0, 3.1, 2.9]), np.array([1.0, 1.1, 0.9])
    assert claims.pair_holds(hi, lo, ">") == (True, "holds")
    assert claims.pair_holds(lo, hi, ">") == (False, "reversed")
    noisy = np.array([0.0, 6.0, 3.5])  # higher mean (3.17 > 1.0) but p ~ 0.28
    assert noisy.mean() > lo.mean() and claims.pair_holds(noisy, lo, ">") == (False, "not significant")
    assert claims.pair_holds(hi, hi + 0.01, "≈") == (True, "holds")
    assert claims.pair_holds(hi, lo, "≈") == (False, "different")
    same = np.array(
        [0.25, 0.25, 0.25]
    )  # no variance (exact binary fractions): Welch's test is undefined, so no evidence either way
    assert claims.pair_holds(same, same, "≈") == (True, "holds")
    assert claims.pair_holds(same + 0.5, same, ">") == (False, "not significant")
    quarters = np.array([0.25, 0.5, 0.75])  # exact sums: equal means whatever the order
    assert claims.pair_holds(quarters, quarters[::-1], ">") == (False, "equal means")
    with pytest.raises(ValueError, match="relation"):
        claims.pair_holds(hi, lo, "<")


def test_the_order_agrees_when_every_adjacent_pair_holds_and_reports_welch_p():
    verdict, text = claims.ordering(frame(rows(IN_ORDER)), claims.ORDER, 0.005)
    assert verdict == "agrees" and "5/5 pairs hold" in text, text
    p = sps.ttest_ind(IN_ORDER["IMP"], IN_ORDER["stacked/SaW"], equal_var=False).pvalue
    assert f"(p = {p:.3g})" in text.split(";")[0]
    assert text.endswith("measured order (means): IMP > stacked/SaW > SynFlow > SNIP > magnitude > random")


def test_a_swapped_pair_a_significant_tie_and_a_missing_tier_break_the_order():
    swapped = IN_ORDER | {"SynFlow": IN_ORDER["magnitude"], "magnitude": IN_ORDER["SynFlow"]}
    verdict, text = claims.ordering(frame(rows(swapped)), claims.ORDER, 0.005)
    assert verdict == "disagrees" and "stacked/SaW" in text
    assert re.search(r"SynFlow [^;]* > magnitude [^;]*: reversed", text), text
    apart = IN_ORDER | {"SNIP": [0.70, 0.71, 0.72]}  # magnitude ≈ SNIP no longer: p < 0.05
    verdict, text = claims.ordering(frame(rows(apart)), claims.ORDER, 0.005)
    assert verdict == "disagrees" and re.search(r"magnitude [^;]* ≈ SNIP [^;]*: different", text), text
    verdict, text = claims.ordering(
        frame(rows({k: v for k, v in IN_ORDER.items() if k != "random"})), claims.ORDER, 0.005
    )
    assert verdict == "no data" and "random" in text


def test_the_order_reads_only_the_tiers_set_ups_at_the_density():
    decoys = [
        # IMS (10 rounds) with magnitude, a control of IMP, IMP at another density: none is the IMP tier
        r | {"rounds": 10, "test_acc": 0.10}
        for r in rows({"IMP": [0.1, 0.1, 0.1]})
    ]
    decoys += [r | {"control": "reinit", "test_acc": 0.05} for r in rows({"IMP": [0.1, 0.1, 0.1]})]
    decoys += rows({"IMP": [0.05, 0.06, 0.07]}, density=0.01)
    decoys += [r | {"init": "bimodal"} for r in rows({"stacked/SaW": [0.01, 0.02, 0.03]})]
    verdict, text = claims.ordering(frame(rows(IN_ORDER), decoys), claims.ORDER, 0.005)
    assert verdict == "agrees" and "IMP 91.00 ± 1.00 (n=3)" in text, text


def test_the_reduced_order_reads_two_suites_together():
    imp = frame(rows({k: IN_ORDER[k] for k in ("IMP", "SynFlow", "magnitude", "SNIP", "random")}))
    saw = frame(rows({"stacked/SaW": IN_ORDER["stacked/SaW"]}))
    assert claims.fig514_order({"000_criteria_schedules": imp, "000_stacked_saw": saw})[0] == "agrees"
    assert claims.fig514_order({"000_criteria_schedules": imp})[0] == "no data"


def saw_rows(saw: list[float], bimodal: list[float]) -> pd.DataFrame:
    out = []
    for init, accs in (("saw:snip", saw), ("bimodal", bimodal)):
        for criterion in ("synflow", "stacked(magnitude, synflow)"):
            for seed, acc in enumerate(accs):
                acc = acc if criterion == "synflow" else 0.0  # the rule reads SynFlow's rows only
                out.append(
                    {"method": "multishot", "criterion": criterion, "init": init, "rounds": 100, "seed": seed}
                    | {"density": 0.005, "target_density": 0.005, "test_acc": acc, "control": "ticket"}
                )
    return tidy(pd.DataFrame(out))


def test_saw_rule_compares_synflow_on_saw_with_synflow_on_bimodal():
    verdict, text = claims.saw_vs_bimodal({"s": saw_rows([0.80, 0.82, 0.81], [0.75, 0.74, 0.76])}, "s")
    p = sps.ttest_ind([0.80, 0.82, 0.81], [0.75, 0.74, 0.76], equal_var=False).pvalue
    assert verdict == "agrees" and "on saw:snip 81.00 ± 1.00 (n=3)" in text and f"{p:.3g}" in text
    assert claims.saw_vs_bimodal({"s": saw_rows([0.70, 0.72, 0.71], [0.75, 0.74, 0.76])}, "s")[0] == "disagrees"
    assert claims.saw_vs_bimodal({}, "s")[0] == "no data"


def test_budget_table_says_not_run_yet_and_names_each_command():
    lines = claims.table({}, claims.BUDGET_CLAIMS, budget=True)
    assert lines[0].endswith("command |") and len(lines) == 2 + len(claims.BUDGET_CLAIMS)
    for line, claim in zip(lines[2:], claims.BUDGET_CLAIMS):
        (name,) = claim.suites
        assert (
            f"not run yet (suite {name}; budget: {claim.budget})" in line
            and f"`bash benchmarks/reproduce/budget.sh {name}`" in line
        )
    saw = claims.table(
        {"000_saw_vs_bimodal": saw_rows([0.8, 0.82, 0.81], [0.7, 0.71, 0.72])}, claims.BUDGET_CLAIMS, True
    )
    assert "| agrees |" in next(line for line in saw if "Scores-as-Weights" in line)


def budget_sh_suites() -> list[str]:
    text = (HERE / "budget.sh").read_text()
    return re.findall(r'^\s*"(\d{3}_\w+)\|[^"]*"\s*$', text, re.M)


def test_every_budget_suite_is_run_by_budget_sh_and_read_by_claims():
    files = sorted(p.stem for p in BUDGET.glob("*.yaml"))
    assert sorted(budget_sh_suites()) == files
    assert sorted(name for claim in claims.BUDGET_CLAIMS for name in claim.suites) == files
    for name in files:
        sweep = load_sweep(BUDGET / f"{name}.yaml")
        assert sweep.out == f"runs/reproduce-budget/{name}"
        header = (BUDGET / f"{name}.yaml").read_text().split("\nbase:")[0]
        assert "Budget:" in header and "model-epochs" in header and "Seeds:" in header, name


def specs(path: Path) -> list:
    return [s for _, s in grid_points(load_sweep(path))]


def same_recipe_except(small, big, **changed) -> None:
    a, b = small.recipe.model_dump(), big.recipe.model_dump()
    for key, value in changed.items():
        assert str(a.pop(key)) == value
        b.pop(key)
    assert a == b


@pytest.mark.parametrize(
    ("budget", "parent", "changed", "seeds"),
    [
        ("002_sgimp_vs_lr_rewind", "002_gimp_variants", {}, 5),
        ("002_tom_vs_imp", "002_gimp_variants", {}, 5),
        ("001_regrowth_vs_imp", "001_regrowth", {"steps": "10ep"}, 5),  # the stated cut
        ("000_saw_vs_bimodal", "000_stacked_saw", {}, 3),
        ("000_fig514_order", "000_criteria_schedules", {}, 3),
    ],
)
def test_budget_suites_keep_their_documents_recipe_but_the_stated_cut(budget, parent, changed, seeds):
    mine, theirs = specs(BUDGET / f"{budget}.yaml"), specs(HERE / f"{parent}.yaml")
    for spec in mine:
        same_recipe_except(spec, theirs[0], **changed)
        assert spec.model == theirs[0].model and spec.end_on_best == theirs[0].end_on_best
        assert spec.dataset == "fashion-mnist" and spec.val_size == theirs[0].val_size
    assert sorted({s.seed for s in mine}) == list(range(seeds))
    # shared initialisations: every set-up runs every seed
    setups = {(s.method.name, s.method.criterion, s.init) for s in mine}
    assert len(mine) == len(setups) * seeds


def test_order_suite_runs_exactly_the_tiers_of_the_rule():
    mine = specs(BUDGET / "000_fig514_order.yaml")
    got = {(s.method.name, s.method.criterion or "magnitude", s.init, s.method.rounds or 1) for s in mine}
    assert got == {tuple(f[k] for k in ("method", "criterion", "init", "rounds")) for _, f, _ in claims.ORDER}
    assert {s.densities[-1] for s in mine} == {0.005} and all(
        s.method.K == 0.8 for s in mine if s.method.name == "lottery"
    )


def test_compute_counts_each_training_once_from_its_start_to_where_it_stopped(monkeypatch):
    monkeypatch.setattr(budget_page, "train_size", lambda dataset, val_size: 1000)
    base = {"dataset": "d", "model": "m", "init": "i", "val_size": 0, "recipe.batch_size": 100, "val_loss": 0.5}
    level0 = base | {"level": 0, "seed": 0, "start_step": 0, "end_step": 50, "stopped_step": 30, "train_time": 2.0}
    levels = [
        level0 | {"run_id": "a"},
        level0 | {"run_id": "b"},  # the shared dense level, copied into run b: one training
        base | {"run_id": "a", "level": 1, "seed": 0, "start_step": 10, "end_step": 50, "stopped_step": None},
        base
        | {"run_id": "a", "level": 1, "seed": 0, "start_step": 10, "end_step": 50, "stopped_step": 50}
        | {"control": "complement"},
    ]
    for row, test_acc in zip(levels, itertools.count()):
        row.update(test_acc=float(test_acc), train_time=row.get("train_time", 1.0))
    levels[1]["test_acc"] = levels[0]["test_acc"]
    f = pd.DataFrame(levels)
    assert len(budget_page.trainings(f)) == 3
    # 30 + 40 + 40 steps of batch 100 over 1000 examples
    assert budget_page.model_epochs(f) == pytest.approx((30 + 40 + 40) * 100 / 1000)


def test_the_readme_table_puts_each_disputed_claims_budget_verdict_beside_its_reduced_one():
    saw = {"000_saw_vs_bimodal": saw_rows([0.8, 0.82, 0.81], [0.7, 0.71, 0.72])}
    lines = claims.both({}, saw)
    assert "| reduced budget |" in lines[0] and "| at the documents' budget |" in lines[0]
    assert len(lines) == 2 + len(claims.CLAIMS)
    cells = {row.split(" | ")[1]: row.removesuffix(" |").split(" | ")[2:] for row in lines[2:]}
    for claim in claims.BUDGET_CLAIMS:
        reduced, _, late, _, cmd = cells[claim.text][:5]
        assert reduced == "no data" and cmd == f"`bash benchmarks/reproduce/budget.sh {claim.suites[0]}`"
        if claim.suites == ("000_saw_vs_bimodal",):
            assert late == "agrees"
        else:
            assert late.startswith(f"not run yet (suite {claim.suites[0]}; budget: {claim.budget})")
    assert cells[claims.CLAIMS[0].text][2] == "not rerun (not disputed)"


def test_the_readme_claims_table_has_both_columns_and_every_claim():
    text = (ROOT / "docs" / "results" / "README.md").read_text()
    section = text.split("## The documents' claims against our runs", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    assert lines[0] == claims.both({}, {})[0]
    claimed = [line.split(" | ")[1] for line in lines[1:]]
    assert claimed == [c.text.replace("|", "\\|") for c in claims.CLAIMS]
    for claim in claims.BUDGET_CLAIMS:  # a budget verdict or, until its suite runs, what it will cost
        cells = lines[1 + claimed.index(claim.text.replace("|", "\\|"))].removesuffix(" |").split(" | ")
        late, cmd = cells[4], cells[6]
        assert cmd == f"`bash benchmarks/reproduce/budget.sh {claim.suites[0]}`"
        assert (
            late in ("agrees", "disagrees")
            or late == f"not run yet (suite {claim.suites[0]}; budget: {claim.budget})"
            or re.fullmatch(rf"running \(suite {claim.suites[0]}: \d+ of \d+ runs finished; budget: .*\)", late)
        )


def test_a_budget_suite_that_is_still_running_gives_no_verdict(tmp_path):
    saw = {"000_saw_vs_bimodal": saw_rows([0.8, 0.82, 0.81], [0.7, 0.71, 0.72])}
    line = next(row for row in claims.both({}, saw, {"000_saw_vs_bimodal": (4, 6)}) if "Scores-as-Weights" in row)
    assert "| running (suite 000_saw_vs_bimodal: 4 of 6 runs finished; budget: " in line and "agrees" not in line
    assert "| agrees |" in next(r for r in claims.both({}, saw, {"000_saw_vs_bimodal": (6, 6)}) if "Scores-as" in r)
    # progress is counted from the suite's grid: an empty folder has none of its runs finished
    (tmp_path / "000_saw_vs_bimodal").mkdir()
    total = len(grid_points(load_sweep(BUDGET / "000_saw_vs_bimodal.yaml")))
    assert claims.budget_progress(tmp_path) == {"000_saw_vs_bimodal": (0, total)}
