"""One self-contained HTML report of every run under a results root.

The page embeds its plots as base64 PNG data URIs (the PNGs are also written beside it) and its tables
as HTML, with inline CSS and no script: it opens offline, from a file, in any browser. Contents: mean ±
std over seeds vs density, the significance table of 000 figure 5.14 (Welch's t-test vs a baseline at
α = 0.05, 000 §4.3), 003's winning-ticket flag, Jaccard mask overlap at one density, initial values of
kept weights, per-layer density, and accuracy vs remaining parameter count across models (002 figure 1.1).
Each section is one function of :mod:`ticketlab.analysis.sections`; this module picks the baseline and the
density, runs the sections and writes the page and ``report.md``.
"""

from __future__ import annotations

import html
import os
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ticketlab.analysis.overlap import CLOSE, closest_levels, far_levels
from ticketlab.analysis.results import TICKET
from ticketlab.analysis.sections import MASK_SECTIONS, SECTIONS, Context, Report, summary_cells
from ticketlab.analysis.stats import ALPHA, baseline_label, default_baseline, format_significance, tidy
from ticketlab.analysis.style import series_styles
from ticketlab.files import atomic_write_text

__all__ = ["Report", "choose_density", "markdown_table", "write_report"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
div.wide { overflow-x: auto; max-width: 100%; margin: 0.8em 0; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f3f3; }
tbody th, thead th:first-child { position: sticky; left: 0; background: #fff; box-shadow: inset -1px 0 #ccc; }
thead th:first-child { background: #f3f3f3; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
p.note { color: #555; font-size: 0.9em; }
"""


def choose_density(frame: pd.DataFrame) -> float:
    """The pruned density (< 1) reached by the most ticket kinds; among equals the sparsest."""
    t = tidy(frame)
    t = t[(t["control"] == TICKET) & (t["density_key"] < 1)]
    if t.empty:
        return 1.0
    counts = t.groupby("density_key")["label"].nunique()
    best = counts.max()
    return float(min(d for d, c in counts.items() if c == best))


def write_report(
    root: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    baseline: str | None = None,
    density: float | None = None,
    metric: str = "test_acc",
    alpha: float = ALPHA,
    frame: pd.DataFrame | None = None,
) -> Report:
    """Read every run under ``root`` and write ``out/report.html`` (default ``root/report``) with its PNGs.

    ``baseline`` is a method, ``method(criterion)``, criterion or full row label of the tables (default:
    see :func:`ticketlab.analysis.stats.default_baseline`; the page says which was taken). ``density`` is
    the density at which the overlap, histogram and per-layer plots compare masks (default: see
    :func:`choose_density`): each ticket kind at its level closest to it, kinds without a level within a
    factor :data:`~ticketlab.analysis.overlap.CLOSE` left out; no kind within it is a ValueError.
    """
    from ticketlab.analysis.results import load_results

    root = Path(root)
    out = Path(out) if out is not None else root / "report"
    frame = load_results(root) if frame is None else frame
    if frame.empty:
        raise ValueError(f"{root}: no finished levels found (expected <root>/<run id>/level_XX/metrics.json)")
    frame = tidy(frame)  # labelled once: every section, per model too, names a kind the same way
    if metric not in frame:
        raise ValueError(f"metric: {metric!r} is not a results column; allowed: {', '.join(map(str, frame.columns))}")
    if density is not None and not 0 < density <= 1:
        raise ValueError(f"density: {density} is not in (0, 1]")
    report = Report(out / "report.html")
    if baseline is None:
        report.baseline, report.baseline_reason = default_baseline(frame, metric)
    else:
        report.baseline = baseline_label(frame, baseline)
    report.density_reason = "given" if density is not None else "the density most ticket kinds reach"
    report.density = choose_density(frame) if density is None else density
    _compared_densities(report, frame)
    tickets = frame[frame["control"] == TICKET]
    out.mkdir(parents=True, exist_ok=True)
    percent = metric.endswith("acc")
    ctx = Context(
        root=root,
        out=out,
        frame=frame,
        tickets=tickets,
        metric=metric,
        alpha=alpha,
        report=report,
        scale=100.0 if percent else 1.0,
        ylabel=f"{metric.replace('_', ' ')}{' (%)' if percent else ''}",
        styles=series_styles(frame["label"]),
    )
    dense_only = report.density >= 1  # every mask full (e.g. a layer-size sweep): no mask sections to show
    sections = ["" if dense_only and section in MASK_SECTIONS else section(ctx) for section in SECTIONS]
    atomic_write_text(report.html, _page(ctx, sections))
    report.markdown = out / "report.md"
    atomic_write_text(report.markdown, _markdown(ctx))
    return report


def _compared_densities(report: Report, frame: pd.DataFrame) -> None:
    """Record the densities the masks are compared at (per ticket kind or control, mean over seeds) and
    the kinds left out; a ValueError when no kind has a level close to the density."""
    assert report.density is not None
    picked = closest_levels(frame, report.density)
    if picked.empty:
        have = sorted(frame["density_key"].unique(), reverse=True)
        raise ValueError(
            f"density: no ticket has a level within a factor {CLOSE:g} of {report.density:g} "
            f"({report.density / CLOSE:.4g} to {min(1.0, report.density * CLOSE):.4g}); "
            f"densities in the results: {', '.join(f'{d:g}' for d in have)}"
        )
    report.densities = picked.groupby("label", sort=True)["density"].mean().astype(float).to_dict()
    report.left_out = far_levels(frame, report.density).set_index("label")["density"].astype(float).to_dict()


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub markdown table of ``table`` (index as the first column), cells as text."""
    index = table.index.name or ""
    header = [index] + [str(c) if not isinstance(c, float) else f"{c:g}" for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, row in table.iterrows():
        lines.append("| " + " | ".join([str(label)] + ["–" if pd.isna(v) else str(v) for v in row]) + " |")
    return "\n".join(lines)


def _markdown(ctx: Context) -> str:
    """The report's tables as markdown, for a results README beside the HTML page."""
    frame, report = ctx.frame, ctx.report
    parts = [
        f"Results root `{ctx.root}`: {frame['run_id'].nunique()} runs, {len(frame)} levels, "
        f"{frame['seed'].nunique() if 'seed' in frame else '?'} seeds. Metric `{ctx.metric}`"
        f"{' (percent)' if ctx.scale == 100 else ''}. Columns: density (fraction of weights kept), densest first.",
        "",
        f"Mean over seeds per ticket and density; `*`: Welch's t-test against **{report.baseline}** at the same "
        f"density gives p < {ctx.alpha:g}.",
        "",
        markdown_table(format_significance(ctx.means, ctx.significant, ctx.scale)),
        "",
        "Mean ± std (number of seeds):",
        "",
        markdown_table(summary_cells(ctx.summary, ctx.scale)),
    ]
    if not ctx.wins.empty:
        parts += ["", "Winning tickets (003): winning seeds / seeds.", "", markdown_table(ctx.wins)]
    return "\n".join(parts) + "\n"


def density_statement(report: Report) -> str:
    """``near density 0.05 (levels used 0.0488–0.0512; left out, no level within ×1.5: supermask (0.5))``."""
    text = f"near density {report.density:g} (levels used {report.used()}"
    if report.left_out:
        far = ", ".join(f"{label} ({d:.4g})" for label, d in report.left_out.items())
        text += f"; left out, no level within ×{CLOSE:g}: {far}"
    return text + ")"


def _page(ctx: Context, sections: list[str]) -> str:
    frame, report = ctx.frame, ctx.report

    def count(col: str) -> str:
        return str(frame[col].nunique()) if col in frame else "?"

    def values(col: str) -> str:
        return html.escape(", ".join(sorted(map(str, frame[col].unique()))) if col in frame else "")

    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    chosen = (
        f" ({html.escape(report.baseline_reason)}; <code>--baseline</code> picks another)"
        if report.baseline_reason
        else ""
    )
    head = (
        f"<p>Results root <code>{html.escape(str(ctx.root))}</code>: {count('run_id')} runs, {len(frame)} levels, "
        f"{count('seed')} seeds; models {values('model')}; datasets {values('dataset')}. "
        f"Metric <code>{html.escape(ctx.metric)}</code>, baseline <b>{html.escape(report.baseline)}</b>{chosen}; "
        f"masks compared {html.escape(density_statement(report))}, {html.escape(report.density_reason)}. "
        f"Written {stamp}.</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'  # no favicon request: the page makes no network access at all
        f"<title>ticketlab report: {html.escape(ctx.root.name or str(ctx.root))}</title><style>{_CSS}</style></head>"
        f"<body><h1>ticketlab report</h1>{head}{''.join(sections)}</body></html>\n"
    )
