"""One self-contained HTML report of every run under a results root.

The page embeds its plots as base64 PNG data URIs (the PNGs are also written beside it) and its tables
as HTML, with inline CSS and no script: it opens offline, from a file, in any browser. Contents: mean ±
std over seeds vs density, the significance table of 000 figure 5.14 (Welch's t-test vs a baseline at
α = 0.05, 000 §4.3), 003's winning-ticket flag, Jaccard mask overlap at one density, initial values of
kept weights, per-layer density, and accuracy vs remaining parameter count across models (002 figure 1.1).
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ticketlab.analysis import plots
from ticketlab.analysis.results import TICKET
from ticketlab.analysis.overlap import closest_levels, kept_initial_values, overlap_matrix
from ticketlab.analysis.stats import (
    ALPHA, baseline_label, format_significance, significance_table, summarize, tidy, winning_table,
)
from ticketlab.files import atomic_write_text

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; }
p.note { color: #555; font-size: 0.9em; }
"""


@dataclass
class Report:
    """What a report wrote: the HTML page, the PNGs beside it and the density it compared masks at."""

    html: Path
    images: dict[str, Path] = field(default_factory=dict)
    density: float | None = None
    baseline: str = ""
    markdown: Path | None = None  # report.md: the tables as markdown


def choose_density(frame: pd.DataFrame) -> float:
    """The pruned density (< 1) reached by the most ticket kinds; among equals the sparsest."""
    t = tidy(frame)
    t = t[(t["control"] == TICKET) & (t["density_key"] < 1)]
    if t.empty:
        return 1.0
    counts = t.groupby("density_key")["label"].nunique()
    best = counts.max()
    return float(min(d for d, c in counts.items() if c == best))


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(escape=True, na_rep="–", border=0)


def _summary_cells(summary: pd.DataFrame, scale: float) -> pd.DataFrame:
    """mean ± std (n) per ticket kind (rows) and density (columns, densest first), times ``scale``."""
    columns = sorted(summary["density_key"].unique(), reverse=True)
    out = pd.DataFrame("–", index=sorted(summary["label"].unique()), columns=[f"{c:g}" for c in columns])
    for _, row in summary.iterrows():
        std = "" if pd.isna(row["std"]) else f" ± {row['std'] * scale:.2f}"
        out.loc[row["label"], f"{row['density_key']:g}"] = f"{row['mean'] * scale:.2f}{std} ({int(row['n'])})"
    out.index.name = "ticket"
    return out


