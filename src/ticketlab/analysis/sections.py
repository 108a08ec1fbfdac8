"""The sections of the HTML report, one function each: (context) -> HTML (empty when it has nothing to show).

Every plot gets the report's one style map, so a ticket kind has the same colour, marker and line style in
all of them. Plots of masks (overlap, initial values, per-layer density) are drawn once per model: masks
and layers of different models cannot be compared weight by weight.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from ticketlab.analysis import plots
from ticketlab.analysis.overlap import CLOSE, closest_levels, kept_initial_values, overlap_matrix
from ticketlab.analysis.stats import format_significance, significance_table, summarize, winning_table
from ticketlab.analysis.style import Style


@dataclass
class Report:
    """What a report wrote: the HTML page, the PNGs beside it, the baseline and the density it compared
    masks at (asked or chosen) with the density each ticket kind was compared at (mean over seeds) and the
    kinds left out (their closest density)."""

    html: Path
    images: dict[str, Path] = field(default_factory=dict)
    density: float | None = None
    baseline: str = ""
    markdown: Path | None = None  # report.md: the tables as markdown
    baseline_reason: str = ""  # why this baseline, when it was not given
    density_reason: str = ""
    densities: dict[str, float] = field(default_factory=dict)
    left_out: dict[str, float] = field(default_factory=dict)

    def used(self, labels: list[str] | None = None) -> str:
        """The densities masks were compared at, ``0.25`` or ``0.2461–0.25``, over ``labels`` (default all)."""
        values = sorted(d for label, d in self.densities.items() if labels is None or label in labels)
        if not values:
            return "none"
        lo, hi = f"{values[0]:.4g}", f"{values[-1]:.4g}"
        return lo if lo == hi else f"{lo}–{hi}"


@dataclass
class Context:
    """Everything a section reads; the tables several sections and report.md share are computed once."""

    root: Path
    out: Path
    frame: pd.DataFrame  # every row, controls included
    tickets: pd.DataFrame  # rows without a control
    metric: str
    alpha: float
    report: Report
    scale: float  # 100 for accuracies (shown in percent)
    ylabel: str
    styles: dict[str, Style]

    @property
    def density(self) -> float:
        assert self.report.density is not None
        return self.report.density

    @cached_property
    def summary(self) -> pd.DataFrame:
        return summarize(self.frame, self.metric)

    @cached_property
    def significance(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        return significance_table(self.frame, self.report.baseline, self.metric, self.alpha)

    @property
    def means(self) -> pd.DataFrame:
        return self.significance[0]

    @property
    def significant(self) -> pd.DataFrame:
        return self.significance[2]

    @cached_property
    def wins(self) -> pd.DataFrame:
        return winning_table(self.frame)

    def used(self, labels: list[str] | None = None) -> str:
        return self.report.used(labels)

    def at(self, labels: list[str] | None = None) -> str:
        """``near density 0.05 (levels at 0.0488–0.0512)``: asked and used, for titles and headings."""
        used = self.used(labels)
        return f"near density {self.density:g}" + ("" if used == f"{self.density:g}" else f" (levels at {used})")


def image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def table(frame: pd.DataFrame, index: bool = True) -> str:
    """An HTML table in a box that scrolls sideways when the table is wider than the page; the index's
    name heads its column in the one header row."""
    if index and frame.index.name:
        frame = frame.rename_axis(index=None, columns=frame.index.name)
    return '<div class="wide">' + frame.to_html(escape=True, na_rep="–", border=0, index=index) + "</div>"


def note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def summary_cells(summary: pd.DataFrame, scale: float) -> pd.DataFrame:
    """mean ± std (n) per ticket kind (rows) and density (columns, densest first), times ``scale``."""
    columns = sorted(summary["density_key"].unique(), reverse=True)
    out = pd.DataFrame("–", index=sorted(summary["label"].unique()), columns=[f"{c:g}" for c in columns])
    for _, row in summary.iterrows():
        std = "" if pd.isna(row["std"]) else f" ± {row['std'] * scale:.2f}"
        out.loc[row["label"], f"{row['density_key']:g}"] = f"{row['mean'] * scale:.2f}{std} ({int(row['n'])})"
    out.index.name = "ticket"
    return out


def _per_model(frame: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """(model, its rows) for every model in ``frame``; one ("", frame) when it has one model."""
    models = sorted(map(str, frame["model"].unique())) if "model" in frame and len(frame) else []
    if len(models) <= 1:
        yield "", frame
        return
    for model in models:
        yield model, frame[frame["model"].astype(str) == model]


def _key(name: str, model: str) -> str:
    """The image's key and file stem: ``overlap``, or ``overlap_mlp-784-16-10`` per model."""
    return name if not model else f"{name}_{re.sub(r'[^A-Za-z0-9.]+', '-', model).strip('-')}"


