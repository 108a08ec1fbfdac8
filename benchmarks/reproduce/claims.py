"""Check the source documents' claims on the results of the reproduction suites (run.sh).

    python benchmarks/reproduce/claims.py runs/reproduce-reduced > claims.md

Each claim is computed from the suites' run directories (ticketlab.load_results): means over seeds of
the test accuracy at the stated density, Welch's t-test where two groups are compared. The verdict is
mechanical ("agrees" / "disagrees" / "no data") and states its rule; nothing is tuned to agree.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ticketlab.analysis.stats import tidy, welch_p
from ticketlab.api import load_results


@dataclass
class Claim:
    source: str
    text: str
    check: Callable[[dict[str, pd.DataFrame]], tuple[str, str]]  # -> (verdict, figures)


def suite(frames: dict[str, pd.DataFrame], name: str) -> pd.DataFrame:
    return frames.get(name, pd.DataFrame())


def values(frame: pd.DataFrame, label: str, density: float, metric: str = "test_acc") -> np.ndarray:
    """``metric`` of every seed of ticket kind ``label`` at the level whose target is ``density``."""
    if frame.empty:
        return np.array([])
    rows = frame[(frame["label"] == label) & (np.isclose(frame["density_key"], density, rtol=1e-3))]
    return rows[metric].dropna().to_numpy(dtype=float)


def pct(a: np.ndarray) -> str:
    if len(a) == 0:
        return "–"
    return f"{100 * a.mean():.2f}" + (f" ± {100 * a.std(ddof=1):.2f}" if len(a) > 1 else "") + f" (n={len(a)})"


def compare(frame: pd.DataFrame, better: str, worse: str, density: float, margin: float = 0.0) -> tuple[str, str]:
    """Agrees when mean(better) >= mean(worse) - margin."""
    a, b = values(frame, better, density), values(frame, worse, density)
    if len(a) == 0 or len(b) == 0:
        return "no data", f"{better}: {pct(a)}; {worse}: {pct(b)}"
    p = welch_p(a, b)
    verdict = "agrees" if a.mean() >= b.mean() - margin else "disagrees"
    return verdict, f"{better} {pct(a)} vs {worse} {pct(b)} at density {density:g} (Welch p = {p:.3g})"


def imp_vs_reinit(frames):
    f = suite(frames, "003_winning_tickets")
    if f.empty:
        return "no data", ""
    lows = sorted(f.loc[f["density_key"] < 0.06, "density_key"].unique())
    parts, ok = [], []
    for d in lows:
        a, b = values(f, "lottery", d), values(f, "lottery [reinit]", d)
        if len(a) and len(b):
            parts.append(f"{d:g}: ticket {pct(a)} vs reinit {pct(b)} (p = {welch_p(a, b):.3g})")
            ok.append(a.mean() > b.mean())
    if not ok:
        return "no data", ""
    return ("agrees" if all(ok) else "disagrees"), "; ".join(parts)


def synflow_no_collapse(frames):
    f = suite(frames, "000_criteria_schedules")
    if f.empty:
        return "no data", ""
    d = f["density_key"].min()
    rows = f[np.isclose(f["density_key"], d) & f["label"].str.match(r"oneshot\(|multishot\(")]
    frac = rows.groupby("label")["collapsed"].mean()
    parts = [f"{label}: {100 * v:.0f}%" for label, v in frac.items()]
    # SynFlow as Tanaka et al. and 000 run it: 100 rounds (single-shot SynFlow is shown for contrast)
    synflow = frac[[k for k in frac.index if k.startswith("multishot(synflow)")]]
    others = frac[[k for k in frac.index if ("(snip" in k or "(grasp" in k)]]  # grasp_abs too
    if synflow.empty:
        return "no data", ""
    verdict = "agrees" if (synflow == 0).all() else "disagrees"
    note = f"runs with a collapsed layer (empty or no input-output path) at density {d:g}: " + ", ".join(parts)
    if not (others > 0).any():
        note += " (SNIP/GraSP did not collapse here either)"
    return verdict, note


def grasp_abs_vs_grasp(frames):
    f = suite(frames, "000_criteria_schedules")
    if f.empty:
        return "no data", ""
    wins, parts = [], []
    for schedule in ("oneshot", "multishot ×100"):
        prefix, suffix = ([*schedule.split(" "), ""])[:2]
        for d in (0.1, 0.01, 0.005):
            a = values(f, f"{prefix}(grasp_abs){(' ' + suffix) if suffix else ''}", d)
            b = values(f, f"{prefix}(grasp){(' ' + suffix) if suffix else ''}", d)
            if len(a) and len(b):
                wins.append(a.mean() >= b.mean())
                parts.append(f"{schedule} {d:g}: |GraSP| {pct(a)} vs GraSP {pct(b)}")
    if not wins:
        return "no data", ""
    return ("agrees" if sum(wins) > len(wins) / 2 else "disagrees"), f"{sum(wins)}/{len(wins)} cases: " + "; ".join(
        parts
    )


def sgimp_vs_lr_rewind(frames):
    return compare(suite(frames, "002_gimp_variants"), "sgimp:75%", "lr_rewind", 0.04)


def tom_vs_imp(frames):
    f = suite(frames, "002_gimp_variants")
    verdict, text = compare(f, "tom", "lottery", 0.04, margin=0.01)
    return verdict, text + " (rule: TOM within 1 point of IMP or above)"


def supermask_above_chance(frames, name="004_supermask"):
    f = suite(frames, name)
    if f.empty:
        return "no data", ""
    untrained = f[f["control"] == "untrained"]
    if untrained.empty:
        return "no data", ""
    best = untrained.loc[untrained.groupby("seed")["val_acc"].idxmax()]
    acc = best["test_acc"].to_numpy(float)
    trained = f[(f["control"] == "ticket") & (f["density_key"] < 1)]
    verdict = "agrees" if acc.mean() > 0.5 else "disagrees"
    return verdict, (
        f"best untrained supermask per seed (chosen on validation): test {pct(acc)} at densities "
        f"{', '.join(f'{d:.3g}' for d in best['density'])} (chance 10%); trained: {pct(trained['test_acc'].to_numpy(float))}"
    )


def supermask_vs_layer_size(frames):
    f, g = suite(frames, "004_supermask"), suite(frames, "004_layer_size")
    if f.empty or g.empty:
        return "no data", ""
    trained = f[(f["control"] == "ticket") & (f["density_key"] < 1)]
    if trained.empty:
        return "no data", ""
    kept = trained["kept"].mean()
    dense = g[g["level"] == 0].groupby("model").agg(kept=("kept", "mean"), acc=("test_acc", "mean"))
    nearest = dense.iloc[(dense["kept"] - kept).abs().argsort()[:1]]
    model, row = nearest.index[0], nearest.iloc[0]
    a = trained["test_acc"].to_numpy(float)
    verdict = "agrees" if a.mean() >= row["acc"] else "disagrees"
    return verdict, (
        f"trained best supermask ({kept:.0f} weights) {pct(a)} vs dense {model} ({row['kept']:.0f} weights) "
        f"{100 * row['acc']:.2f}"
    )


def regrowth_vs_imp(frames):
    f = suite(frames, "001_regrowth")
    parts, verdicts = [], []
    for method in ("double_pruning", "scored_pruning"):
        v, text = compare(f, method, "lottery", 0.05)
        verdicts.append(v)
        parts.append(text)
    if "no data" in verdicts:
        return "no data", "; ".join(parts)
    return ("agrees" if all(v == "agrees" for v in verdicts) else "disagrees"), "; ".join(parts)


def modifications_worse(frames):
    f = suite(frames, "002_modifications")
    if f.empty:
        return "no data", ""
    ticket = values(f, "lottery", 0.04)
    parts, ok = [f"ticket {pct(ticket)}"], []
    for control in ("reinit", "shuffle_weights", "shuffle_mask", "shuffle_mask_reinit", "random_same_layer_density"):
        b = values(f, f"lottery [{control}]", 0.04)
        if len(b) and len(ticket):
            ok.append(ticket.mean() > b.mean())
            parts.append(f"{control} {pct(b)} (p = {welch_p(ticket, b):.3g})")
    if not ok:
        return "no data", ""
    return ("agrees" if all(ok) else "disagrees"), "; ".join(parts)


CLAIMS = [
    Claim("003", "IMP tickets beat random reinitialisation of the same masks at low density", imp_vs_reinit),
    Claim(
        "000",
        "SynFlow (100 rounds) avoids layer collapse at extreme density, where SNIP/GraSP may collapse",
        synflow_no_collapse,
    ),
    Claim("000", "|GraSP| beats GraSP on the MLP", grasp_abs_vs_grasp),
    Claim("002", "sGIMP (75%) is at least as good as LR rewinding", sgimp_vs_lr_rewind),
    Claim("002", "Training Optimal Masks comes close to IMP on the 784-400-400-400-10 MLP at 4%", tom_vs_imp),
    Claim(
        "002",
        "Modifying an IMP ticket (table 3.1: reinit, shuffles, random same-layer masks) hurts it",
        modifications_worse,
    ),
    Claim("004", "Untrained supermasks are far above chance", supermask_above_chance),
    Claim(
        "004",
        "Untrained supermasks with signed-constant weights (Zhou et al., 004 §1: 86% on MNIST) are far above chance",
        lambda frames: supermask_above_chance(frames, "004_supermask_signed_constant"),
    ),
    Claim("004", "A trained supermask beats a dense network of the same weight count", supermask_vs_layer_size),
    Claim("001", "Double-/scored-pruning (regrowth) match or beat IMP at the same density", regrowth_vs_imp),
]


def main(root: str) -> None:
    frames = {}
    for path in sorted(Path(root).iterdir()):
        if path.is_dir() and path.name != "reports":
            frame = load_results(path)
            if not frame.empty:
                frames[path.name] = tidy(frame)
    print("| source | claim | our run | figures |")
    print("|---|---|---|---|")
    for claim in CLAIMS:
        verdict, figures = claim.check(frames)
        print(f"| {claim.source} | {claim.text} | {verdict} | {figures} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/reproduce-reduced")
