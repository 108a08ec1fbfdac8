"""Plots that papers show; files are written atomically (PNG via a temporary name)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def plot_accuracy_vs_density(frame: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """Test accuracy vs density (log x, densest on the left as in 003), one line per ticket/control."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for control, group in frame.groupby(frame["control"].fillna("")):
        group = group.sort_values("density", ascending=False)
        ax.plot(group["density"] * 100, group["test_acc"] * 100, marker="o", ms=3, label=control or "ticket")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("density (% of weights kept, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
