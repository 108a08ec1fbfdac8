"""The leaderboard page of pruning at initialisation (issue 22, item 3) from a sweep's run folder.

    python benchmarks/leaderboard/table.py runs/leaderboard/lenet300 --out docs/results/leaderboard \\
        --command "ticketlab sweep benchmarks/leaderboard/lenet300.yaml --out runs/leaderboard/lenet300"

Writes ``OUT/README.md`` (one table per density: mean ± std over seeds, n, Welch's p and stars against
SynFlow, the gap to IMP, the mask's cost, the sanity checks' drops) and ``OUT/results.csv`` (the same
figures at full precision, one row per ticket kind and density). Every figure is computed from the runs
(``ticketlab.load_results``, grouped by ``ticketlab.analysis.stats``: one sample per seed); nothing is typed
in. Rules, stated on the page too:

* stars: Welch's two-sided t-test of the ticket's test accuracies against the baseline's (SynFlow, else
  ``--baseline``) at the same density: ``*`` p < 0.05, ``**`` p < 0.01, ``***`` p < 0.001;
* gap to IMP: the ticket's mean minus IMP's mean at the same density, in points (negative: below IMP);
* mask cost: mean over seeds of the level's ``mask_cost_epochs`` (passes over the training split, model-epoch
  equivalents), ``mask_cost_passes`` and ``mask_cost_seconds`` (IMP's mask cost is its levels of training);
* sanity check (Frankle et al. 2021): for each control the drop = mean(ticket) - mean(control) in points
  and Welch's p; the accuracy "survives" the control unless the drop is positive with p < 0.05.
"""

from __future__ import annotations

import argparse
import math
import platform
import shlex
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ticketlab.analysis.results import is_ticket
from ticketlab.analysis.stats import baseline_label, samples, welch_p
from ticketlab.api import load_results
from ticketlab.hardware.environment import cpu_model

METRIC = "test_acc"
DEFAULT_INIT = " on kaiming_normal"
CONTROL_NAMES = {  # the page's column names of the controls (ticketlab.methods.controls)
    "random_same_layer_density": "layerwise shuffle on W_0 (random_same_layer_density)",
    "reinit": "reinit (same mask, fresh weights)",
}
COST = ("mask_cost_epochs", "mask_cost_passes", "mask_cost_seconds")