def _model_heading(model: str) -> str:
    return f"<h3>{html.escape(model)}</h3>" if model else ""


# -- sections ---------------------------------------------------------------------------------------
def accuracy_section(ctx: Context) -> str:
    """Mean ± std over seeds vs density: the plot and the table."""
    path = plots.plot_mean_std(
        ctx.summary, ctx.out / "accuracy_vs_density.png", ylabel=ctx.ylabel, scale=ctx.scale, styles=ctx.styles
    )
    ctx.report.images["accuracy_vs_density"] = path
    percent = ", percent" if ctx.scale == 100 else ""
    return (
        "<h2>Accuracy vs density</h2>"
        + image(path, f"{ctx.metric} vs density, mean ± std over seeds")
        + note(
            "Mean ± std over seeds (std with one degree of freedom; bands absent for one seed). "
            f"Cells: mean ± std (number of seeds){percent}; columns: density (fraction of weights kept)."
        )
        + table(summary_cells(ctx.summary, ctx.scale))
    )


def significance_section(ctx: Context) -> str:
    """000 figure 5.14: means with Welch's t-test stars against the baseline, and the p-values."""
    means, pvalues, significant = ctx.significance
    base = html.escape(ctx.report.baseline)
    seeds = ctx.frame["seed"].nunique() if "seed" in ctx.frame else 0
    one_seed = " <b>One seed in these results: no cell can be tested, so there are no stars.</b>" if seeds == 1 else ""
    return (
        f"<h2>Significance vs {base}</h2>"
        + note(
            f"Mean {html.escape(ctx.metric)} over seeds per ticket and density (as 000 figure 5.14). "
            f"<b>*</b>: Welch's t-test against <b>{base}</b> at the same density gives p &lt; {ctx.alpha:g} "
            "(000 §4.3); needs at least two seeds on both sides. Rows sorted by the sparsest column." + one_seed
        )
        + table(format_significance(means, significant, ctx.scale))
        + "<details><summary>p-values</summary>"
        + table(pvalues.rename(columns=lambda c: f"{c:g}").map(lambda p: "–" if pd.isna(p) else f"{p:.3g}"))
        + "</details>"
    )


def winning_section(ctx: Context) -> str:
    """003's winning-ticket flag: winning seeds / seeds."""
    if ctx.wins.empty:
        return ""
    return (
        "<h2>Winning tickets</h2>"
        + note(
            "003: a ticket is winning when its test accuracy at its early-stopping step (minimum validation "
            "loss) is at least the dense run's at the dense run's early-stopping step, and that step is no "
            "later. Cells: winning seeds / seeds."
        )
        + table(ctx.wins)
    )


def _span(values: pd.Series) -> str:
    lo, hi = f"{values.min():.4g}", f"{values.max():.4g}"
    return lo if lo == hi else f"{lo}–{hi}"


def levels_section(ctx: Context) -> str:
    """Which level of each ticket kind (and seed) the mask sections compare, at which density, and which
    seeds or kinds are left out because none of their levels is near the density."""
    closest = closest_levels(ctx.frame, ctx.density, factor=None)
    if closest.empty:
        return ""
    closest = closest.assign(off=(closest["density"].astype(float) / ctx.density).map(lambda r: max(r, 1 / r)))
    rows = []
    for label, g in closest.groupby("label", sort=True):
        near, far = g[g["off"] <= CLOSE * (1 + 1e-9)], g[g["off"] > CLOSE * (1 + 1e-9)]
        skipped = ", ".join(f"seed {s} (closest {d:.4g})" for s, d in zip(far["seed"], far["density"]))
        if near.empty:
            rows.append((label, 0, "–", "–", "–", "all: " + skipped))
            continue
        rows.append(
            (
                label,
                near["seed"].nunique(),
                ", ".join(map(str, sorted(set(near["level"])))),
                _span(near["density"].astype(float)),
                f"×{near['off'].max():.3g}",
                skipped or "–",
            )
        )
    view = pd.DataFrame(rows, columns=["ticket", "seeds", "level", "density used", "off by", "left out"])
    reason = html.escape(ctx.report.density_reason)
    return (
        f"<h2>Masks compared near density {ctx.density:g}</h2>"
        + note(
            f"Density {ctx.density:g} ({reason}). The overlap, initial-value and per-layer sections take each "
            f"ticket kind (controls in the initial values) and seed at its level closest to it in log density, "
            f"and only if within a factor {CLOSE:g}; the others are left out, not compared at another density. "
            f"Densities used: {ctx.used()}."
        )
        + table(view, index=False)
    )


