"""What a reader sees in the report: distinct and stable series styles, legends and titles clear of the
data, density axes in percent, one mask plot per model, masks compared at the density asked (or said
why not), a default baseline, one density order and tables that scroll. Real tiny runs of two MLPs
where the report reads run files; hand-made result frames elsewhere. Figures are checked through the
artists they draw (captured where they are saved), the page in headless Chromium at a laptop's width."""

import itertools
import math
import re
import shutil
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.colors import to_hex
from typer.testing import CliRunner

from ticketlab.analysis import plots
from ticketlab.analysis.report import write_report
from ticketlab.analysis.stats import baseline_label, default_baseline, significance_table, summarize, welch_p
from ticketlab.analysis.style import PALETTE, density_ticks, percent, series_styles, styles_for
from ticketlab.cli import app
from ticketlab.cli import common as cli_common
from ticketlab.config.recipe import Recipe
from ticketlab.config.spec import ExperimentSpec, MethodSpec
from ticketlab.experiment.run import run_experiment

runner = CliRunner()
cli_common.console.width = cli_common.err.width = 200
MODELS = ("mlp:784-16-10", "mlp:784-8-10")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two models x two seeds: lottery (K=0.5, down to 0.25), one-shot SNIP (0.5, 0.25, 0.06) and one-shot
    random (0.5 only), 20 steps each on synthetic data."""
    root = tmp_path_factory.mktemp("runs")
    recipe = Recipe(steps="20it", batch_size=64, lr=0.1, eval_every="10it")
    torch.set_num_threads(1)
    for model, seed in itertools.product(MODELS, (0, 1)):
        common = dict(model=model, dataset="synthetic", val_size=200, seed=seed, recipe=recipe)
        run_experiment(ExperimentSpec(**common, method=MethodSpec(name="lottery", K=0.5), densities=(0.25,)), root)
        run_experiment(
            ExperimentSpec(**common, method=MethodSpec(name="oneshot", criterion="snip"), densities=(0.5, 0.25, 0.06)),
            root,
        )
        run_experiment(
            ExperimentSpec(**common, method=MethodSpec(name="oneshot", criterion="random"), densities=(0.5,)), root
        )
    return root


class Figures:
    """Every figure the plots save, drawn, keyed by file name."""

    def __init__(self):
        self.figures = {}

    def __call__(self, fig, path):
        fig.canvas.draw()
        self.figures[path.name] = fig
        fig.savefig(path)  # keep the figure open (no plt.close) so the test can read it
        return path

    def colours(self, name):
        """label -> colour of every labelled series in the figure (lines, step histograms, bars)."""
        out = {}
        for ax in self.figures[name].axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                artist = handle.patches[0] if hasattr(handle, "patches") else handle
                colour = (
                    artist.get_color()
                    if hasattr(artist, "get_xdata")
                    else (artist.get_facecolor() if artist.get_fill() else artist.get_edgecolor())
                )
                out[re.sub(r" \(\d+\)$", "", label)] = to_hex(colour)
        return out


@pytest.fixture
def figures(monkeypatch):
    captured = Figures()
    monkeypatch.setattr(plots, "_save", captured)
    yield captured
    plt.close("all")


def rows(method, densities, accs, *, criterion=None, model="mlp", control=""):
    return [
        dict(
            method=method,
            criterion=criterion,
            control=control,
            density=d,
            target_density=d,
            test_acc=acc - (1 - d) / 10,
            seed=seed,
            level=i,
            kept=int(d * 1000),
            model=model,
            dataset="synthetic",
            run_id=f"{method}{criterion}{model}{seed}",
        )
        for i, d in enumerate(densities)
        for seed, acc in enumerate(accs)
    ]


# -- styles -----------------------------------------------------------------------------------------
def lab(colour):
    """CIE L*a*b* (D65) of a hex colour, straight from the sRGB and CIE formulas."""
    c = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ c
    f = [t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116 for t in xyz / np.array([0.95047, 1.0, 1.08883])]
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_fifteen_series_get_fifteen_distinct_colours():
    labels = [f"kind {i:02d}" for i in range(16)]
    styles = series_styles(reversed(labels))
    colours = [styles[label].color for label in labels]
    assert len(set(colours)) == 16
    # distinct to the eye, not just different strings: no pair closer than tab10's own purple and pink
    closest = min(np.linalg.norm(lab(a) - lab(b)) for a, b in itertools.combinations(colours, 2))
    assert closest >= 27
    assert len(PALETTE) >= 20
    # beyond the palette the line style changes: (colour, marker, line style) unique for 80 series
    many = series_styles(f"k{i:02d}" for i in range(80))
    assert len({(s.color, s.marker, s.linestyle) for s in many.values()}) == 80
    # a kind's style depends on the report's labels, not on which plot draws it
    assert styles_for(labels[:3], styles) == styles and styles_for(["new"], styles)["new"].color not in colours[:10]


def test_same_label_same_colour_in_every_plot(runs, tmp_path, figures):
    report = write_report(runs, tmp_path)
    mean = figures.colours("accuracy_vs_density.png")
    assert len(mean) == 6 and len(set(mean.values())) == 6  # 3 kinds x 2 models
    for name in figures.figures:
        if name.startswith(("initial_values", "layer_densities", "accuracy_vs_parameters")):
            seen = figures.colours(name)
            assert seen and all(mean[label] == colour for label, colour in seen.items()), name
    assert report.images


# -- legends, titles, axes --------------------------------------------------------------------------
def _overlap(a, b):
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_legends_sit_outside_the_axes_and_the_heatmap_title_clears_its_colour_bar(tmp_path, figures):
    frame = pd.DataFrame(
        itertools.chain.from_iterable(rows(f"method{i:02d}", [1.0, 0.5, 0.2, 0.1], [0.9, 0.92]) for i in range(16))
    )
    plots.plot_mean_std(summarize(frame), tmp_path / "mean.png")
    fig = figures.figures["mean.png"]
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    assert not _overlap(legend, ax.get_window_extent(renderer))
    assert len(ax.get_legend().get_texts()) == 16
    # 40 series: the figure grows taller so the legend stays beside the axes in two columns, not five
    many = pd.DataFrame(
        itertools.chain.from_iterable(rows(f"method{i:02d}", [1.0, 0.5, 0.2], [0.9, 0.92]) for i in range(40))
    )
    plots.plot_mean_std(summarize(many), tmp_path / "many.png")
    fig = figures.figures["many.png"]
    renderer = fig.canvas.get_renderer()
    legend, axes = fig.axes[0].get_legend().get_window_extent(renderer), fig.axes[0].get_window_extent(renderer)
    assert fig.get_figheight() > 4.5 and legend.height <= axes.height * 1.05 and legend.width < 1.2 * axes.width
    assert not _overlap(legend, axes)
    names = [f"a rather long ticket name number {i}" for i in range(12)]
    matrix = pd.DataFrame(np.eye(12), index=names, columns=names)
    plots.plot_overlap_heatmap(
        matrix,
        tmp_path / "heat.png",
        title="Jaccard overlap · mlp:784-300-100-10, near density 0.05 (levels at 0.0488–0.0512)",
    )
    fig = figures.figures["heat.png"]
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    for axes in fig.axes:  # the heatmap and its colour bar
        assert not _overlap(title, axes.get_window_extent(renderer))
    assert title.x0 >= 0 and title.x1 <= fig.bbox.width  # wrapped to the figure


def test_density_tick_labels_are_percentages(tmp_path, figures):
    assert [percent(v) for v in (100, 10, 1, 0.1, 51.2, 3.2768, 0.0004)] == [
        "100%",
        "10%",
        "1%",
        "0.1%",
        "51.2%",
        "3.28%",
        "0.0004%",
    ]
    frame = pd.DataFrame(rows("lottery", [1.0, 0.5, 0.25, 0.1, 0.01, 0.001], [0.9, 0.92]))
    plots.plot_mean_std(summarize(frame), tmp_path / "a.png")
    ax = figures.figures["a.png"].axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels == ["100%", "50%", "25%", "10%", "1%", "0.1%"]
    assert ax.xaxis_inverted()  # densest on the left
    plots.plot_accuracy_vs_density(frame.assign(control=""), tmp_path / "b.png")  # ticketlab prune's plot
    labels = [t.get_text() for t in figures.figures["b.png"].axes[0].get_xticklabels() if t.get_text()]
    assert labels and all(re.fullmatch(r"[0-9.]+%", text) for text in labels)
    # measured densities closer than the labels' width are thinned, the densest and sparsest kept
    assert density_ticks([100, 80, 64, 51.2, 50, 40.96, 32.77, 30, 25, 12.5, 10]) == [100, 64, 50, 32.77, 25, 10]
    assert density_ticks([100, 80, 64, 51.2, 50, 40.96, 32.77, 30, 25, 12.5, 10], max_labels=13) == [
        100,
        80,
        64,
        51.2,
        40.96,
        32.77,
        25,
        12.5,
        10,
    ]
    imp = [100 * 0.8**k for k in range(24)] + [0.5]  # 25 levels to 0.5%: 9 labels, each >= 0.23 decades apart
    ticks = density_ticks(imp)
    assert len(ticks) == 9 and ticks[0] == 100 and ticks[-1] == 0.5
    assert all(math.log10(a / b) >= math.log10(200) / 10 - 1e-9 for a, b in itertools.pairwise(ticks))


# -- per model --------------------------------------------------------------------------------------
def test_two_models_get_one_mask_plot_each(runs, tmp_path, figures):
    report = write_report(runs, tmp_path)
    slugs = ["mlp-784-16-10", "mlp-784-8-10"]
    for name in ("overlap", "initial_values", "layer_densities"):
        assert name not in report.images
        assert all(f"{name}_{slug}" in report.images for slug in slugs)
    for model, slug in zip(MODELS, slugs):
        heat = figures.figures[f"overlap_{slug}.png"].axes[0]
        names = [t.get_text() for t in heat.get_yticklabels()]
        assert names and all(n.endswith(f"· {model}") for n in names)  # only this model's tickets
        assert set(figures.colours(f"initial_values_{slug}.png")) <= {n for n in report.densities if model in n}
        bars = figures.colours(f"layer_densities_{slug}.png")
        assert bars and all(model in label for label in bars)
    page = report.html.read_text()
    assert page.count("<h3>mlp:784-16-10</h3>") == 3 and page.count("<h3>mlp:784-8-10</h3>") == 3


# -- the density compared ---------------------------------------------------------------------------
def test_density_uses_the_closest_level_and_says_which(runs, tmp_path):
    report = write_report(runs, tmp_path, density=0.05)
    # only SNIP reaches near 0.05 (0.06, x1.2); lottery (0.25) and random (0.5) are left out, not compared
    assert set(report.densities) == {f"oneshot(snip) · {m}" for m in MODELS}
    assert all(d == pytest.approx(0.06, rel=0.01) for d in report.densities.values())
    assert report.left_out[f"lottery · {MODELS[0]}"] == pytest.approx(0.25, rel=0.01)
    assert report.left_out[f"oneshot(random) · {MODELS[0]}"] == pytest.approx(0.5, rel=0.01)
    page = report.html.read_text()
    used = report.used()
    assert all(0.0599 <= float(d) <= 0.0601 for d in used.split("–"))  # k = round(0.06 N) of either model
    assert f"near density 0.05 (levels at {used})" in page
    assert "left out, no level within ×1.5: lottery · mlp:784-16-10 (0.25)" in page
    result = runner.invoke(app, ["report", str(runs), "--density", "0.05", "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert f"near density 0.05 (levels used {used}" in result.output
    far = runner.invoke(app, ["report", str(runs), "--density", "0.01", "--out", str(tmp_path / "far")])
    assert far.exit_code == 2 and "density: no ticket has a level within a factor 1.5 of 0.01" in far.output
    assert "densities in the results: 1, 0.5, 0.25, 0.06" in far.output


# -- the baseline -----------------------------------------------------------------------------------
def test_default_baseline_without_lottery(runs, tmp_path):
    root = tmp_path / "methods"  # the README's methods sweep: one-shot criteria only
    root.mkdir()
    for spec in runs.glob("*/spec.json"):
        if '"oneshot"' in spec.read_text():
            (root / spec.parent.name).symlink_to(spec.parent, target_is_directory=True)
    result = runner.invoke(app, ["report", str(root), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    # SNIP has 3 pruned densities per seed and model, random 1: SNIP has the most samples
    assert f"baseline oneshot(snip) · {MODELS[0]} (no lottery ticket" in result.output
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Significance vs oneshot(snip) · mlp:784-16-10" in page and "no lottery ticket in the results" in page
    # with lottery present the default is the lottery ticket, as before
    frame = pd.DataFrame(
        rows("lottery", [1.0, 0.1], [0.9, 0.9])
        + rows("oneshot", [1.0, 0.5, 0.1], [0.9, 0.9], criterion="snip")
        + rows("lottery", [1.0, 0.5, 0.1], [0.9, 0.9], criterion="movement")
    )
    assert default_baseline(frame) == ("lottery", "the lottery ticket (IMP)")


def test_baseline_by_criterion(runs, tmp_path):
    frame = pd.DataFrame(rows("lottery", [0.1], [0.9, 0.91]) + rows("oneshot", [0.1], [0.8, 0.82], criterion="snip"))
    assert baseline_label(frame, "snip") == "oneshot(snip)"
    assert baseline_label(frame, "oneshot") == "oneshot(snip)"
    pvalues = significance_table(frame, "snip")[1]  # the stars are tested against SNIP
    assert pvalues.loc["lottery", 0.1] == pytest.approx(welch_p([0.9 - 0.09, 0.91 - 0.09], [0.8 - 0.09, 0.82 - 0.09]))
    both = pd.DataFrame(
        rows("oneshot", [0.1], [0.8], criterion="snip") + rows("multishot", [0.1], [0.8], criterion="snip")
    )
    with pytest.raises(
        ValueError, match=r"criterion 'snip' names several tickets, pick one of: multishot\(snip\), oneshot\(snip\)"
    ):
        baseline_label(both, "snip")
    assert baseline_label(both, "multishot(snip)") == "multishot(snip)"
    result = runner.invoke(app, ["report", str(runs), "--baseline", "random", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "criterion 'random' names several tickets" in result.output  # one per model
    result = runner.invoke(
        app, ["report", str(runs), "--baseline", f"oneshot(random) · {MODELS[1]}", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0 and f"baseline oneshot(random) · {MODELS[1]};" in result.output


# -- tables ----------------------------------------------------------------------------------------
def test_tables_scroll_and_run_densest_first(runs, tmp_path):
    report = write_report(runs, tmp_path)
    page = report.html.read_text()
    tables = re.findall(r"<table.*?</table>", page, flags=re.S)
    assert tables and page.count('<div class="wide"><table') == len(tables)
    density_headers = 0
    for t in tables:
        header = re.findall(r"<th>([^<]*)</th>", re.search(r"<thead>.*?</thead>", t, flags=re.S).group(0))
        numbers = [float(h) for h in header if re.fullmatch(r"[0-9.]+", h)]
        if len(numbers) > 1:
            density_headers += 1
            assert numbers == sorted(numbers, reverse=True)
    assert density_headers >= 4  # mean ± std, significance, p-values, winning
    md = report.markdown.read_text()
    for line in md.splitlines():
        if line.startswith("| ticket |"):
            numbers = [float(c) for c in line.strip("| ").split(" | ")[1:]]
            assert numbers == sorted(numbers, reverse=True)


def test_page_at_laptop_width_in_headless_chromium(runs, tmp_path):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("needs Debian's chromium and chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    report = write_report(runs, tmp_path)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1366,768",
        f"--user-data-dir={tempfile.mkdtemp(prefix='ticketlab-chromium-')}",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        browser.get(Path(report.html).resolve().as_uri())
        page_width, view_width, boxes, images = browser.execute_script(
            "const d = document.documentElement;"
            "return [d.scrollWidth, d.clientWidth,"
            " Array.from(document.querySelectorAll('div.wide')).map(b => b.getBoundingClientRect().right),"
            " Array.from(document.images).map(i => [i.getBoundingClientRect().right, i.naturalWidth, i.width])];"
        )
    finally:
        browser.quit()
    assert page_width <= view_width  # nothing makes the page itself scroll sideways
    assert boxes and all(right <= view_width for right in boxes)
    for right, natural, shown in images:
        assert right <= view_width and shown <= natural and shown > 300