def stars(p: float) -> str:
    """``***`` p < 0.001, ``**`` p < 0.01, ``*`` p < 0.05, else nothing (NaN p: nothing)."""
    if p is None or math.isnan(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def survives(drop: float, p: float) -> str:
    """``yes`` unless the control is worse by a significant margin (drop > 0 with p < 0.05); ``n/a`` without
    a test (fewer than two seeds on a side, or no variance)."""
    if drop is None or math.isnan(drop):
        return ""
    if math.isnan(p):
        return "n/a"
    return "no" if drop > 0 and p < 0.05 else "yes"


def find_label(tickets: pd.DataFrame, name: str | None, default: str) -> str | None:
    """The label ``name`` (or ``default``) names among the tickets (``ticketlab.analysis.stats.baseline_label``);
    None when the default is absent (a table without SynFlow or IMP has no stars or gap)."""
    try:
        return baseline_label(tickets, name or default)
    except ValueError:
        if name is not None:
            raise
        return None


@dataclass
class Leaderboard:
    rows: pd.DataFrame  # one per ticket kind and density (control-free), with every column of the page
    controls: list[str]  # control names present
    baseline: str | None
    imp: str | None
    dense: pd.DataFrame = field(default_factory=pd.DataFrame)  # level-0 rows: label, mean, std, n


def leaderboard(frame: pd.DataFrame, baseline: str | None = None, imp: str | None = None) -> Leaderboard:
    """Every figure of the page from ``load_results``' frame."""
    t = samples(frame, METRIC)
    t["base"] = [
        lbl[: -len(f" [{c}]")] if not is_ticket(c) and lbl.endswith(f" [{c}]") else lbl
        for lbl, c in zip(t["label"], t["control"])
    ]
    pruned, dense = t[t["density_key"] < 1], t[t["density_key"] >= 1]
    tickets = pruned[pruned["control"].map(is_ticket)]
    base_label = find_label(tickets, baseline, "synflow")
    imp_label = find_label(tickets, imp, "lottery")
    controls = sorted(c for c in pruned["control"].unique() if not is_ticket(c))

    def acc(rows: pd.DataFrame) -> np.ndarray:
        return rows.sort_values("seed")[METRIC].to_numpy(dtype=float)

    out = []
    for (label, d), g in tickets.groupby(["label", "density_key"], sort=False):
        a = acc(g)
        row: dict[str, object] = {
            "ticket": label,
            "name": display(label),
            "density": d,
            "mean": a.mean(),
            "std": a.std(ddof=1) if len(a) > 1 else float("nan"),
            "n": len(a),
            "trained": bool((g["end_step"].fillna(1) > 0).any()) if "end_step" in g else True,
        }
        at = tickets[np.isclose(tickets["density_key"], d)]
        b = acc(at[at["label"] == base_label]) if base_label else np.array([])
        row["p_vs_baseline"] = welch_p(a, b) if label != base_label and len(b) else float("nan")
        row["stars"] = stars(float(row["p_vs_baseline"]))  # type: ignore[arg-type]
        m = acc(at[at["label"] == imp_label]) if imp_label else np.array([])
        row["imp_mean"] = m.mean() if len(m) else float("nan")
        row["gap_to_imp"] = a.mean() - m.mean() if len(m) else float("nan")
        for col in COST:
            row[col] = g[col].astype(float).mean() if col in g else float("nan")
        for c in controls:
            cg = pruned[(pruned["base"] == label) & (pruned["control"] == c) & np.isclose(pruned["density_key"], d)]
            ca = acc(cg)
            row[f"{c}_mean"] = ca.mean() if len(ca) else float("nan")
            row[f"{c}_n"] = len(ca)
            row[f"{c}_drop"] = a.mean() - ca.mean() if len(ca) else float("nan")
            row[f"{c}_p"] = welch_p(a, ca) if len(ca) else float("nan")
            row[f"{c}_survives"] = survives(float(row[f"{c}_drop"]), float(row[f"{c}_p"]))  # type: ignore[arg-type]
        out.append(row)
    rows = pd.DataFrame(out)
    if len(rows):
        rows = rows.sort_values(["density", "mean"], ascending=[False, False], kind="stable").reset_index(drop=True)
    dense_rows = (
        dense.groupby("base")[METRIC].agg(["mean", "std", "size"]).reset_index().rename(columns={"size": "n"})
        if len(dense)
        else pd.DataFrame()
    )
    return Leaderboard(rows, controls, base_label, imp_label, dense_rows)


def display(label: str) -> str:
    """A ticket's label for the page: the default initialisation left out."""
    return label.replace(DEFAULT_INIT, "")


def pct(x: float, digits: int = 2) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.{digits}f}"


def signed_points(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:+.2f}"


def pval(p: float) -> str:
    return "–" if math.isnan(p) else f"{p:.3g}"


def density_table(board: Leaderboard, d: float) -> list[str]:
    rows = board.rows[np.isclose(board.rows["density"], d)]
    head = ["ticket", "test acc % (mean ± std)", "n", "p vs SynFlow", "gap to IMP (points)"]
    head += ["mask cost (model-epochs)", "mask cost (passes)", "mask cost (s)"]
    head += [f"{CONTROL_NAMES.get(c, c)}: drop (points), p, survives" for c in board.controls]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in rows.iterrows():
        name = f"**{r['name']}**" if r["ticket"] in (board.baseline, board.imp) else r["name"]
        name += "" if r["trained"] else " (untrained supermask)"
        std = "" if math.isnan(r["std"]) else f" ± {pct(r['std'])}"
        cells = [name, f"{pct(r['mean'])}{std} {r['stars']}".rstrip(), str(r["n"]), pval(r["p_vs_baseline"])]
        cells += [signed_points(r["gap_to_imp"]), f"{r['mask_cost_epochs']:.3g}", f"{r['mask_cost_passes']:.0f}"]
        cells += [f"{r['mask_cost_seconds']:.3g}"]
        for c in board.controls:
            if r[f"{c}_n"]:
                cells.append(f"{signed_points(r[f'{c}_drop'])}, p {pval(r[f'{c}_p'])}, {r[f'{c}_survives']}")
            else:
                cells.append("–")
        lines.append("| " + " | ".join(cells).replace("nan", "–") + " |")
    return lines


