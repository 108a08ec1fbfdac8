"""Check the source documents' claims on the results of the reproduction suites (run.sh, budget.sh).

    python benchmarks/reproduce/claims.py runs/reproduce-reduced > claims.md
    python benchmarks/reproduce/claims.py runs/reproduce-budget --suites budget
    python benchmarks/reproduce/claims.py runs/reproduce-reduced --budget runs/reproduce-budget  # both

Each claim is computed from the suites' run directories (ticketlab.load_results): means over seeds of
the test accuracy at the stated density, Welch's t-test where two groups are compared. The verdict is
mechanical ("agrees" / "disagrees" / "no data") and states its rule; nothing is tuned to agree.
``--suites budget`` reads the focused suites of budget.sh (benchmarks/reproduce/budget/) with the same
rules, one row per disputed claim, and names the command that produced each.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd

from ticketlab.analysis.stats import tidy, welch_p
from ticketlab.api import load_results
from ticketlab.store import RunDir
from ticketlab.sweep import grid_points, load_sweep

BUDGET_DIR = Path(__file__).resolve().parent / "budget"  # budget.sh's suites


@dataclass
class Claim:
    source: str
    text: str
    check: Callable[[dict[str, pd.DataFrame]], tuple[str, str]]  # -> (verdict, figures)
    suites: tuple[str, ...] = ()  # the run folders it reads (budget claims: "not run yet" without them)
    budget: str = ""  # budget claims: the suite's budget and estimated wall time (its file says why)


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


STANDARD = "kaiming_normal"  # the MLPs' default initialisation: "standard" in 000


def select(frame: pd.DataFrame, density: float, metric: str = "test_acc", **fields: object) -> np.ndarray:
    """``metric`` of every seed of the ticket (no control) whose columns equal ``fields`` (e.g. method,
    criterion, init, rounds) at the level whose target is ``density``; a label-free choice, so a suite's
    labels (which name only what varies in it) do not matter."""
    if frame.empty:
        return np.array([])
    rows = frame[np.isclose(frame["density_key"], density, rtol=1e-3) & (frame["control"] == "ticket")]
    for key, want in fields.items():
        if key not in rows:
            return np.array([])
        if isinstance(want, (int, float)):
            rows = rows[pd.to_numeric(rows[key], errors="coerce") == want]
        else:
            rows = rows[rows[key].astype(str) == str(want)]
    return rows[metric].dropna().to_numpy(dtype=float)


def compare(frame: pd.DataFrame, better: str, worse: str, density: float, margin: float = 0.0) -> tuple[str, str]:
    """Agrees when mean(better) >= mean(worse) - margin."""
    return compare_values(values(frame, better, density), values(frame, worse, density), better, worse, density, margin)


def compare_values(
    a: np.ndarray, b: np.ndarray, better: str, worse: str, density: float, margin: float = 0.0
) -> tuple[str, str]:
    """Agrees when mean(a) >= mean(b) - margin."""
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


def sgimp_vs_lr_rewind(frames, name="002_gimp_variants"):
    return compare(suite(frames, name), "sgimp:75%", "lr_rewind", 0.04)


def tom_vs_imp(frames, name="002_gimp_variants"):
    f = suite(frames, name)
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


def regrowth_vs_imp(frames, name="001_regrowth"):
    f = suite(frames, name)
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


def saw_vs_bimodal(frames, name="000_stacked_saw", density=0.005):
    """000 §5.4: 100-round SynFlow on SNIP-score weights (SaW) at least as good as on the bimodal control."""
    f = suite(frames, name)
    run = {"method": "multishot", "criterion": "synflow", "rounds": 100}
    a, b = select(f, density, init="saw:snip", **run), select(f, density, init="bimodal", **run)
    return compare_values(a, b, "multishot(synflow) on saw:snip", "multishot(synflow) on bimodal", density)


ALPHA = 0.05
# 000 figure 5.14 at 0.5% as issue 23 states it: each tier, the relation to the next one
ORDER: list[tuple[str, dict[str, object], str]] = [
    ("IMP", {"method": "lottery", "criterion": "magnitude", "rounds": 1, "init": STANDARD}, ">"),
    (
        "stacked/SaW",
        {"method": "multishot", "criterion": "stacked(magnitude, synflow)", "rounds": 100, "init": "saw:snip"},
        ">",
    ),
    ("SynFlow", {"method": "multishot", "criterion": "synflow", "rounds": 100, "init": STANDARD}, ">"),
    ("magnitude", {"method": "oneshot", "criterion": "magnitude", "rounds": 1, "init": STANDARD}, "≈"),
    ("SNIP", {"method": "multishot", "criterion": "snip", "rounds": 100, "init": STANDARD}, ">"),
    ("random", {"method": "oneshot", "criterion": "random", "rounds": 1, "init": STANDARD}, ""),
]


def pair_holds(a: np.ndarray, b: np.ndarray, relation: str, alpha: float = ALPHA) -> tuple[bool, str]:
    """Whether ``a relation b`` holds: ">" a higher mean and Welch p < alpha; "≈" p >= alpha (or undefined:
    no variance on either side). The reason reads "holds", "not significant", "reversed", "equal means" or
    "different"."""
    p = welch_p(a, b)
    significant = bool(p < alpha)  # NaN compares False: no evidence of a difference
    if relation == ">":
        if a.mean() > b.mean():
            return (True, "holds") if significant else (False, "not significant")
        return False, "reversed" if a.mean() < b.mean() else "equal means"
    if relation == "≈":
        return (False, "different") if significant else (True, "holds")
    raise ValueError(f"relation must be '>' or '≈', got {relation!r}")


def ordering(
    frame: pd.DataFrame, tiers: Sequence[tuple[str, dict[str, object], str]], density: float, alpha: float = ALPHA
) -> tuple[str, str]:
    """Each adjacent pair of ``tiers`` (name, columns, relation to the next) in Welch's test: "agrees" when
    every pair holds (:func:`pair_holds`), "no data" when a tier has no runs at ``density``."""
    groups = [(name, select(frame, density, **fields), relation) for name, fields, relation in tiers]
    missing = [name for name, a, _ in groups if len(a) == 0]
    if missing:
        return "no data", f"no runs at density {density:g} for: {', '.join(missing)}"
    parts, held = [], []
    for (name, a, relation), (next_name, b, _) in pairwise(groups):
        ok, why = pair_holds(a, b, relation, alpha)
        held.append(ok)
        parts.append(f"{name} {pct(a)} {relation} {next_name} {pct(b)}: {why} (p = {welch_p(a, b):.3g})")
    measured = " > ".join(name for name, a, _ in sorted(groups, key=lambda g: -g[1].mean()))
    verdict = "agrees" if all(held) else "disagrees"
    return verdict, (
        f"at density {density:g}, {sum(held)}/{len(held)} pairs hold: "
        + "; ".join(parts)
        + f"; measured order (means): {measured}"
    )


def fig514_order(frames, names=("000_criteria_schedules", "000_stacked_saw"), density=0.005):
    frame = pd.concat([suite(frames, n) for n in names if not suite(frames, n).empty] or [pd.DataFrame()])
    return ordering(frame, ORDER, density)


SAW = "Scores-as-Weights (SNIP scores as initial weights) beats its bimodal control (§5.4), SynFlow ×100 at 0.5%"
ORDER_TEXT = "Figure 5.14 at 0.5%: IMP > stacked/SaW composite > SynFlow > magnitude ≈ SNIP > random"

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
    Claim("000", SAW, saw_vs_bimodal),
    Claim("000", ORDER_TEXT, fig514_order),
]


# the disputed claims at the documents' budgets (budget.sh): the same rules on the focused suites
BUDGET_CLAIMS = [
    Claim(
        "002",
        "sGIMP (75%) is at least as good as LR rewinding",
        lambda frames: sgimp_vs_lr_rewind(frames, "002_sgimp_vs_lr_rewind"),
        ("002_sgimp_vs_lr_rewind",),
        "the full one: 20 epochs, 9 levels, 5 seeds; ~2,000 model-epochs, ~1.9 h",
    ),
    Claim(
        "002",
        "Training Optimal Masks comes close to IMP on the 784-400-400-400-10 MLP at 4%",
        lambda frames: tom_vs_imp(frames, "002_tom_vs_imp"),
        ("002_tom_vs_imp",),
        "the full one: 20 epochs, 5 seeds; ~1,300-1,400 model-epochs, ~1.3 h",
    ),
    Claim(
        "001",
        "Double-/scored-pruning (regrowth) match or beat IMP at the same density",
        lambda frames: regrowth_vs_imp(frames, "001_regrowth_vs_imp"),
        ("001_regrowth_vs_imp",),
        "10 of the suite's 20 epochs (20 would take ~3 h), 5 seeds; 2,800 model-epochs, ~1.5 h",
    ),
    Claim(
        "000",
        SAW,
        lambda frames: saw_vs_bimodal(frames, "000_saw_vs_bimodal"),
        ("000_saw_vs_bimodal",),
        "the full one: up to 100 epochs with early stopping, 3 seeds; at most 2,400 model-epochs, at most ~0.9 h",
    ),
    Claim(
        "000",
        ORDER_TEXT,
        lambda frames: fig514_order(frames, ("000_fig514_order",)),
        ("000_fig514_order",),
        "the full one: up to 100 epochs with early stopping, 3 seeds; about 3,000 model-epochs, about 1 h "
        "(a first run capped at 40 epochs: reproduce-budget/000_fig514_order-40ep)",
    ),
]


def load_frames(root: str | Path) -> dict[str, pd.DataFrame]:
    """suite folder name -> its tidy results (folders without results, or no folder, are left out)."""
    frames: dict[str, pd.DataFrame] = {}
    if not Path(root).is_dir():
        return frames
    for path in sorted(Path(root).iterdir()):
        if path.is_dir() and path.name != "reports":
            frame = load_results(path)
            if not frame.empty:
                frames[path.name] = tidy(frame)
    return frames


def row(*cells: str) -> str:
    """A markdown table row; a "|" inside a cell (|GraSP|) is escaped."""
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def command(claim: Claim) -> str:
    return f"`bash benchmarks/reproduce/budget.sh {' '.join(claim.suites)}`"


Progress = dict[str, tuple[int, int]]  # budget suite -> (runs finished, runs in its grid)


def budget_progress(root: str | Path) -> Progress:
    """How many of each budget suite's runs under ``root`` are finished (suites with a folder there)."""
    out: Progress = {}
    for file in sorted(BUDGET_DIR.glob("*.yaml")):
        folder = Path(root) / file.stem
        if folder.is_dir():
            points = grid_points(load_sweep(file))
            out[file.stem] = (sum(RunDir(folder / s.run_id()).finished for _, s in points), len(points))
    return out


