"""How series look in every plot of a report: one distinct colour, marker and line style per ticket kind,
legends beside the axes, and density axes labelled in percent.

Colours: matplotlib's ten (tab10) followed by ten more, each chosen as the candidate farthest (CIE L*a*b*
distance) from those already taken and dark enough to read on white; no two of the twenty are closer than
tab10's own closest pair (purple and pink). Beyond twenty series the line style and the bar hatch change,
so (colour, marker, line style) stays unique for 80 series; markers cycle with a period (7) coprime to the
palette's, a second cue even among the first twenty.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import matplotlib.ticker
import numpy as np
from matplotlib.axes import Axes

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#0000ff",
    "#ff00ff",
    "#000000",
    "#a6761d",
    "#f0027f",
    "#004d00",
    "#911eb4",
    "#1b9e77",
    "#fb9a99",
    "#005f5f",
)
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", "-.", ":")
HATCHES = ("", "//", "..", "xx")
LEGEND_FONTSIZE = 8
MAX_HEIGHT = 10.0  # inches: how tall a figure may grow to fit its legend beside it


@dataclass(frozen=True)
class Style:
    """How one series is drawn."""

    color: str
    marker: str
    linestyle: str
    hatch: str

    def line(self) -> dict[str, str]:
        """Keyword arguments of ``Axes.plot``."""
        return {"color": self.color, "marker": self.marker, "linestyle": self.linestyle}


def style(i: int) -> Style:
    """The ``i``-th series' style."""
    cycle = (i // len(PALETTE)) % len(LINESTYLES)
    return Style(PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)], LINESTYLES[cycle], HATCHES[cycle])


def series_styles(labels: Iterable[str]) -> dict[str, Style]:
    """One style per distinct label, assigned in sorted order: a report computes this once over all its
    labels and passes it to every plot, so a ticket kind has the same colour everywhere on the page."""
    return {label: style(i) for i, label in enumerate(sorted(set(labels)))}


def styles_for(labels: Iterable[str], styles: dict[str, Style] | None) -> dict[str, Style]:
    """``styles`` (a report's shared map) extended by the ``labels`` it lacks, which get the styles after
    its own; a fresh map over ``labels`` when ``styles`` is None."""
    if styles is None:
        return series_styles(labels)
    missing = sorted(set(labels) - set(styles))
    return {**styles, **{label: style(len(styles) + j) for j, label in enumerate(missing)}}


def legend_outside(ax: Axes, title: str | None = None) -> None:
    """The axes' legend to the right of the axes, outside them (figures are saved with a tight bounding
    box, so the image widens instead of the legend covering data). When the entries are taller than the
    axes, the figure first grows taller (to two columns' worth, up to :data:`MAX_HEIGHT` inches: many
    series need the height too), then the legend takes more columns."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    fig = ax.figure
    row_pt = LEGEND_FONTSIZE * 1.9
    share = ax.get_position().height  # of the figure's height; stays when the figure grows
    if len(handles) * row_pt > share * fig.get_figheight() * 72:
        wanted = math.ceil(len(handles) / 2) * row_pt / 72 / share
        fig.set_figheight(max(fig.get_figheight(), min(MAX_HEIGHT, wanted)))
    rows = max(1, int(share * fig.get_figheight() * 72 // row_pt))
    ax.legend(
        handles,
        labels,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        fontsize=LEGEND_FONTSIZE,
        ncol=math.ceil(len(handles) / rows),
        title=title,
        title_fontsize=LEGEND_FONTSIZE,
        frameon=False,
    )


def percent(value: float, _position: object = None) -> str:
    """A density axis tick: the value is already in percent (100 = dense); ``100%``, ``10%``, ``0.1%``,
    ``51.2%``, ``3.28%`` (three significant digits, never a power of ten)."""
    if value <= 0 or not math.isfinite(value):
        return ""
    text = f"{value:.3g}"
    if "e" in text:  # below 0.001%: plain decimals
        text = np.format_float_positional(value, precision=3, fractional=False, trim="-")
    return f"{text}%"


def density_ticks(densities: Sequence[float], max_labels: int = 10) -> list[float]:
    """Tick positions (percent) for the measured ``densities`` (percent): densest first, each at least
    1/``max_labels`` of the axis span (in log scale, at least 0.3 decades) from the previous one so labels
    never overlap, and always the densest and the sparsest. 10 labels: at 13, an IMP schedule of 25 levels
    from 100% to 0.5% put labels such as ``10.7%6.87%4.4%`` edge to edge on a report's axis."""
    values = sorted({float(d) for d in densities if d > 0}, reverse=True)
    if len(values) <= 2:
        return values
    gap = max(math.log10(values[0] / values[-1]), 0.3) / max_labels
    kept = [values[0]]
    for v in values[1:]:
        if math.log10(kept[-1] / v) >= gap:
            kept.append(v)
    if kept[-1] != values[-1]:
        if len(kept) > 1 and math.log10(kept[-1] / values[-1]) < gap:
            kept[-1] = values[-1]
        else:
            kept.append(values[-1])
    return kept


def density_axis(ax: Axes, densities: Sequence[float] = ()) -> None:
    """Log x axis of density in percent, densest on the left (as 003), ticks at the measured densities
    (``densities`` in percent, thinned by :func:`density_ticks`) or at 1-2-5 steps of each decade."""
    ax.set_xscale("log")
    ticks = density_ticks(densities)
    if ticks:
        ax.set_xticks(ticks)
    else:
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(percent))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    ax.set_xlabel("density (weights kept, log scale)")
    ax.grid(True, which="both", alpha=0.3)
