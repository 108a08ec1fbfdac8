"""Behaviour pinned across refactors: a handful of small runs, one per method family, must give the masks,
final weights and metrics recorded in ``tests/pinned_runs.json``.

Masks are compared exactly (hash of the bits); weights by per-tensor float64 sum and norm, metrics by
value, both to a tolerance that absorbs BLAS rounding on another CPU (a different data order, step count,
seed or rule moves them by orders of magnitude more). Methods whose numbers an issue deliberately changes
(GraSP, data-aware stacked scoring) are not pinned here.

``TICKETLAB_PIN_WRITE=1 pytest tests/test_pinned_runs.py`` rewrites the file; only do that for a change
that is meant to change numbers, and say so in the commit.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pytest
import torch

from ticketlab.api import prune
from ticketlab.config import ExperimentSpec, MethodSpec, Recipe
from ticketlab.experiment import run_experiment
from ticketlab.experiment.lockstep import run_experiments
from ticketlab.files import load_tensors

PINNED = Path(__file__).with_name("pinned_runs.json")
MODEL = "mlp:784-32-16-10"
RECIPE = Recipe(steps="30it", batch_size=50, lr=0.05, momentum=0.9, eval_every="10it")
METRICS = (
    "density",
    "kept",
    "test_acc",
    "test_loss",
    "val_acc",
    "val_loss",
    "early_stop_step",
    "start_step",
    "end_step",
)


def spec(name: str, densities=(0.5,), model: str = MODEL, controls=(), **method) -> ExperimentSpec:
    return ExperimentSpec(
        model=model,
        dataset="synthetic",
        val_size=200,
        recipe=RECIPE,
        densities=densities,
        controls=controls,
        method=MethodSpec(name=name, **method),
    )


CASES = {
    "lottery": spec("lottery", densities=(0.5,), controls=("reinit", "shuffle_mask")),
    "oneshot_snip": spec("oneshot", densities=(0.3, 0.1), criterion="snip"),
    "multishot_synflow": spec("multishot", densities=(0.1,), criterion="synflow", rounds=5),
    "sgimp_layerwise": spec("sgimp:50%", densities=(0.6,), scope="layerwise"),
    "supermask": spec("supermask", densities=(0.3,), options={"thresholds": [0.0, 0.05]}),
    "tom": spec("tom", densities=(0.2,), options={"mask_steps": "20it"}),
    "double_pruning": spec("double_pruning", densities=(0.64,), options={"regrow": 0.2}),
    "scored_pruning": spec("scored_pruning", densities=(0.64,), options={"regrow": 0.2, "regrow_every": "10it"}),
    "oneshot_conv": spec("oneshot", model="lenet5", densities=(0.2,), criterion="magnitude"),
}
STACKED = [spec("lottery", densities=(0.64,)).model_copy(update={"seed": s}) for s in (0, 1)]


def digest(run_dir: Path) -> dict:
    """What a run wrote, reduced to comparable numbers: per finished level (and control)."""
    out = {}
    for metrics_file in sorted(run_dir.glob("level_*/**/metrics.json")):
        level = metrics_file.parent
        name = str(level.relative_to(run_dir))
        metrics = json.loads(metrics_file.read_text())
        mask, _ = load_tensors(level / "mask.safetensors")
        final, _ = load_tensors(level / "final.safetensors")
        out[name] = {
            "metrics": {k: metrics.get(k) for k in METRICS},
            "mask": {
                k: hashlib.sha256(v.to(torch.uint8).numpy().tobytes()).hexdigest()[:16] for k, v in sorted(mask.items())
            },
            "weights": {k: [float(v.double().sum()), float(v.double().norm())] for k, v in sorted(final.items())},
        }
    return out


def close(expected, actual, where: str) -> None:
    if isinstance(expected, dict):
        assert sorted(expected) == sorted(actual), where
        for k in expected:
            close(expected[k], actual[k], f"{where}.{k}")
    elif isinstance(expected, list):
        assert len(expected) == len(actual), where
        for i, (e, a) in enumerate(zip(expected, actual)):
            close(e, a, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert a_is_close(expected, actual), f"{where}: expected {expected!r}, got {actual!r}"
    else:
        assert expected == actual, f"{where}: expected {expected!r}, got {actual!r}"


def a_is_close(expected: float, actual) -> bool:
    if actual is None:
        return False
    if math.isnan(expected):
        return math.isnan(actual)
    return math.isclose(expected, actual, rel_tol=2e-4, abs_tol=2e-4)


@pytest.fixture(scope="module")
def produced(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pinned")
    out = {}
    for name, s in CASES.items():
        out[name] = digest(run_experiment(s, root, device="cpu").path)
    for i, result in enumerate(run_experiments(STACKED, root / "stacked", device="cpu")):
        out[f"stacked_seed{i}"] = digest(result.path)
    out["api_lottery"] = digest(
        prune(MODEL, "synthetic", "lottery", 0.8, recipe=RECIPE, val_size=200, out=root / "api", device="cpu").path
    )
    return out


def test_pinned_runs_give_the_recorded_masks_weights_and_metrics(produced):
    if os.environ.get("TICKETLAB_PIN_WRITE") == "1":
        PINNED.write_text(json.dumps(produced, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"rewrote {PINNED.name}")
    expected = json.loads(PINNED.read_text())
    assert sorted(expected) == sorted(produced)
    for name in expected:
        close(expected[name], produced[name], name)