def budget_check(claim: Claim, frames: dict[str, pd.DataFrame], progress: Progress | None = None) -> tuple[str, str]:
    """A budget claim's verdict, or "not run yet" (with its suite and budget) where a suite has no runs, or
    "running" where ``progress`` says its suite is not finished: a verdict is read only from whole suites."""
    running = [
        (n, *progress[n]) for n in claim.suites if progress and n in progress and progress[n][0] < progress[n][1]
    ]
    if running:
        done = "; ".join(f"suite {n}: {d} of {t} runs finished" for n, d, t in running)
        return f"running ({done}; budget: {claim.budget})", ""
    if not all(name in frames for name in claim.suites):
        return f"not run yet (suite {', '.join(claim.suites)}; budget: {claim.budget})", ""
    return claim.check(frames)


def table(
    frames: dict[str, pd.DataFrame], claims: Sequence[Claim], budget: bool = False, progress: Progress | None = None
) -> list[str]:
    """The markdown rows of the claims table; budget claims name their command and say "not run yet"
    where their suite has no results."""
    head = "| source | claim | our run | figures |" + (" command |" if budget else "")
    lines = [head, "|---" * (5 if budget else 4) + "|"]
    for claim in claims:
        verdict, figures = budget_check(claim, frames, progress) if budget else claim.check(frames)
        lines.append(row(claim.source, claim.text, verdict, figures, *([command(claim)] if budget else [])))
    return lines


