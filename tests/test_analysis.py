"""Statistics, overlap and plots of the analysis layer, on hand-made frames and masks."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps

from ticketlab.analysis import plots
from ticketlab.analysis.overlap import closest_levels, far_levels, jaccard
from ticketlab.analysis.report import choose_density
from ticketlab.analysis.stats import (
    baseline_label,
    density_key,
    format_significance,
    labels,
    significance_table,
    summarize,
    welch_p,
    winning_table,
)
from ticketlab.masks import Mask


def rows(
    method, density, accs, *, control="", criterion=None, target=None, winning=None, level=1, init="kaiming_normal"
):
    return [
        dict(
            method=method,
            criterion=criterion,
            control=control,
            density=density,
            target_density=target or density,
            test_acc=acc,
            seed=seed,
            level=level,
            kept=int(density * 1000),
            model="mlp",
            dataset="synthetic",
            init=init,
            run_id=f"{method}{criterion}{seed}",
            winning=winning,
        )
        for seed, acc in enumerate(accs)
    ]


# -- Jaccard ---------------------------------------------------------------------------------------
def test_jaccard_by_hand():
    a = Mask({"w1": torch.tensor([[1, 1], [0, 0]]), "w2": torch.tensor([1, 0, 1])})
    b = Mask({"w1": torch.tensor([[0, 1], [1, 0]]), "w2": torch.tensor([1, 0, 0])})
    # intersection: w1[0,1], w2[0] = 2; union: w1[0,0], w1[0,1], w1[1,0], w2[0], w2[2] = 5
    assert jaccard(a, b) == pytest.approx(2 / 5)
    assert jaccard(a, a) == 1.0
    assert jaccard(b, a) == jaccard(a, b)
    empty = Mask({"w1": torch.zeros(2, 2), "w2": torch.zeros(3)})
    assert jaccard(empty, empty) == 1.0
    assert jaccard(a, empty) == 0.0


def test_jaccard_rejects_other_models():
    a = Mask({"w1": torch.ones(2, 2)})
    with pytest.raises(ValueError, match="different parameters"):
        jaccard(a, Mask({"w9": torch.ones(2, 2)}))
    with pytest.raises(ValueError, match="shapes"):
        jaccard(a, Mask({"w1": torch.ones(4)}))


def test_closest_levels_in_log_density():
    frame = pd.DataFrame(
        rows("lottery", 0.8, [0.9], level=1)
        + rows("lottery", 0.1, [0.8], level=2)
        + rows("lottery", 0.01, [0.5], level=3)
    )
    # in log density 0.04 is nearer 0.1 (x2.5) than 0.01 (x4), though linearly nearer 0.01
    assert closest_levels(frame, 0.04, factor=None)["level"].tolist() == [2]
    assert closest_levels(frame, 0.02, factor=None)["level"].tolist() == [3]
    assert closest_levels(frame, 0.5, factor=None)["level"].tolist() == [1]


def test_closest_levels_only_within_the_factor():
    frame = pd.DataFrame(
        rows("lottery", 0.8, [0.9, 0.9], level=1)
        + rows("lottery", 0.1, [0.8, 0.8], level=2)
        + rows("supermask", 0.5, [0.7, 0.7], level=3)
    )
    # asked 0.05: lottery's 0.1 is x2 away, supermask's 0.5 x10: nothing is compared, both are left out
    assert closest_levels(frame, 0.05).empty
    assert far_levels(frame, 0.05).set_index("label")["density"].to_dict() == {"lottery": 0.1, "supermask": 0.5}
    # asked 0.07: lottery's 0.1 is within x1.5 (x1.43), for both seeds; supermask is left out
    near = closest_levels(frame, 0.07)
    assert near["label"].tolist() == ["lottery", "lottery"] and near["density"].tolist() == [0.1, 0.1]
    assert far_levels(frame, 0.07)["label"].tolist() == ["supermask"]
    # exactly x1.5 counts as close
    assert closest_levels(frame, 0.75)["label"].tolist() == ["lottery", "lottery", "supermask", "supermask"]


# -- statistics ------------------------------------------------------------------------------------
def test_welch_matches_the_formula():
    a, b = [0.91, 0.93, 0.92, 0.95], [0.88, 0.89, 0.905]
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    assert welch_p(a, b) == pytest.approx(2 * sps.t.sf(abs(t), df), rel=1e-9)
    assert math.isnan(welch_p([0.9], [0.8, 0.7]))  # one seed: no test
    assert math.isnan(welch_p([0.9, 0.9], [0.8, 0.8]))  # no variance on either side: undefined


def test_density_key_prefers_target():
    frame = pd.DataFrame({"density": [0.0512, 0.2], "target_density": [0.05, None]})
    assert density_key(frame).tolist() == [0.05, 0.2]
    assert density_key(pd.DataFrame({"density": [0.123456]})).tolist() == [0.1235]


def test_labels_name_what_varies():
    frame = pd.DataFrame(
        rows("multishot", 0.1, [0.9], criterion="synflow")
        + rows("lottery", 0.1, [0.9], control="reinit")
        + rows("snip", 0.1, [0.9], init="xavier")
    )
    assert labels(frame).tolist() == [
        "multishot(synflow) on kaiming_normal",
        "lottery on kaiming_normal [reinit]",
        "snip on xavier",
    ]
    assert labels(pd.DataFrame(rows("lottery", 0.1, [0.9]))).tolist() == ["lottery"]
    iss_ims = pd.DataFrame(
        rows("lottery", 0.1, [0.9], criterion="snip") + rows("lottery", 0.1, [0.9], criterion="snip")
    )
    iss_ims["method.rounds"] = [1, 10]
    assert labels(iss_ims).tolist() == ["lottery(snip)", "lottery(snip) ×10"]


def test_summarize_mean_std():
    frame = pd.DataFrame(rows("lottery", 0.1, [0.90, 0.92, 0.97]) + rows("snip", 0.1, [0.8]))
    s = summarize(frame).set_index("label")
    assert s.loc["lottery", "mean"] == pytest.approx(0.93)
    assert s.loc["lottery", "std"] == pytest.approx(np.std([0.90, 0.92, 0.97], ddof=1))
    assert s.loc["lottery", "n"] == 3
    assert math.isnan(s.loc["snip", "std"]) and s.loc["snip", "n"] == 1


def test_significance_table_like_figure_5_14():
    frame = pd.DataFrame(
        rows("snip", 0.01, [0.90, 0.91, 0.89])
        + rows("snip", 0.1, [0.97, 0.975, 0.965])
        + rows("synflow", 0.01, [0.80, 0.81, 0.79])  # far below snip: significant
        + rows("synflow", 0.1, [0.968, 0.972, 0.969])  # within snip's noise: not significant
        + rows("random", 0.01, [0.95, 0.96, 0.955])  # best at the sparsest column: first row
    )
    means, pvalues, significant = significance_table(frame, "snip")
    assert list(means.columns) == [0.1, 0.01]  # densest first, as every table of a report
    assert list(means.index) == ["random", "snip", "synflow"]  # sorted by the sparsest column
    assert bool(significant.loc["synflow", 0.01]) and not bool(significant.loc["synflow", 0.1])
    assert math.isnan(pvalues.loc["snip", 0.01])  # the baseline is not tested against itself
    assert math.isnan(pvalues.loc["random", 0.1])  # no random at 0.1
    assert pvalues.loc["synflow", 0.01] == pytest.approx(welch_p([0.80, 0.81, 0.79], [0.90, 0.91, 0.89]))
    cells = format_significance(means, significant)
    assert cells.loc["synflow", "0.01"] == "80.00*"
    assert cells.loc["synflow", "0.1"] == "96.97"
    assert cells.loc["random", "0.1"] == "–"


def test_baseline_label_errors():
    frame = pd.DataFrame(rows("lottery", 0.1, [0.9]) + rows("lottery", 0.1, [0.9], control="reinit"))
    assert baseline_label(frame, "lottery") == "lottery"
    assert baseline_label(frame, "lottery [reinit]") == "lottery [reinit]"
    with pytest.raises(ValueError, match="baseline: 'snip' is not a method"):
        baseline_label(frame, "snip")
    two = pd.DataFrame(
        rows("multishot", 0.1, [0.9], criterion="snip") + rows("multishot", 0.1, [0.9], criterion="synflow")
    )
    with pytest.raises(ValueError, match="several tickets"):
        baseline_label(two, "multishot")


def test_winning_table_counts_seeds():
    losing = rows("lottery", 0.1, [0.9, 0.9, 0.9], winning=False)[2:]  # seed 2
    frame = pd.DataFrame(
        rows("lottery", 0.1, [0.9, 0.9, 0.9], winning=True)[:2]
        + losing
        + rows("lottery", 0.5, [0.9, 0.9], winning=None)
    )
    table = winning_table(frame)
    assert table.loc["lottery", "0.1"] == "2/3"
    assert table.loc["lottery", "0.5"] == "–"


def test_winning_table_counts_a_seed_once():
    # a methods sweep with one run per density: each run records the same seed's dense level
    dense = [
        dict(row, run_id=f"run{i}")
        for i in range(3)
        for row in rows("oneshot", 1.0, [0.9], winning=True, criterion="snip")
    ]
    frame = pd.DataFrame(dense + rows("oneshot", 0.1, [0.8], winning=False, criterion="snip"))
    table = winning_table(frame)
    assert table.loc["oneshot(snip)", "1"] == "1/1" and table.loc["oneshot(snip)", "0.1"] == "0/1"


def test_choose_density_most_tickets_then_sparsest():
    frame = pd.DataFrame(
        rows("a", 1.0, [0.9])
        + rows("a", 0.1, [0.9])
        + rows("b", 0.1, [0.9])
        + rows("a", 0.05, [0.9])
        + rows("b", 0.05, [0.9])
        + rows("c", 0.5, [0.9])
    )
    assert choose_density(frame) == 0.05


# -- plots -----------------------------------------------------------------------------------------
def test_plots_write_pngs(tmp_path):
    frame = pd.DataFrame(
        rows("lottery", 0.1, [0.9, 0.92]) + rows("lottery", 0.5, [0.95, 0.96]) + rows("snip", 0.1, [0.8, 0.7])
    )
    summary = summarize(frame)
    matrix = pd.DataFrame([[1.0, 0.3], [0.3, 1.0]], index=["a", "b"], columns=["a", "b"])
    layers = pd.DataFrame({"fc1.weight": [0.1, 0.2], "fc2.weight": [0.5, float("nan")]}, index=["a", "b"])
    made = [
        plots.plot_mean_std(summary, tmp_path / "a.png"),
        plots.plot_overlap_heatmap(matrix, tmp_path / "b.png"),
        plots.plot_initial_value_hist({"a": torch.randn(100), "b": torch.empty(0)}, tmp_path / "c.png"),
        plots.plot_layer_densities(layers, tmp_path / "d.png"),
        plots.plot_accuracy_vs_parameters(summary, tmp_path / "e.png"),
        plots.plot_accuracy_vs_density(frame.assign(control=""), tmp_path / "f.png"),
    ]
    for path in made:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_different_set_ups_are_never_averaged_as_seeds():
    # an lr sweep on one seed: two set-ups with one seed each, not one with two
    lr = pd.DataFrame(rows("lottery", 0.1, [0.85]) + rows("lottery", 0.1, [0.82]))
    lr["recipe.lr"] = [0.1, 0.02]
    s = summarize(lr).set_index("label")
    assert sorted(s.index) == ["lottery · lr=0.02", "lottery · lr=0.1"]
    assert s["n"].tolist() == [1, 1] and s["std"].isna().all()
    # SynFlow from a Kaiming init and from scores as weights: two kinds
    init = pd.DataFrame(rows("synflow", 0.1, [0.8]) + rows("synflow", 0.1, [0.7], init="saw:snip"))
    assert sorted(summarize(init)["label"]) == ["synflow on kaiming_normal", "synflow on saw:snip"]
    # a field only one method uses does not split the other (K of one-shot SNIP)
    mixed = pd.DataFrame(rows("lottery", 0.1, [0.9, 0.91]) + rows("snip", 0.1, [0.8, 0.81]))
    mixed["method.K"] = [0.5, 0.5, 0.8, 0.8]
    assert sorted(summarize(mixed)["label"]) == ["lottery", "snip"]


def test_a_seed_counts_once_per_set_up():
    # the same seed-0 ticket recorded by two runs (one of them also ran a control): one sample
    twice = pd.DataFrame(rows("lottery", 0.1, [0.9]) + rows("lottery", 0.1, [0.9]) + rows("lottery", 0.1, [0.8]))
    twice["seed"] = [0, 0, 1]
    twice["controls"] = [(), ("reinit",), ()]
    s = summarize(twice).set_index("label")
    assert s.loc["lottery", "n"] == 2 and s.loc["lottery", "mean"] == pytest.approx(0.85)
