"""benchmarks/leaderboard: the suite files expand, table.py computes its figures right (tiny real runs on the
synthetic dataset, then their accuracies replaced by known numbers and checked against an explicit Welch
test), and plain_check.py retrains a stored ticket in its own loop."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps

import ticketlab
from ticketlab.config import Recipe
from ticketlab.sweep import grid_points, load_sweep, set_base

ROOT = Path(__file__).resolve().parents[1]
BOARD = ROOT / "benchmarks" / "leaderboard"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"leaderboard_{name}", BOARD / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


table = load("table")

RECIPE = Recipe(steps="20it", batch_size=32, lr=0.05, eval_every="20it")
SEEDS = (0, 1, 2)
TINY = {"model": "mlp:784-16-10", "dataset": "synthetic", "recipe": RECIPE, "val_size": 0}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("board")
    for seed in SEEDS:
        ticketlab.prune(method="synflow", density=(0.1, 0.02), seed=seed, out=out, **TINY)
        ticketlab.prune(
            method="snip", density=(0.1, 0.02), seed=seed, out=out, controls=("reinit", "shuffle_mask"), **TINY
        )
        ticketlab.prune(method="lottery", K=0.5, density=(0.1, 0.02), seed=seed, out=out, **TINY)
    return out


def levels(root: Path):
    """(metrics path, method, seed, control, target density) of every level, read from the files."""
    for metrics in sorted(root.glob("*/level_*/**/metrics.json")):
        run = next(p for p in metrics.parents if (p / "spec.json").exists())
        spec = json.loads((run / "spec.json").read_text())
        m = json.loads(metrics.read_text())
        yield metrics, spec.get("method", {}).get("name", "lottery"), spec.get("seed", 0), m["control"], m


def test_figures_match_an_independent_reading_of_the_runs(runs):
    board = table.leaderboard(ticketlab.load_results(runs))
    raw: dict[tuple, list[float]] = {}
    for _, method, _seed, control, m in levels(runs):
        if m.get("target_density") in (0.1, 0.02):
            raw.setdefault((method, control, m["target_density"]), []).append(m["test_acc"])
    rows = board.rows.set_index(["name", "density"])
    assert board.baseline == "synflow ×100" and board.imp == "lottery"
    assert board.controls == ["reinit", "shuffle_mask"]
    for d in (0.1, 0.02):
        snip, syn, imp = raw[("snip", "", d)], raw[("synflow", "", d)], raw[("lottery", "", d)]
        r = rows.loc[("snip", d)]
        assert (
            r["n"] == 3
            and r["mean"] == pytest.approx(np.mean(snip))
            and r["std"] == pytest.approx(np.std(snip, ddof=1))
        )
        assert r["gap_to_imp"] == pytest.approx(np.mean(snip) - np.mean(imp))
        if np.var(snip) or np.var(syn):
            assert r["p_vs_baseline"] == pytest.approx(sps.ttest_ind(snip, syn, equal_var=False).pvalue)
        for control in ("reinit", "shuffle_mask"):
            c = raw[("snip", control, d)]
            assert r[f"{control}_drop"] == pytest.approx(np.mean(snip) - np.mean(c)) and r[f"{control}_n"] == 3
        # SynFlow is the baseline: no p against itself; IMP's gap to itself is 0; cost recorded
        s = rows.loc[(board.baseline, d)]
        assert math.isnan(s["p_vs_baseline"]) and s["stars"] == ""
        assert rows.loc[("lottery", d)]["gap_to_imp"] == pytest.approx(0)
        assert rows.loc[("lottery", d)]["mask_cost_epochs"] > 0  # IMP's cost: its levels of training


def welch(a, b):
    """Welch's two-sided t-test written out: t, Welch-Satterthwaite degrees of freedom, Student's t tail."""
    a, b = np.asarray(a), np.asarray(b)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return 2 * sps.t.sf(abs(t), df)


KNOWN = {  # (method, control) -> test accuracies of seeds 0, 1, 2 at density 0.02
    ("synflow", ""): [0.80, 0.81, 0.82],
    ("snip", ""): [0.70, 0.71, 0.72],
    ("snip", "reinit"): [0.60, 0.61, 0.62],
    ("snip", "shuffle_mask"): [0.72, 0.70, 0.71],
    ("lottery", ""): [0.90, 0.91, 0.93],
}


@pytest.fixture(scope="module")
def known(runs, tmp_path_factory):
    """The runs with the accuracies at density 0.02 replaced by KNOWN."""
    import shutil

    out = tmp_path_factory.mktemp("known") / "runs"
    shutil.copytree(runs, out)
    for path, method, seed, control, m in levels(out):
        if m.get("target_density") == 0.02:
            m["test_acc"] = KNOWN[(method, control)][seed]
            path.write_text(json.dumps(m))
    return out


def test_stars_gap_and_sanity_columns_from_known_numbers(known):
    board = table.leaderboard(ticketlab.load_results(known))
    r = board.rows.set_index(["name", "density"]).loc[("snip", 0.02)]
    p = welch(KNOWN[("snip", "")], KNOWN[("synflow", "")])
    assert r["mean"] == pytest.approx(0.71) and r["std"] == pytest.approx(0.01)
    assert r["p_vs_baseline"] == pytest.approx(p, rel=1e-9) and p < 0.001 and r["stars"] == "***"
    assert r["gap_to_imp"] == pytest.approx(0.71 - np.mean([0.90, 0.91, 0.93]))
    assert r["reinit_drop"] == pytest.approx(0.10) and r["reinit_p"] == pytest.approx(
        welch(KNOWN[("snip", "")], KNOWN[("snip", "reinit")])
    )
    assert r["reinit_survives"] == "no"  # 10 points lower, p < 0.05
    assert r["shuffle_mask_drop"] == pytest.approx(0.0, abs=1e-12) and r["shuffle_mask_survives"] == "yes"
    imp = board.rows.set_index(["name", "density"]).loc[("lottery", 0.02)]
    assert imp["p_vs_baseline"] == pytest.approx(welch(KNOWN[("lottery", "")], KNOWN[("synflow", "")]), rel=1e-9)


def test_stars_and_survival_rules():
    assert [table.stars(p) for p in (0.0009, 0.001, 0.009, 0.049, 0.05, float("nan"))] == [
        "***",
        "**",
        "**",
        "*",
        "",
        "",
    ]
    assert table.survives(0.05, 0.01) == "no" and table.survives(0.05, 0.2) == "yes"
    assert table.survives(-0.05, 0.001) == "yes" and table.survives(0.05, float("nan")) == "n/a"


def test_page_and_csv(known, tmp_path):
    out = tmp_path / "page"
    rc = table.main([str(known), "--out", str(out), "--command", "ticketlab sweep x.yaml --out runs/x"])
    assert rc == 0
    page = (out / "README.md").read_text()
    assert "ticketlab sweep x.yaml --out runs/x" in page and "benchmarks/leaderboard/table.py" in page
    assert "## Density 10%" in page and "## Density 2%" in page
    row = next(line for line in page.splitlines() if line.startswith("| snip |") and "71.00" in line)
    assert "71.00 ± 1.00 ***" in row and "-20.33" in row  # gap: 71 - 91.33
    assert "+10.00, p " in row and ", no |" in row
    assert "torch" in page and "CPU" in page and "20it" in page
    csv = pd.read_csv(out / "results.csv")
    snip = csv[(csv["name"] == "snip") & np.isclose(csv["density"], 0.02)].iloc[0]
    assert snip["stars"] == "***" and snip["reinit_drop"] == pytest.approx(0.10)
    assert table.main([str(tmp_path / "empty"), "--out", str(tmp_path / "nothing")]) == 2
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize("name", ["lenet300", "conv", "conv_imp"])
def test_suite_files_expand(name):
    sweep = load_sweep(BOARD / f"{name}.yaml")
    specs = [s for _, s in grid_points(sweep)]
    assert specs and {s.seed for s in specs} == set(SEEDS)
    assert all(s.val_size == 0 and s.recipe.lr == 0.1 and s.recipe.batch_size == 60 for s in specs)
    assert all(s.recipe.optimizer == "sgd" and s.recipe.momentum == 0 for s in specs)
    tiny = [s for _, s in grid_points(set_base(sweep, ["recipe.steps=50it", "dataset=synthetic"]))]
    assert len(tiny) == len(specs)


def test_lenet300_suite_covers_the_issue():
    specs = [s for _, s in grid_points(load_sweep(BOARD / "lenet300.yaml"))]
    assert all(str(s.recipe.steps) == "20ep" for s in specs)
    kinds = {(s.method.name, s.method.criterion, s.init) for s in specs}
    wanted = {"random", "random_erk", "magnitude", "snip", "grasp", "grasp_abs", "synflow"}
    wanted |= {"prospr", "ntk_sap:draws=5", "phew"}
    assert wanted <= {c for _, c, _ in kinds}
    assert {"iter_snip", "force", "gem_miner", "edge_popup", "lottery"} <= {m for m, _, _ in kinds}
    assert ("multishot", "stacked(magnitude, synflow)", "saw:snip") in kinds
    densities: dict[tuple, set] = {}
    for s in specs:
        densities.setdefault((s.method.name, s.method.criterion, s.seed), set()).update(s.densities)
        if s.controls:  # sanity checks only at 0.5%
            assert s.densities == (0.005,) and s.controls == ("reinit", "random_same_layer_density")
    assert all(d == {0.1, 0.02, 0.01, 0.005} for d in densities.values())
    synflow = next(s for s in specs if s.method.criterion == "synflow")
    assert synflow.method.rounds == 100


plain = load("plain_check")


def test_plain_loop_retrains_a_stored_ticket(tmp_path, capsys):
    recipe = Recipe(steps="200it", batch_size=32, lr=0.05, eval_every="200it")
    tiny = {**TINY, "model": "mlp:784-64-10", "recipe": recipe}
    ticketlab.prune(method="snip", density=0.2, out=tmp_path, **tiny)
    ticketlab.prune(method="edge_popup", density=0.5, out=tmp_path, options={"steps": "50it"}, **tiny)
    run = next(p.parent for p in tmp_path.glob("*/spec.json") if "snip" in p.read_text())
    ticket = ticketlab.load_ticket(run, level=1)
    acc, model = plain.train_plain(ticket, plain.plain_data(ticket, None))
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    for lin, name in zip(linears, ["layers.0", "layers.1"]):
        keep = ticket.mask[f"{name}.weight"]
        assert torch.all(lin.weight[~keep] == 0)  # the mask held through training
        assert not torch.equal(lin.weight[keep], ticket.start[f"{name}.weight"][keep])  # and it trained
    assert acc > 0.5 and abs(acc - ticket.metrics["test_acc"]) < 0.05  # same accuracy as the run, within noise
    # a whole folder: every pruned level; the untrained edge-popup supermask is evaluated as stored
    assert plain.main([str(tmp_path), "--json", str(tmp_path / "rows.json")]) == 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert len(rows) == 2
    popup = next(r for r in rows if r["density"] == pytest.approx(0.5, abs=1e-3))
    assert popup["plain"] == pytest.approx(popup["recorded"], abs=1e-9)
    assert plain.main([str(tmp_path / "nothing")]) == 2
    assert "no finished pruned level" in capsys.readouterr().err


def test_the_moonshot_combination_files_expand():
    from ticketlab.sweep.tune import load_tune

    specs = [s for _, s in grid_points(load_sweep(BOARD / "moonshot_start.yaml"))]
    assert len(specs) == 10 and {s.seed for s in specs} == set(range(5))
    starts = {(s.method.options["score_init"], s.method.criterion, s.method.rounds) for s in specs}
    assert starts == {("criterion", "synflow", 100), ("magnitude", None, None)}
    tune = load_tune(BOARD / "composites_tune.yaml")
    assert set(tune.search) == {"a", "b", "init"} and tune.objective == "val_acc" and tune.base["val_size"] > 0