def both(
    reduced: dict[str, pd.DataFrame], budget: dict[str, pd.DataFrame], progress: Progress | None = None
) -> list[str]:
    """Every claim at reduced budget, and beside it the same rule at the documents' budget where budget.sh
    has a suite for it (the same claim text)."""
    at_budget = {claim.text: claim for claim in BUDGET_CLAIMS}
    lines = [
        "| source | claim | reduced budget | figures (reduced) | at the documents' budget | figures (documents' budget) | command |",
        "|---" * 7 + "|",
    ]
    for claim in CLAIMS:
        verdict, figures = claim.check(reduced)
        other = at_budget.get(claim.text)
        if other is None:
            late, late_figures, cmd = "not rerun (not disputed)", "", ""
        else:
            (late, late_figures), cmd = budget_check(other, budget, progress), command(other)
        lines.append(row(claim.source, claim.text, verdict, figures, late, late_figures, cmd))
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The documents' claims against the reproduction suites' runs.")
    parser.add_argument("root", nargs="?", default="runs/reproduce-reduced", help="folder of the suites' run folders")
    parser.add_argument(
        "--suites",
        choices=["reduced", "budget"],
        default="reduced",
        help="reduced: run.sh's suites (every claim); budget: budget.sh's focused suites (the disputed claims)",
    )
    parser.add_argument(
        "--budget",
        metavar="DIR",
        help="with reduced suites in ROOT: add the verdicts of budget.sh's suites in DIR beside them "
        "(docs/results/README.md's claims table)",
    )
    args = parser.parse_args(argv)
    if args.budget:
        lines = both(load_frames(args.root), load_frames(args.budget), budget_progress(args.budget))
    elif args.suites == "budget":
        lines = table(load_frames(args.root), BUDGET_CLAIMS, budget=True, progress=budget_progress(args.root))
    else:
        lines = table(load_frames(args.root), CLAIMS)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