def environment(frame: pd.DataFrame) -> list[str]:
    def values(col: str) -> str:
        if col not in frame:
            return "not recorded"
        return ", ".join(sorted({str(v) for v in frame[col].dropna()})) or "not recorded"

    import torch

    recipe = {c.removeprefix("recipe."): values(c) for c in ("recipe.steps", "recipe.lr", "recipe.batch_size")}
    return [
        f"- **Model / data:** {values('model')} on {values('dataset')}; validation split {values('val_size')} images.",
        f"- **Budget:** {recipe['steps']} per training, LR {recipe['lr']}, batch {recipe['batch_size']}, "
        f"optimizer {values('recipe.optimizer')}, momentum {values('recipe.momentum')}; seeds {values('seed')}.",
        f"- **Recorded by the runs:** CPU {values('env.cpu')}; torch {values('env.torch')}; threads "
        f"{values('env.threads')}; BLAS {values('env.blas')}; device {values('env.device')}.",
        f"- **Compute recorded:** {frame['train_time'].sum() / 60:.1f} min of training and "
        f"{frame['mask_cost_seconds'].sum() / 60:.1f} min of mask finding (sums over levels and controls).",
        f"- **Table written on:** {cpu_model()}, Python {platform.python_version()}, torch {torch.__version__}.",
    ]


def compared_densities(board: Leaderboard) -> list[float]:
    """The densities at which at least two ticket kinds have results, densest first."""
    if not len(board.rows):
        return []
    kinds = board.rows.groupby("density")["ticket"].nunique()
    return sorted((float(d) for d, k in kinds.items() if k >= 2), reverse=True)


def render(board: Leaderboard, frame: pd.DataFrame, title: str, commands: list[str], notes: list[str] = ()) -> str:
    lines = [f"# {title}", ""]
    lines += ["**Commands that produced this page:**", "", "```bash", *commands, "```", ""]
    lines += [*environment(frame), ""]
    lines += [
        f"Baseline of the stars: **{display(board.baseline) if board.baseline else 'none (no SynFlow runs)'}**; "
        f"IMP: **{display(board.imp) if board.imp else 'none (no IMP runs)'}**. Stars: Welch's two-sided t-test "
        "against the baseline at the same density, `*` p < 0.05, `**` p < 0.01, `***` p < 0.001. Gap to IMP: "
        "mean minus IMP's mean, in points. Mask cost: mean over seeds of the passes that found the mask, as "
        "model-epoch equivalents (passes over the training split), passes and seconds; IMP's is its levels of "
        "training. Sanity checks (Frankle et al. 2021): drop = mean(ticket) - mean(control) in points with "
        "Welch's p; the accuracy survives the control unless the drop is positive with p < 0.05.",
        "",
    ]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    if len(board.dense):  # runs of several methods share one dense level 0: equal figures are said once
        keyed = board.dense.assign(mean=board.dense["mean"].round(9), std=board.dense["std"].round(9))
        groups = keyed.groupby(["mean", "std", "n"], dropna=False, sort=False)["base"].apply(list)
        dense = "; ".join(
            f"{pct(mean)}"
            + ("" if math.isnan(std) else f" ± {pct(std)}")
            + f" (n={n}; level 0 of "
            + ", ".join(display(b) for b in bases)
            + ")"
            for (mean, std, n), bases in groups.items()
        )
        lines += [f"Dense network (level 0): {dense}.", ""]
    shown = compared_densities(board)
    left = sorted(set(board.rows["density"]) - set(shown), reverse=True) if len(board.rows) else []
    for d in shown:
        lines += [f"## Density {100 * d:g}%", "", *density_table(board, d), ""]
    if left:
        lines += [
            "Densities with a single ticket kind (IMP's path between the compared densities) are in "
            f"`results.csv` only: {', '.join(f'{100 * d:.3g}%' for d in left)}.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", help="run folder of the sweep(s)")
    parser.add_argument("--out", default="docs/results/leaderboard", help="folder for README.md and results.csv")
    parser.add_argument("--title", default="Leaderboard: pruning at initialisation")
    parser.add_argument("--baseline", default=None, help="ticket the stars compare with (default: synflow)")
    parser.add_argument("--imp", default=None, help="IMP's ticket (default: lottery)")
    parser.add_argument("--command", action="append", default=[], help="command that produced the runs")
    parser.add_argument("--note", action="append", default=[], help="a sentence for the page's notes")
    args = parser.parse_args(argv)
    frame = load_results(args.runs)
    if frame.empty:
        print(f"error: no finished levels under {args.runs}", file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():  # scipy on near-equal samples; the p-value is still reported
            warnings.simplefilter("ignore", RuntimeWarning)
            board = leaderboard(frame, args.baseline, args.imp)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    commands = args.command or [f"# (the sweep commands of {args.runs}: pass them with --command)"]
    commands = [*commands, shlex.join(["python", "benchmarks/leaderboard/table.py", *(argv or sys.argv[1:])])]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text(render(board, frame, args.title, commands, args.note))
    board.rows.to_csv(out / "results.csv", index=False)
    print(f"wrote {out / 'README.md'} and {out / 'results.csv'} ({len(board.rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