def overlap_section(ctx: Context) -> str:
    """Jaccard overlap between the tickets' masks, one heatmap per model."""
    parts = []
    for model, rows in _per_model(ctx.tickets):
        matrix = overlap_matrix(rows, ctx.root, ctx.density)
        if matrix.empty:
            continue
        key = _key("overlap", model)
        title = f"Jaccard overlap{' · ' + model if model else ''}, {ctx.at(list(matrix.index))}"
        ctx.report.images[key] = plots.plot_overlap_heatmap(matrix, ctx.out / f"{key}.png", title=title)
        parts.append(_model_heading(model) + image(ctx.report.images[key], f"Jaccard overlap heatmap {model}".strip()))
    if not parts:
        return ""
    return (
        f"<h2>Mask overlap {html.escape(ctx.at())}</h2>"
        + "".join(parts)
        + note(
            "Jaccard |A∩B| / |A∪B| of the kept weights, per seed (same initial weights), mean over the seeds "
            "both tickets have; each ticket at its level in the table above."
        )
    )


def initial_values_section(ctx: Context) -> str:
    """Histograms of the initial values of the kept weights, one per model."""
    parts = []
    for model, rows in _per_model(ctx.frame):
        values = kept_initial_values(rows, ctx.root, ctx.density)
        if not values:
            continue
        key = _key("initial_values", model)
        title = f"initial values of kept weights{' · ' + model if model else ''}, {ctx.at(list(values))}"
        ctx.report.images[key] = plots.plot_initial_value_hist(
            values, ctx.out / f"{key}.png", title=title, styles=ctx.styles
        )
        parts.append(
            _model_heading(model) + image(ctx.report.images[key], f"histogram of initial values {model}".strip())
        )
    if not parts:
        return ""
    return (
        f"<h2>Initial values of kept weights {html.escape(ctx.at())}</h2>"
        + "".join(parts)
        + note(
            "Tickets: the shared initial weights (level 0 start) at the kept positions; controls: the weights "
            "they started from. In brackets: number of weights over all seeds. The x axis spans the central 99% of "
            "each kind's values (layers' initial scales differ by their fan-in; a few of the widest layer's "
            "values fall outside)."
        )
    )


def layer_density_table(tickets: pd.DataFrame, density: float) -> pd.DataFrame:
    """Mean per-layer density over seeds, one row per ticket kind, at the level closest to ``density``."""
    if "layer_densities" not in tickets:
        return pd.DataFrame()
    picked = closest_levels(tickets, density)
    rows = {}
    for label, group in picked.groupby("label", sort=True):
        dicts = [d for d in group["layer_densities"] if isinstance(d, dict)]
        if dicts:
            rows[label] = pd.DataFrame(dicts).mean()
    out = pd.DataFrame(rows).T
    out.index.name = "ticket"
    return out


def layer_section(ctx: Context) -> str:
    """Per-layer density of each ticket kind, one bar plot and table per model."""
    parts = []
    for model, rows in _per_model(ctx.tickets):
        layers = layer_density_table(rows, ctx.density)
        if layers.empty:
            continue
        key = _key("layer_densities", model)
        title = f"per-layer density{' · ' + model if model else ''}, {ctx.at(list(layers.index))}"
        ctx.report.images[key] = plots.plot_layer_densities(
            layers, ctx.out / f"{key}.png", title=title, styles=ctx.styles
        )
        parts.append(
            _model_heading(model)
            + image(ctx.report.images[key], f"per-layer density bars {model}".strip())
            + table(layers.map(lambda v: "–" if pd.isna(v) else f"{v * 100:.2f}%"))
        )
    return f"<h2>Per-layer density {html.escape(ctx.at())}</h2>" + "".join(parts) if parts else ""


def parameters_section(ctx: Context) -> str:
    """002 figure 1.1: accuracy vs remaining prunable weights across models."""
    if "kept" not in ctx.frame:
        return ""
    path = plots.plot_accuracy_vs_parameters(
        summarize(ctx.tickets, ctx.metric),
        ctx.out / "accuracy_vs_parameters.png",
        ylabel=ctx.ylabel,
        scale=ctx.scale,
        styles=ctx.styles,
    )
    ctx.report.images["accuracy_vs_parameters"] = path
    return (
        "<h2>Accuracy vs remaining parameters</h2>"
        + image(path, "accuracy vs remaining prunable weights")
        + note(
            "As 002 figure 1.1: each point a ticket (mean over seeds), connected along its pruning levels; "
            "models compared at equal parameter count. Counts are prunable weights kept."
        )
    )


SECTIONS: tuple[Callable[[Context], str], ...] = (
    accuracy_section,
    significance_section,
    winning_section,
    levels_section,
    overlap_section,
    initial_values_section,
    layer_section,
    parameters_section,
)

# Sections that compare masks; nothing to compare when every mask is full (density 1).
MASK_SECTIONS: tuple[Callable[[Context], str], ...] = (
    levels_section,
    overlap_section,
    initial_values_section,
    layer_section,
)