def write_report(
    root: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    baseline: str = "lottery",
    density: float | None = None,
    metric: str = "test_acc",
    alpha: float = ALPHA,
    frame: pd.DataFrame | None = None,
) -> Report:
    """Read every run under ``root`` and write ``out/report.html`` (default ``root/report``) with its PNGs.

    ``baseline`` is a method name (its ticket) or a full row label of the tables; ``density`` picks the
    level compared in the overlap, histogram and per-layer plots (default: see :func:`choose_density`).
    """
    from ticketlab.analysis.results import load_results

    root = Path(root)
    out = Path(out) if out is not None else root / "report"
    frame = load_results(root) if frame is None else frame
    if frame.empty:
        raise ValueError(f"{root}: no finished levels found (expected <root>/<run id>/level_XX/metrics.json)")
    if metric not in frame:
        raise ValueError(f"metric: {metric!r} is not a results column; allowed: {', '.join(map(str, frame.columns))}")
    if density is not None and not 0 < density <= 1:
        raise ValueError(f"density: {density} is not in (0, 1]")
    base = baseline_label(frame, baseline)
    density = choose_density(frame) if density is None else density
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out / "report.html", density=density, baseline=base)
    tickets = tidy(frame)
    tickets = frame[tickets["control"] == TICKET]
    percent = metric.endswith("acc")
    ylabel = f"{metric.replace('_', ' ')}{' (%)' if percent else ''}"
    scale = 100.0 if percent else 1.0

    sections: list[str] = []

    # accuracy vs density, mean ± std over seeds
    summary = summarize(frame, metric)
    report.images["accuracy_vs_density"] = plots.plot_mean_std(
        summary, out / "accuracy_vs_density.png", ylabel=ylabel, scale=scale
    )
    sections.append(
        "<h2>Accuracy vs density</h2>"
        + _img(report.images["accuracy_vs_density"], f"{metric} vs density, mean ± std over seeds")
        + '<p class="note">Mean ± std over seeds (std with one degree of freedom; bands absent for one seed). '
        f"Cells: mean ± std (number of seeds){', percent' if percent else ''}.</p>"
        + _table(_summary_cells(summary, scale))
    )

    # 000 figure 5.14
    means, pvalues, significant = significance_table(frame, base, metric, alpha)
    sections.append(
        f"<h2>Significance vs {html.escape(base)}</h2>"
        + f'<p class="note">Mean {html.escape(metric)} over seeds per ticket and density (as 000 figure 5.14). '
        f"<b>*</b>: Welch's t-test against <b>{html.escape(base)}</b> at the same density gives p &lt; {alpha:g} "
        "(000 §4.3); needs at least two seeds on both sides. Rows sorted by the sparsest column.</p>"
        + _table(format_significance(means, significant, scale))
        + "<details><summary>p-values</summary>"
        + _table(pvalues.rename(columns=lambda c: f"{c:g}").map(lambda p: "–" if pd.isna(p) else f"{p:.3g}"))
        + "</details>"
    )

    # 003 winning tickets
    wins = winning_table(frame)
    if not wins.empty:
        sections.append(
            "<h2>Winning tickets</h2>"
            '<p class="note">003: a ticket is winning when its test accuracy is at least the dense run\'s and its '
            "early-stopping step (minimum validation loss) is no later. Cells: winning seeds / seeds.</p>"
            + _table(wins)
        )

    # mask overlap at one density
    matrix = overlap_matrix(tickets, root, density)
    if not matrix.empty:
        report.images["overlap"] = plots.plot_overlap_heatmap(
            matrix, out / "overlap.png", title=f"Jaccard overlap near density {density:g}"
        )
        sections.append(
            f"<h2>Mask overlap at density ≈ {density:g}</h2>"
            + _img(report.images["overlap"], "Jaccard overlap heatmap")
            + '<p class="note">Jaccard |A∩B| / |A∪B| of the kept weights, per seed (same initial weights), '
            "mean over the seeds both tickets have. Each ticket at its level closest to the density.</p>"
            + _picked_table(tickets, density)
        )

    # initial values of kept weights
    values = kept_initial_values(frame, root, density)
    if values:
        report.images["initial_values"] = plots.plot_initial_value_hist(
            values, out / "initial_values.png", title=f"initial values of kept weights, density ≈ {density:g}"
        )
        sections.append(
            "<h2>Initial values of kept weights</h2>" + _img(report.images["initial_values"], "histogram of initial values")
            + '<p class="note">Tickets: the shared initial weights (level 0 start) at the kept positions; '
            "controls: the weights they started from. Legend: number of weights over all seeds.</p>"
        )

    # per-layer density
    layers = _layer_density_table(tickets, density)
    if not layers.empty:
        report.images["layer_densities"] = plots.plot_layer_densities(
            layers, out / "layer_densities.png", title=f"per-layer density near density {density:g}"
        )
        sections.append(
            "<h2>Per-layer density</h2>" + _img(report.images["layer_densities"], "per-layer density bars")
            + _table(layers.map(lambda v: "–" if pd.isna(v) else f"{v * 100:.2f}%"))
        )

    # 002 figure 1.1
    if "kept" in frame:
        ticket_summary = summarize(tickets, metric)
        report.images["accuracy_vs_parameters"] = plots.plot_accuracy_vs_parameters(
            ticket_summary, out / "accuracy_vs_parameters.png", ylabel=ylabel, scale=scale
        )
        sections.append(
            "<h2>Accuracy vs remaining parameters</h2>"
            + _img(report.images["accuracy_vs_parameters"], "accuracy vs remaining prunable weights")
            + '<p class="note">As 002 figure 1.1: each point a ticket (mean over seeds), connected along its '
            "pruning levels; models compared at equal parameter count. Counts are prunable weights kept.</p>"
        )

    atomic_write_text(report.html, _page(root, frame, base, density, metric, sections))
    report.markdown = out / "report.md"
    atomic_write_text(report.markdown, _markdown(root, frame, base, metric, alpha, scale, summary, means, significant, wins))
    return report


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub markdown table of ``table`` (index as the first column), cells as text."""
    index = table.index.name or ""
    header = [index] + [str(c) if not isinstance(c, float) else f"{c:g}" for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, row in table.iterrows():
        lines.append("| " + " | ".join([str(label)] + ["–" if pd.isna(v) else str(v) for v in row]) + " |")
    return "\n".join(lines)


def _markdown(
    root: Path, frame: pd.DataFrame, base: str, metric: str, alpha: float, scale: float, summary: pd.DataFrame,
    means: pd.DataFrame, significant: pd.DataFrame, wins: pd.DataFrame,
) -> str:
    """The report's tables as markdown, for a results README beside the HTML page."""
    parts = [
        f"Results root `{root}`: {frame['run_id'].nunique()} runs, {len(frame)} levels, "
        f"{frame['seed'].nunique() if 'seed' in frame else '?'} seeds. Metric `{metric}`"
        f"{' (percent)' if scale == 100 else ''}.",
        "",
        f"Mean over seeds per ticket and density; `*`: Welch's t-test against **{base}** at the same density "
        f"gives p < {alpha:g}.",
        "",
        markdown_table(format_significance(means, significant, scale)),
        "",
        "Mean ± std (number of seeds):",
        "",
        markdown_table(_summary_cells(summary, scale)),
    ]
    if not wins.empty:
        parts += ["", "Winning tickets (003): winning seeds / seeds.", "", markdown_table(wins)]
    return "\n".join(parts) + "\n"


