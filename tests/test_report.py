"""The HTML report on real (tiny) runs: contents, overlap and initial values against the run files, the
CLI, and the page in headless Chromium (no console errors, every plot decoded)."""

import base64
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ticketlab import load_results
from ticketlab.analysis.overlap import kept_initial_values, overlap_matrix
from ticketlab.analysis.report import write_report
from ticketlab.cli import app
from ticketlab.cli import common as cli_common
from ticketlab.config.recipe import Recipe
from ticketlab.config.spec import ExperimentSpec, MethodSpec
from ticketlab.experiment.run import run_experiment
from ticketlab.files import load_tensors
from ticketlab.masks import Mask

runner = CliRunner()
cli_common.console.width = cli_common.err.width = 200

PLOTS = ("accuracy_vs_density", "overlap", "initial_values", "layer_densities", "accuracy_vs_parameters")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """2 methods x 2 seeds on synthetic data with a tiny MLP (lottery with the reinit control, one-shot
    SNIP), sharing their initial weights per seed."""
    root = tmp_path_factory.mktemp("runs")
    recipe = Recipe(steps="40it", batch_size=64, lr=0.1, eval_every="20it")
    torch.set_num_threads(1)
    for seed in (0, 1):
        common = dict(model="mlp:784-32-16-10", dataset="synthetic", val_size=200, seed=seed, recipe=recipe)
        run_experiment(
            ExperimentSpec(**common, method=MethodSpec(name="lottery", K=0.5), densities=(0.25,), controls=("reinit",)),
            root,
        )
        run_experiment(ExperimentSpec(**common, method=MethodSpec(name="snip"), densities=(0.5, 0.25)), root)
    return root


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    return write_report(runs, tmp_path_factory.mktemp("report"), baseline="lottery")


def _ticket_mask(runs, frame, method, seed, density):
    row = frame[
        (frame.method == method)
        & (frame.seed == seed)
        & (frame.control == "ticket")
        & (frame.target_density == density)
    ].iloc[0]
    return Mask.load(runs / row.run_id / f"level_{row.level:02d}" / "mask.safetensors"), row


def test_overlap_matches_the_mask_files(runs):
    frame = load_results(runs)
    matrix = overlap_matrix(frame[frame.control == "ticket"], runs, 0.25)
    per_seed = []
    for seed in (0, 1):
        a, _ = _ticket_mask(runs, frame, "lottery", seed, 0.25)
        b, _ = _ticket_mask(runs, frame, "snip", seed, 0.25)
        inter = sum(int((a[k] & b[k]).sum()) for k in a)
        union = sum(int((a[k] | b[k]).sum()) for k in a)
        per_seed.append(inter / union)
    assert matrix.loc["lottery", "snip"] == pytest.approx(sum(per_seed) / 2)
    assert matrix.loc["snip", "lottery"] == matrix.loc["lottery", "snip"]
    assert matrix.loc["lottery", "lottery"] == 1.0
    assert 0 < matrix.loc["lottery", "snip"] < 1


def test_initial_values_are_the_shared_init_at_kept_positions(runs):
    frame = load_results(runs)
    values = kept_initial_values(frame, runs, 0.25)
    assert set(values) == {"lottery", "lottery [reinit]", "snip"}
    expected = []
    for seed in (0, 1):
        mask, _row = _ticket_mask(runs, frame, "snip", seed, 0.25)
        inits = list((runs / "inits").glob(f"*seed{seed}-*.safetensors"))
        assert len(inits) == 1  # one shared initialisation per seed
        init, _ = load_tensors(inits[0])
        expected.append(torch.cat([init[k].flatten()[mask[k].flatten()] for k in sorted(mask)]))
    assert torch.equal(values["snip"], torch.cat(expected))
    assert len(values["lottery"]) == len(values["snip"]) == sum(len(e) for e in expected)
    # reinit starts from fresh weights: not the shared initialisation's values
    assert not torch.equal(values["lottery [reinit]"].sort().values, values["lottery"].sort().values)


def test_report_contents(report):
    page = report.html.read_text()
    assert set(report.images) == set(PLOTS)
    for _name, path in report.images.items():
        assert path.parent == report.html.parent and path.read_bytes()[:4] == b"\x89PNG"
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(PLOTS)
    assert all(base64.b64decode(data)[:4] == b"\x89PNG" for data in images)
    # offline: nothing is fetched (no URLs in src/href, no scripts, no external CSS)
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    for heading in (
        "Accuracy vs density",
        "Significance vs lottery",
        "Winning tickets",
        "Mask overlap",
        "Initial values of kept weights",
        "Per-layer density",
        "Accuracy vs remaining parameters",
    ):
        assert heading in page
    assert report.density == 0.25 and report.baseline == "lottery"
    md = report.markdown.read_text()
    assert "Welch's t-test against **lottery**" in md and "| ticket |" in md and "Winning tickets" in md
    headers = [line for line in md.splitlines() if line.startswith("| ticket |")]
    assert len(headers) >= 2 and all("| 0.25 |" in h for h in headers[:2])  # significance and mean ± std tables
    assert len([line for line in md.splitlines() if line.startswith("| lottery |")]) == 3  # + winning table


def test_dense_only_results_have_no_mask_sections(tmp_path):
    """A layer-size sweep (dense networks only, as 004_layer_size): every mask is full, so the report has the
    accuracy tables and plots but no overlap / initial-value / per-layer sections or images."""
    recipe = Recipe(steps="20it", batch_size=64, lr=0.1, eval_every="20it")
    for model in ("mlp:784-16-10", "mlp:784-32-10"):
        for seed in (0, 1):
            spec = ExperimentSpec(
                model=model, dataset="synthetic", val_size=200, seed=seed, recipe=recipe,
                method=MethodSpec(name="lottery", K=0.5), densities=(1.0,),
            )  # fmt: skip
            run_experiment(spec, tmp_path / "runs")
    report = write_report(tmp_path / "runs", tmp_path / "report")
    assert report.density == 1
    page = report.html.read_text()
    assert "Accuracy vs density" in page
    for heading in ("Mask overlap", "Initial values of kept weights", "Per-layer density", "Masks compared near"):
        assert heading not in page
    assert not any(key.startswith(("overlap", "initial_values", "layer_densities")) for key in report.images)
    assert not list((tmp_path / "report").glob("overlap*.png"))


def test_cli_report(runs, tmp_path):
    result = runner.invoke(app, ["report", str(runs), "--baseline", "snip", "--density", "0.5", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report.html").exists() and "density 0.5" in result.output
    bad = runner.invoke(app, ["report", str(runs), "--baseline", "synflow", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "baseline: 'synflow' is not a method" in bad.output
    missing = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no such results folder" in missing.output


def _browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("headless test needs Debian's chromium and chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tempfile.mkdtemp(prefix='ticketlab-chromium-')}",
        "--window-size=1200,3000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def test_page_in_headless_chromium(report):
    browser = _browser()
    try:
        browser.get(Path(report.html).resolve().as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt])"
        )
        errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
        browser.save_screenshot(str(report.html.parent / "screenshot.png"))
    finally:
        browser.quit()
    assert errors == []
    assert len(images) == len(PLOTS)
    for complete, width, height, alt in images:
        assert complete and width > 300 and height > 200, alt
    assert (report.html.parent / "screenshot.png").stat().st_size > 10_000
