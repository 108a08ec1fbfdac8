"""Plots that papers show; files are written atomically (PNG via a temporary name)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ticketlab.analysis.results import TICKET, is_ticket  # noqa: E402


def plot_accuracy_vs_density(frame: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """Test accuracy vs density (log x, densest on the left as in 003), one line per ticket/control."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for control, group in frame.groupby(frame["control"].map(lambda c: TICKET if is_ticket(c) else c)):
        group = group.sort_values("density", ascending=False)
        ax.plot(group["density"] * 100, group["test_acc"] * 100, marker="o", ms=3, label=control)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("density (% of weights kept, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    """Write the figure atomically (temporary name, then rename) and close it."""
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _density_axis(ax: plt.Axes) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.invert_xaxis()
    ax.set_xlabel("density (% of weights kept, log scale)")
    ax.grid(True, which="both", alpha=0.3)


def plot_mean_std(
    summary: pd.DataFrame, path: str | os.PathLike, ylabel: str = "test accuracy (%)", title: str = "",
    scale: float = 100.0,
) -> Path:
    """Mean ± std over seeds vs density (log x, densest left), one line and band per ticket kind; takes
    the output of :func:`ticketlab.analysis.stats.summarize`; values are multiplied by ``scale``."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, group in summary.groupby("label", sort=True):
        group = group.sort_values("density_key", ascending=False)
        x = group["density_key"].to_numpy() * 100
        mean = group["mean"].to_numpy() * scale
        std = np.nan_to_num(group["std"].to_numpy(dtype=float)) * scale
        (line,) = ax.plot(x, mean, marker="o", ms=3, label=label)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    _density_axis(ax)
    ticks = sorted(set(summary["density_key"] * 100))
    if 0 < len(ticks) <= 12:  # label the densities measured, not just the decades
        ax.set_xticks(ticks)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.set_title(title or "mean ± std over seeds")
    return _save(fig, path)


def plot_overlap_heatmap(matrix: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """Jaccard overlap between ticket kinds as an annotated heatmap (0 = disjoint, 1 = identical)."""
    path = Path(path)
    n = max(len(matrix), 1)
    fig, ax = plt.subplots(figsize=(2.2 + 0.9 * n, 1.8 + 0.8 * n), dpi=120)
    values = matrix.to_numpy(dtype=float)
    image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(matrix.columns)), matrix.columns, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(matrix.index)), matrix.index, fontsize=8)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if not np.isnan(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if values[i, j] > 0.6 else "white")
    fig.colorbar(image, ax=ax, label="Jaccard |A∩B| / |A∪B|")
    ax.set_title(title or "mask overlap")
    return _save(fig, path)


def plot_initial_value_hist(values: dict[str, torch.Tensor], path: str | os.PathLike, title: str = "") -> Path:
    """Histogram (density-normalised, shared bins) of the initial values of the weights each ticket kind
    keeps: magnitude keeps the tails, random keeps the initial distribution."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    nonempty = {k: v.double().numpy() for k, v in values.items() if v.numel()}
    if nonempty:
        lo = min(v.min() for v in nonempty.values())
        hi = max(v.max() for v in nonempty.values())
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-12, 61)
        for label, v in sorted(nonempty.items()):
            ax.hist(v, bins=bins, density=True, histtype="step", linewidth=1.3, label=f"{label} ({len(v)})")
        ax.legend(fontsize=7)
    ax.set_xlabel("initial value of kept weight")
    ax.set_ylabel("density")
    ax.set_title(title or "initial values of kept weights")
    return _save(fig, path)


def plot_layer_densities(table: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """Grouped bars: per layer (x) the fraction of weights each ticket kind keeps; ``table`` has one row
    per ticket kind and one column per layer."""
    path = Path(path)
    layers = list(table.columns)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(layers) + 2), 4.5), dpi=120)
    width = 0.8 / max(len(table), 1)
    x = np.arange(len(layers))
    for i, (label, row) in enumerate(table.iterrows()):
        ax.bar(x + (i - (len(table) - 1) / 2) * width, row.to_numpy(dtype=float) * 100, width, label=label)
    ax.set_xticks(x, layers, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("density of layer (% kept)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title or "per-layer density")
    return _save(fig, path)


def plot_accuracy_vs_parameters(
    summary: pd.DataFrame, path: str | os.PathLike, title: str = "", ylabel: str = "test accuracy (%)",
    scale: float = 100.0,
) -> Path:
    """002 figure 1.1: accuracy vs remaining prunable weights (log x) across models, one connected line
    per model and ticket kind, so a sparse large model can be read against a dense small one."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, group in summary.groupby("label", sort=True):
        group = group.sort_values("kept")
        model = group["model"].iloc[0] if "model" in group else ""
        name = label if not model or str(model) in label else f"{label} · {model}"
        ax.plot(group["kept"], group["mean"] * scale, marker="o", ms=3, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("remaining prunable weights (log scale)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title or "accuracy vs parameter count")
    return _save(fig, path)
