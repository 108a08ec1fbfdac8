"""Plots that papers show; files are written atomically (PNG via a temporary name).

Every plot that draws ticket kinds takes ``styles`` (label -> colour, marker, line style; see
:mod:`ticketlab.analysis.style`) so a report draws a kind the same way in all its plots; legends sit beside
the axes and images are cropped to what they draw (the image widens rather than a legend covering data).
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import torch

from ticketlab.analysis.results import TICKET, is_ticket
from ticketlab.analysis.style import Style, density_axis, legend_outside, styles_for


def plot_accuracy_vs_density(frame: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """Test accuracy vs density (log x, densest on the left as in 003), one line per ticket/control."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    kind = frame["control"].map(lambda c: TICKET if is_ticket(c) else str(c))
    groups = {str(control): g for control, g in frame.groupby(kind)}
    styles = styles_for(groups, None)
    for name, group in groups.items():
        group = group.sort_values("density", ascending=False)
        ax.plot(group["density"] * 100, group["test_acc"] * 100, ms=3, label=name, **styles[name].line())
    density_axis(ax, list(frame["density"] * 100))
    ax.set_ylabel("test accuracy (%)")
    legend_outside(ax)
    ax.set_title(title)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    """Write the figure atomically (temporary name, then rename) and close it; the image is cropped to
    what is drawn, legends beside the axes included."""
    tmp = path.with_name(f".{path.name}.tmp.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(tmp, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_mean_std(
    summary: pd.DataFrame,
    path: str | os.PathLike,
    ylabel: str = "test accuracy (%)",
    title: str = "",
    scale: float = 100.0,
    styles: dict[str, Style] | None = None,
) -> Path:
    """Mean ± std over seeds vs density (log x, densest left), one line and band per ticket kind; takes
    the output of :func:`ticketlab.analysis.stats.summarize`; values are multiplied by ``scale``."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    styles = styles_for(summary["label"], styles)
    kinds = summary["label"].nunique()
    for label, group in summary.groupby("label", sort=True):
        group = group.sort_values("density_key", ascending=False)
        x = group["density_key"].to_numpy() * 100
        mean = group["mean"].to_numpy() * scale
        std = np.nan_to_num(group["std"].to_numpy(dtype=float)) * scale
        ax.plot(x, mean, ms=3, linewidth=1.2, label=label, **styles[label].line())
        ax.fill_between(
            x, mean - std, mean + std, color=styles[label].color, alpha=0.2 if kinds <= 6 else 0.1, linewidth=0
        )
    density_axis(ax, list(summary["density_key"] * 100))
    ax.set_ylabel(ylabel)
    legend_outside(ax)
    ax.set_title(title or "mean ± std over seeds")
    return _save(fig, path)


def plot_overlap_heatmap(matrix: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """Jaccard overlap between ticket kinds as an annotated heatmap (0 = disjoint, 1 = identical). The
    title is the figure's, above the heatmap and its colour bar together (wrapped to the figure's width)."""
    path = Path(path)
    n = max(len(matrix), 1)
    cell = min(0.9, max(0.45, 6.0 / n))  # inches: about 1100 pixels wide at most up to 16 kinds
    fig, ax = plt.subplots(figsize=(2.2 + cell * n, 1.2 + cell * n), dpi=120, layout="constrained")
    values = matrix.to_numpy(dtype=float)
    cmap = plt.get_cmap("viridis")
    image = ax.imshow(values, vmin=0, vmax=1, cmap=cmap)
    ax.set_xticks(range(len(matrix.columns)), matrix.columns, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(matrix.index)), matrix.index, fontsize=8)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if not np.isnan(values[i, j]):
                ax.text(
                    j,
                    i,
                    f"{values[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8 if cell > 0.5 else 7,
                    color="black" if _luminance(cmap(values[i, j])) > 0.179 else "white",
                )
    fig.colorbar(image, ax=ax, label="Jaccard |A∩B| / |A∪B|", shrink=min(1.0, 0.4 + 0.1 * n))
    width_chars = int((2.2 + cell * n) * 72 / 7)  # characters of 11 pt that fit the figure's width
    fig.suptitle(textwrap.fill(title or "mask overlap", max(width_chars, 30)), fontsize=11)
    return _save(fig, path)


def _luminance(rgba: tuple[float, float, float, float]) -> float:
    """Relative luminance (sRGB, BT.709 weights); above 0.179 black text has more contrast than white (WCAG)."""
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def plot_initial_value_hist(
    values: dict[str, torch.Tensor], path: str | os.PathLike, title: str = "", styles: dict[str, Style] | None = None
) -> Path:
    """Histogram (density-normalised, shared bins) of the initial values of the weights each ticket kind
    keeps: magnitude keeps the tails, random keeps the initial distribution. The x axis spans every kind's
    central 99% (:data:`CLIP`); rarer values fall outside the bins. Up to :data:`OVERLAY` kinds
    are drawn over each other; more get one small panel each (shared axes), as overlaid outlines of many
    kinds cannot be told apart."""
    path = Path(path)
    nonempty = {k: v.double().numpy() for k, v in sorted(values.items()) if v.numel()}
    styles = styles_for(values, styles)
    panels = len(nonempty) > OVERLAY
    columns = 4 if panels else 1
    rows = math.ceil(len(nonempty) / columns) if panels else 1
    size = (10.4, 0.4 + 1.7 * rows) if panels else (7.0, 4.5)
    fig, axes = plt.subplots(rows, columns, figsize=size, dpi=120, sharex=True, sharey=True, squeeze=False)
    if nonempty:
        # layers of different fan-in have initial scales that differ by 10x: bins over the full range would
        # squeeze the widest layer's bulk into a few bins, so they span every kind's central 99%
        lo = min(np.quantile(v, CLIP) for v in nonempty.values())
        hi = max(np.quantile(v, 1 - CLIP) for v in nonempty.values())
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-12, 61)
        for i, (label, v) in enumerate(nonempty.items()):
            ax = axes.flat[i] if panels else axes[0, 0]
            style = styles[label]
            ax.hist(
                v,
                bins=bins,
                density=True,
                histtype="step",
                linewidth=1.3,
                color=style.color,
                linestyle=style.linestyle,
                label=f"{label} ({len(v)})",
            )
            if panels:
                ax.set_title(f"{label} ({len(v)})", fontsize=8, color=style.color)
                ax.tick_params(labelsize=7)
        if not panels:
            legend_outside(axes[0, 0], title="ticket (weights)")
    for i, ax in enumerate(axes.flat):
        if i >= (len(nonempty) if panels else 1):
            ax.set_visible(False)
        elif i + columns >= len(nonempty):  # no panel below: its x axis needs its own tick labels
            ax.xaxis.set_tick_params(labelbottom=True)
    text = title or "initial values of kept weights"
    if panels:
        fig.supxlabel("initial value of kept weight", fontsize=9)
        fig.supylabel("density", fontsize=9)
        fig.suptitle(f"{text} (per ticket kind: weights over all seeds)", fontsize=11)
        fig.tight_layout()
    else:
        axes[0, 0].set_xlabel("initial value of kept weight")
        axes[0, 0].set_ylabel("density")
        axes[0, 0].set_title(text)
    return _save(fig, path)


OVERLAY = 6  # histograms drawn over each other in one axes at most
CLIP = 0.005  # the initial-value histogram's x range: from the lowest 0.5% to the highest 99.5% quantile of a kind


def plot_layer_densities(
    table: pd.DataFrame, path: str | os.PathLike, title: str = "", styles: dict[str, Style] | None = None
) -> Path:
    """Grouped bars: per layer (x) the fraction of weights each ticket kind keeps; ``table`` has one row
    per ticket kind and one column per layer."""
    path = Path(path)
    layers = list(table.columns)
    kinds = max(len(table), 1)
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.0, 0.1 * kinds * len(layers) + 1.5)), 4.5), dpi=120)
    width = 0.8 / kinds
    x = np.arange(len(layers))
    styles = styles_for(map(str, table.index), styles)
    for i, (label, row) in enumerate(table.iterrows()):
        style = styles[str(label)]
        ax.bar(
            x + (i - (kinds - 1) / 2) * width,
            row.to_numpy(dtype=float) * 100,
            width,
            label=label,
            color=style.color,
            hatch=style.hatch or None,
            edgecolor="white" if not style.hatch else "black",
            linewidth=0.3,
        )
    ax.set_xticks(x, layers, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("density of layer (% kept)")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}%"))
    ax.grid(True, axis="y", alpha=0.3)
    legend_outside(ax)
    ax.set_title(title or "per-layer density")
    return _save(fig, path)


def plot_accuracy_vs_parameters(
    summary: pd.DataFrame,
    path: str | os.PathLike,
    title: str = "",
    ylabel: str = "test accuracy (%)",
    scale: float = 100.0,
    styles: dict[str, Style] | None = None,
) -> Path:
    """002 figure 1.1: accuracy vs remaining prunable weights (log x) across models, one connected line
    per model and ticket kind, so a sparse large model can be read against a dense small one."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    styles = styles_for(summary["label"], styles)
    several = "model" in summary and summary["model"].nunique() > 1
    for label, group in summary.groupby("label", sort=True):
        group = group.sort_values("kept")
        model = str(group["model"].iloc[0]) if several else ""
        name = label if not model or model in label else f"{label} · {model}"
        ax.plot(group["kept"], group["mean"] * scale, ms=3, linewidth=1.2, label=name, **styles[label].line())
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_count))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("remaining prunable weights (log scale)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    legend_outside(ax)
    ax.set_title(title or "accuracy vs parameter count")
    return _save(fig, path)


def _count(value: float, _position: object = None) -> str:
    """A weight count tick: ``100``, ``10k``, ``1M``."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"