def _picked_table(tickets: pd.DataFrame, density: float) -> str:
    picked = closest_levels(tickets, density)
    if picked.empty:
        return ""
    view = picked[["label", "seed", "level", "density", "run_id"]].rename(columns={"label": "ticket"})
    view = view.assign(density=view["density"].map(lambda d: f"{d:.4g}"))
    return "<details><summary>levels compared</summary>" + view.to_html(index=False, border=0) + "</details>"


def _layer_density_table(tickets: pd.DataFrame, density: float) -> pd.DataFrame:
    """Mean per-layer density over seeds, one row per ticket kind, at the level closest to ``density``."""
    if "layer_densities" not in tickets:
        return pd.DataFrame()
    picked = closest_levels(tickets, density)
    rows = {}
    for label, group in picked.groupby("label", sort=True):
        dicts = [d for d in group["layer_densities"] if isinstance(d, dict)]
        if dicts:
            rows[label] = pd.DataFrame(dicts).mean()
    table = pd.DataFrame(rows).T
    table.index.name = "ticket"
    return table


def _page(root: Path, frame: pd.DataFrame, baseline: str, density: float, metric: str, sections: list[str]) -> str:
    def count(col: str) -> str:
        return str(frame[col].nunique()) if col in frame else "?"

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    models = ", ".join(sorted(map(str, frame["model"].unique()))) if "model" in frame else ""
    datasets = ", ".join(sorted(map(str, frame["dataset"].unique()))) if "dataset" in frame else ""
    head = (
        f"<p>Results root <code>{html.escape(str(root))}</code>: {count('run_id')} runs, {len(frame)} levels, "
        f"{count('seed')} seeds; models {html.escape(models)}; datasets {html.escape(datasets)}. "
        f"Metric <code>{html.escape(metric)}</code>, baseline <b>{html.escape(baseline)}</b>, masks compared at "
        f"density ≈ {density:g} (sparsity {(1 - density) * 100:.4g}%). Written {stamp}.</p>"
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<link rel="icon" href="data:,">'  # no favicon request: the page makes no network access at all
        f"<title>ticketlab report: {html.escape(root.name or str(root))}</title><style>{_CSS}</style></head>"
        f"<body><h1>ticketlab report</h1>{head}{''.join(sections)}</body></html>\n"
    )
