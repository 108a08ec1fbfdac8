"""The sparse training path (``ticketlab.training.sparse``) against the dense masked one: each layer's
products against autograd on the masked dense layer, whole trainings against the fused dense trainer,
and the automatic choice (measured, cached, overridable) with the timing replaced by given numbers."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ticketlab
from ticketlab.config import Recipe
from ticketlab.masks import prunable_parameters, select
from ticketlab.models import build_model, initialize
from ticketlab.training import sparse
from ticketlab.training.fused_sgd import FusedAdam, FusedSGD, for_mlp
from ticketlab.training.loop import train
from ticketlab.training.sparse_step import Evaluation, SparseAdam, SparseSGD


@pytest.fixture
def mode():
    """Set the sparse mode for one test, then back to the environment's (off in the test suite)."""
    yield sparse.set_mode
    sparse.set_mode(None)


def _layer(out=20, inp=30, density=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = (torch.rand(out, inp, generator=g) < density).float()
    w = torch.randn(out, inp, generator=g) * m
    b = torch.randn(out, generator=g)
    return w, m, b


def test_layer_products_equal_autograd_on_the_masked_dense_layer():
    w, m, b = _layer()
    step = SparseSGD([w.clone().unsqueeze(0)], [b.clone().unsqueeze(0)], [m.unsqueeze(0)], Recipe(), [True])
    g = torch.Generator().manual_seed(1)
    a = torch.randn(7, 30, generator=g).requires_grad_(True)
    grad_out = torch.randn(7, 20, generator=g)
    w_ref = w.clone().requires_grad_(True)
    y = F.linear(a, w_ref * m, b)
    (y * grad_out).sum().backward()
    assert torch.allclose(step.layer_forward(0, a.detach(), torch.empty(7, 20)), y.detach(), atol=1e-5)
    assert torch.allclose(step.layer_input_grad(0, grad_out, torch.empty(7, 30)), a.grad, atol=1e-5)
    kept = m.bool()
    # CSR order is row-major, as boolean indexing
    assert torch.allclose(step.weight_grad(0, grad_out, a.detach()), w_ref.grad[kept], atol=1e-5)
    assert step.weight_grad(0, grad_out, a.detach()).numel() == int(kept.sum())


@pytest.mark.parametrize("momentum,decay,l2", [(0.0, 0.0, 0.0), (0.9, 1e-2, 5e-3), (0.0, 1e-2, 0.0)])
def test_layer_updates_equal_the_fused_dense_update(momentum, decay, l2):
    w, m, b = _layer(density=0.2)
    recipe = Recipe(lr=0.1, momentum=momentum, weight_decay=decay, l2=l2)
    dense_w, sparse_w = w.clone().unsqueeze(0), w.clone().unsqueeze(0)
    dense = FusedSGD([dense_w], [b.clone().unsqueeze(0)], [m.unsqueeze(0)], recipe)
    step = SparseSGD([sparse_w], [b.clone().unsqueeze(0)], [m.unsqueeze(0)], recipe, [True])
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        a, grad_out = torch.randn(5, 30, generator=g), torch.randn(5, 20, generator=g)
        dense._update_weight(dense_w, grad_out.mT.unsqueeze(0), a.unsqueeze(0), dense.masks[0], 0.1)
        dense._update_bias(dense.biases[0], grad_out.unsqueeze(0), 0.1)
        step.layer_update(0, grad_out, a, 0.1)
    assert torch.allclose(sparse_w, dense_w, atol=1e-6)
    assert torch.allclose(step.biases[0], dense.biases[0], atol=1e-6)
    assert torch.equal(sparse_w[0][m == 0], torch.zeros(int((m == 0).sum())))  # exactly zero


@pytest.mark.parametrize("decay,l2", [(0.0, 0.0), (1e-2, 5e-3)])
@pytest.mark.parametrize("compact", ["off", "on"])
def test_adam_layer_steps_equal_the_fused_dense_adam_step(decay, l2, compact, monkeypatch):
    """Two layers, the first in CSR, the second dense (its Adam dense or over its kept weights): three
    steps of SparseAdam's parts equal FusedAdam's, and pruned weights stay exactly 0."""
    monkeypatch.setenv("TICKETLAB_COMPACT_ADAM", compact)
    (w0, m0, b0), (w1, m1, b1) = _layer(20, 30, 0.2, seed=0), _layer(10, 20, 0.4, seed=1)
    recipe = Recipe(optimizer="adam", lr=1e-2, weight_decay=decay, l2=l2)

    def tensors():
        return [w0.clone().unsqueeze(0), w1.clone().unsqueeze(0)], [b0.clone().unsqueeze(0), b1.clone().unsqueeze(0)]

    masks = [m0.unsqueeze(0), m1.unsqueeze(0)]
    (dw, db), (sw, sb) = tensors(), tensors()
    dense = FusedAdam(dw, db, masks, recipe)
    step = SparseAdam(sw, sb, masks, recipe, [True, False])
    assert [c is not None for c in step.csr] == [True, False]
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        a0, a1 = torch.randn(5, 30, generator=g), torch.randn(5, 20, generator=g).clamp_min(0)
        g0, g1 = torch.randn(5, 20, generator=g), torch.randn(5, 10, generator=g)
        for fused in (dense, step):
            fused.begin()
            for i, (a, grad_out) in enumerate(((a0, g0), (a1, g1))):
                fused.layer_update(i, grad_out, a, 0.01)
            fused.end(0.01)
    assert step.compacted[0] and step.compacted[1] == dense.compacted[1] == (compact == "on")
    for s_t, d_t in zip(sw + sb, dw + db):
        assert torch.allclose(s_t, d_t, atol=1e-6)
    assert not torch.equal(sw[0], w0.unsqueeze(0))  # it moved
    for w, m in zip(sw, masks):
        assert torch.equal(w[m == 0], torch.zeros(int((m == 0).sum())))  # exactly zero


def _net_and_mask(density=0.1, dropout=0.0):
    net = initialize(build_model("mlp:784-48-24-10", dropout=dropout), seed=3)
    g = torch.Generator().manual_seed(0)
    scores = {k: torch.rand(p.shape, generator=g) for k, p in prunable_parameters(net).items()}
    return net, dict(select(scores, density).items())


RECIPES = {
    "plain": Recipe(steps="30it", batch_size=50, lr=0.1, eval_every="10it"),
    "momentum_decay_l2": Recipe(
        steps="30it", batch_size=50, lr=0.05, momentum=0.9, weight_decay=1e-3, l2=1e-3, eval_every="10it"
    ),
    "adam": Recipe(steps="30it", batch_size=50, optimizer="adam", lr=1e-3, eval_every="10it"),
    "adam_decay_l2": Recipe(
        steps="30it", batch_size=50, optimizer="adam", lr=2e-3, weight_decay=1e-3, l2=1e-3, eval_every="10it"
    ),
}


@pytest.mark.parametrize("name", [*RECIPES, "dropout"])
def test_training_equals_the_dense_masked_trainer(name, synthetic, mode):
    recipe = RECIPES.get(name, RECIPES["plain"])
    net, mask = _net_and_mask(dropout=0.3 if name == "dropout" else 0.0)
    runs = {}
    for chosen in ("off", "on"):
        mode(chosen)
        model = copy.deepcopy(net)
        runs[chosen] = (model, train(model, synthetic, recipe, mask=mask, seed=4))
    (dense, dense_result), (sparse_model, sparse_result) = runs["off"], runs["on"]
    assert dense_result.sparse_training is None
    report = sparse_result.sparse_training
    assert report["mode"] == "on" and all(layer["sparse"] for layer in report["layers"].values())
    assert sorted(report["layers"]) == sorted(mask)
    moved = False
    for key, p in sparse_model.state_dict().items():
        reference = dense.state_dict()[key]
        assert torch.allclose(p, reference, atol=2e-5, rtol=1e-4), key
        if key in mask:
            assert torch.equal(p[~mask[key]], torch.zeros(int((~mask[key]).sum())))  # pruned: exactly 0
            moved |= not torch.equal(p, net.state_dict()[key])
    assert moved
    for row, reference in zip(sparse_result.history, dense_result.history, strict=True):
        assert row["val_loss"] == pytest.approx(reference["val_loss"], rel=1e-4)
        assert row["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-4, nan_ok=True)


def test_paths_it_does_not_cover_stay_dense(synthetic, mode):
    mode("on")
    net, mask = _net_and_mask()
    nesterov = Recipe(steps="5it", batch_size=50, lr=0.1, momentum=0.9, nesterov=True)
    assert train(copy.deepcopy(net), synthetic, nesterov, mask=mask).sparse_training is None  # autograd's step
    assert train(copy.deepcopy(net), synthetic, RECIPES["plain"], end_step=5).sparse_training is None  # no mask


def _fused(net, mask, recipe):
    named = dict(net.named_parameters())
    views = {k: p.detach().unsqueeze(0) for k, p in named.items()}
    return for_mlp(net, views, {k: v.float().unsqueeze(0) for k, v in mask.items()}, recipe)


def test_a_layer_kept_whole_or_emptied_stays_dense(mode):
    mode("on")
    net, mask = _net_and_mask()
    mask["layers.1.weight"] = torch.zeros_like(mask["layers.1.weight"])
    mask["layers.2.weight"] = torch.ones_like(mask["layers.2.weight"])
    step, evaluation, report = sparse.replace(_fused(net, mask, Recipe()), Recipe(), torch.device("cpu"))
    assert isinstance(step, SparseSGD) and [c is not None for c in evaluation.csr] == [True, False, False]
    assert [c is not None for c in step.csr] == [True, False, False]
    assert list(report["layers"]) == ["layers.0.weight"]


def test_off_leaves_the_fused_step_itself(mode):
    mode("off")
    net, mask = _net_and_mask()
    fused = _fused(net, mask, Recipe())
    assert sparse.replace(fused, Recipe(), torch.device("cpu")) == (fused, None, None)


def test_auto_measures_once_caches_and_takes_the_faster_path(mode, monkeypatch, tmp_path):
    mode("auto")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []
    timings = {"sparse_wins": (2e-3, 1e-3), "dense_wins": (1e-3, 2e-3), "too_close": (1e-3, 0.95e-3)}
    now = {"verdict": "sparse_wins"}

    def fake_measure(weights, masks, recipe, dense, candidate):
        calls.append(([tuple(w.shape[1:]) for w in weights], list(dense), list(candidate)))
        return timings[now["verdict"]]

    monkeypatch.setattr(sparse, "measure", fake_measure)
    eval_times = {"now": (1e-3, 0.5e-3)}
    monkeypatch.setattr(sparse, "measure_eval", lambda weight, mask, chunk, first, dense_chunk: eval_times["now"])
    net = initialize(build_model("mlp:784-64-32-10"), seed=0)
    g = torch.Generator().manual_seed(0)
    mask = dict(select({k: torch.rand(p.shape, generator=g) for k, p in prunable_parameters(net).items()}, 0.05))
    recipe = Recipe(batch_size=60)
    fused = _fused(net, mask, recipe)
    step, evaluation, report = sparse.replace(fused, recipe, torch.device("cpu"))
    # layers 1 (2048 weights) and 2 (320) are under MIN_AUTO_WEIGHTS: not measured, dense; layer 0's
    # whole step is timed without and with it sparse
    shapes = [(64, 784), (32, 64), (10, 32)]
    assert calls == [(shapes, [False, False, False], [True, False, False])]
    assert isinstance(step, SparseSGD) and [c is not None for c in step.csr] == [True, False, False]
    assert list(report["layers"]) == ["layers.0.weight"]
    layer = report["layers"]["layers.0.weight"]
    assert layer["sparse"] and not layer["cached"] and layer["dense_us"] == 2000.0 and layer["sparse_us"] == 1000.0
    assert layer["eval_sparse"] and layer["eval_dense_us"] == 1000.0 and layer["eval_sparse_us"] == 500.0
    assert [c is not None for c in evaluation.csr] == [True, False, False]
    (key,) = json.loads((tmp_path / "ticketlab" / sparse.CACHE_FILE).read_text())
    densities = [float(m.float().mean()) for m in mask.values()]
    assert key == sparse.cache_key(shapes, densities, 60, "sgd") + " | eval chunk 4096"  # widest layer 64
    assert sparse.cache_key(shapes, densities, 60, "adam") != sparse.cache_key(shapes, densities, 60, "sgd")
    # a second level of the same buckets reads the verdict back instead of measuring
    step, evaluation, report = sparse.replace(_fused(net, mask, recipe), recipe, torch.device("cpu"))
    assert len(calls) == 1 and report["layers"]["layers.0.weight"]["cached"] and isinstance(step, SparseSGD)
    # training and evaluation are chosen each by its own timing
    (tmp_path / "ticketlab" / sparse.CACHE_FILE).unlink()
    eval_times["now"] = (1e-3, 0.95e-3)
    step, evaluation, report = sparse.replace(_fused(net, mask, recipe), recipe, torch.device("cpu"))
    assert isinstance(step, SparseSGD) and report["layers"]["layers.0.weight"]["eval_sparse"] is False
    assert evaluation is None
    # a damaged cached verdict is measured again
    (tmp_path / "ticketlab" / sparse.CACHE_FILE).write_text(json.dumps({key: {"0": {"sparse": "yes"}}}))
    before = len(calls)
    step, evaluation, report = sparse.replace(_fused(net, mask, recipe), recipe, torch.device("cpu"))
    assert len(calls) == before + 1 and not report["layers"]["layers.0.weight"]["cached"]
    # where dense training is faster, or sparse is not faster by the margin, the fused step itself is kept
    eval_times["now"] = (1e-3, 0.5e-3)
    for now["verdict"] in ("dense_wins", "too_close"):
        (tmp_path / "ticketlab" / sparse.CACHE_FILE).unlink()
        fused = _fused(net, mask, recipe)
        step, evaluation, report = sparse.replace(fused, recipe, torch.device("cpu"))
        assert step is fused and report["layers"]["layers.0.weight"]["sparse"] is False
        assert report["layers"]["layers.0.weight"]["eval_sparse"] and evaluation is not None  # still its own
    # a layer denser than MAX_AUTO_DENSITY is not measured
    dense_mask = dict(select({k: torch.rand(p.shape, generator=g) for k, p in prunable_parameters(net).items()}, 0.5))
    calls.clear()
    fused = _fused(net, dense_mask, recipe)
    assert sparse.replace(fused, recipe, torch.device("cpu")) == (fused, None, None) and calls == []


def test_auto_chooses_layers_greedily_from_the_largest(mode, monkeypatch, tmp_path):
    """Two eligible layers: the largest is timed first; the second is timed on top of the first's choice."""
    mode("auto")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []

    def fake_measure(weights, masks, recipe, dense, candidate):
        calls.append((list(dense), list(candidate)))
        return (1e-3, 0.5e-3) if candidate == [True, False, False] else (0.5e-3, 0.6e-3)

    monkeypatch.setattr(sparse, "measure", fake_measure)
    monkeypatch.setattr(sparse, "measure_eval", lambda weight, mask, chunk, first, dense_chunk: (1e-3, 2e-3))
    net = initialize(build_model("mlp:784-64-128-10"), seed=0)
    g = torch.Generator().manual_seed(0)
    mask = dict(select({k: torch.rand(p.shape, generator=g) for k, p in prunable_parameters(net).items()}, 0.05))
    step, evaluation, report = sparse.replace(_fused(net, mask, Recipe()), Recipe(), torch.device("cpu"))
    assert calls == [([False, False, False], [True, False, False]), ([True, False, False], [True, True, False])]
    assert [c is not None for c in step.csr] == [True, False, False] and evaluation is None
    assert [report["layers"][f"layers.{i}.weight"]["sparse"] for i in (0, 1)] == [True, False]


def test_measure_times_whole_steps_on_copies():
    net, mask = _net_and_mask(density=0.05)
    weights = [m.weight for m in net.layers]
    before = [w.detach().clone() for w in weights]
    masks = [mask[f"layers.{i}.weight"].float() for i in range(3)]
    for k in (1, 3):  # one model, K stacked
        stacked = [w.unsqueeze(0).expand(k, -1, -1) for w in weights]
        for recipe in (Recipe(batch_size=8), Recipe(batch_size=8, optimizer="adam")):
            ms = [m.expand(k, -1, -1) for m in masks]
            dense_s, sparse_s = sparse.measure(stacked, ms, recipe, [False] * 3, [True, False, False])
            assert dense_s > 0 and sparse_s > 0
    assert all(torch.equal(w, b) for w, b in zip(weights, before))


def test_measure_eval_times_both_products_on_copies():
    w, m, _ = _layer(out=40, inp=50, density=0.05)
    before = w.clone()
    for k, first in ((1, True), (3, True), (3, False)):
        stacked = torch.nn.Parameter(w.unsqueeze(0).repeat(k, 1, 1))
        dense_s, sparse_s = sparse.measure_eval(stacked, m.expand(k, -1, -1), 64, first, 128)
        assert dense_s > 0 and sparse_s > 0
        assert torch.equal(stacked.detach(), before.expand(k, -1, -1))


def test_evaluation_through_the_csr_equals_the_dense_model(mode):
    """The evaluation in columns, with a CSR first layer, against ``evaluate`` of the model, before and
    after training steps (the CSR holds the current weights); a split is transposed once."""
    from ticketlab.training.evaluate import evaluate, evaluate_columns

    mode("on")
    net, mask = _net_and_mask(density=0.1)
    with torch.no_grad():
        for key, keep in mask.items():
            net.get_parameter(key).mul_(keep)
    recipe = Recipe(lr=0.1, batch_size=20)
    step, evaluation, _ = sparse.replace(_fused(net, mask, recipe), recipe, torch.device("cpu"))
    assert [c is not None for c in evaluation.csr] == [True, True, True]
    g = torch.Generator().manual_seed(5)
    x, y = torch.rand(700, 1, 28, 28, generator=g), torch.randint(0, 10, (700,), generator=g)
    for _ in range(2):
        reference = evaluate(net, x, y)
        (got,) = evaluation(x, y)
        assert got["acc"] == reference["acc"] and got["loss"] == pytest.approx(reference["loss"], rel=1e-5)
        step.step(x[:20].unsqueeze(0), y[:20].unsqueeze(0), 0.5)
    assert len(evaluation._columns) == 1
    # training dense (the fused step itself) and evaluating sparse: the CSR follows the trained weights
    fused = _fused(net, mask, recipe)
    evaluation = Evaluation(fused.weights, fused.biases, fused.masks, [True] * 3, 256)
    for _ in range(2):
        fused.step(x[:20].unsqueeze(0), y[:20].unsqueeze(0), 0.5)
        (got,), reference = evaluation(x, y), evaluate(net, x, y)
        assert got["acc"] == reference["acc"] and got["loss"] == pytest.approx(reference["loss"], rel=1e-5)
    # dense weights in columns: the same function, no CSR
    layers = list(net.layers)
    (plain,) = evaluate_columns(
        x.flatten(1).mT.contiguous(), y, [m.weight.detach() for m in layers], [m.bias.detach() for m in layers], 256
    )
    assert plain["loss"] == pytest.approx(evaluate(net, x, y)["loss"], rel=1e-5)
    (empty,) = evaluate_columns(x.flatten(1).mT[:, :0], y[:0], [layers[0].weight], [layers[0].bias], 256)
    assert np.isnan(empty["loss"]) and np.isnan(empty["acc"])


def test_density_buckets():
    assert sparse.bucket(0.01) == sparse.bucket(0.009) != sparse.bucket(0.02)
    assert sparse.bucket(1 / 64) == "0.011-0.0156"  # (2^-6.5, 2^-6]


def test_a_bad_mode_is_one_clear_error(monkeypatch, mode):
    monkeypatch.setenv(sparse.ENV, "fast")
    with pytest.raises(ValueError, match=r"TICKETLAB_SPARSE_TRAINING must be one of auto, on, off; got 'fast'"):
        sparse.mode()
    with pytest.raises(ValueError, match="sparse training mode must be one of"):
        mode("yes")


def test_cli_rejects_a_bad_mode_before_writing(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ticketlab.cli.app import app

    monkeypatch.setenv(sparse.ENV, "fast")
    out = tmp_path / "runs"
    result = CliRunner().invoke(
        app, ["prune", "--model", "mlp:784-16-10", "--dataset", "synthetic", "--density", "0.5", "--out", str(out)]
    )
    assert result.exit_code == 2 and "TICKETLAB_SPARSE_TRAINING" in result.output
    assert not out.exists() or not any(out.rglob("*.json"))


def test_levels_record_the_sparse_choice(tmp_path, mode):
    mode("on")
    result = ticketlab.prune(
        "mlp:784-32-16-10",
        "synthetic",
        "lottery",
        0.5,
        K=0.5,
        recipe=Recipe(steps="10it", batch_size=50),
        val_size=200,
        out=tmp_path,
        device="cpu",
    )
    metrics = {p.parent.name: json.loads(p.read_text()) for p in result.path.glob("level_*/metrics.json")}
    assert "sparse_training" not in metrics["level_00"]  # dense: nothing pruned
    assert metrics["level_01"]["sparse_training"]["mode"] == "on"
    assert all(layer["sparse"] for layer in metrics["level_01"]["sparse_training"]["layers"].values())


def test_auto_through_train_measures_for_real_and_matches_the_dense_trainer(synthetic, mode, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    net = initialize(build_model("mlp:784-64-32-10"), seed=0)
    g = torch.Generator().manual_seed(0)
    mask = dict(select({k: torch.rand(p.shape, generator=g) for k, p in prunable_parameters(net).items()}, 0.05))
    recipe = Recipe(steps="10it", batch_size=50, lr=0.1)
    mode("off")
    dense = copy.deepcopy(net)
    train(dense, synthetic, recipe, mask=mask)
    mode("auto")
    model = copy.deepcopy(net)
    report = train(model, synthetic, recipe, mask=mask).sparse_training
    layer = report["layers"]["layers.0.weight"]  # whichever way the timing went
    assert list(report["layers"]) == ["layers.0.weight"] and isinstance(layer["sparse"], bool)
    assert layer["dense_us"] > 0 and layer["sparse_us"] > 0 and not layer["cached"]
    for key, p in model.state_dict().items():
        assert torch.allclose(p, dense.state_dict()[key], atol=2e-5, rtol=1e-4), key


def test_the_benchmark_report_compares_the_modes_per_round_and_per_level():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "sparse_training.py"
    spec = importlib.util.spec_from_file_location("sparse_training_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def rows(train_time, chosen):
        report = {
            "mode": "auto",
            "layers": {"layers.0.weight": {"sparse": chosen, "dense_us": 900.0, "sparse_us": 300.0}},
        }
        return [
            {"level": 0, "density": 1.0, "train_time": 2 * train_time, "test_acc": 0.8},
            {"level": 1, "density": 0.02, "train_time": train_time, "test_acc": 0.7, "sparse_training": report},
        ]

    jobs = [
        {"mode": "off", "wall": 30.0, "rows": rows(4.0, False)},
        {"mode": "auto", "wall": 20.0, "rows": rows(2.0, True)},
        {"mode": "on", "wall": 25.0, "rows": rows(1.0, True)},
        {"mode": "off", "wall": 40.0, "rows": rows(6.0, False)},
        {"mode": "auto", "wall": 10.0, "rows": rows(2.0, True)},
        {"mode": "on", "wall": 50.0, "rows": rows(3.0, True)},
    ]
    text = bench.markdown(jobs, 1, "1 1 1", "2 2 2", 99.0)
    assert "| 1 | 30.0 | 20.0 | 25.0 | 1.50x | 1.20x |" in text
    assert "| 2 | 40.0 | 10.0 | 50.0 | 4.00x | 0.80x |" in text
    assert "| median | 35.0 | 15.0 | 37.5 | 2.75x | 1.00x |" in text
    # per level: medians over the rounds (off 4 and 6 -> 5), auto's sparse layers and verdicts
    assert "| 1 | 0.0200 | 5.00 | 2.00 | 2.00 | 0 | 0: 900 / 300 | 0.7000 / 0.7000 / 0.7000 |" in text
    assert "| 0 | 1.0000 | 10.00 | 4.00 | 4.00 | - | - |" in text
    assert "| all | | 15.00 | 6.00 | 6.00 | off / auto 2.50x, off / on 2.50x | | |" in text


def test_a_level_on_the_sparse_path_is_its_own_set_up_in_results(tmp_path, mode):
    """Same spec, seed 0 on the sparse path, seed 1 dense: two groups of one seed each, not two seeds."""
    from ticketlab.analysis.stats import summarize

    for seed, path in ((0, "on"), (1, "off")):
        mode(path)
        ticketlab.prune(
            "mlp:784-32-16-10", "synthetic", "lottery", 0.5, K=0.5, seed=seed,
            recipe=Recipe(steps="10it", batch_size=50), val_size=200, out=tmp_path, device="cpu",
        )  # fmt: skip
    frame = ticketlab.load_results(tmp_path)
    pruned = frame[frame["level"] == 1]
    assert sorted(pruned["env.sparse_path"].fillna("-")) == ["-", "on"]  # recorded on seed 0's level only
    table = summarize(frame)
    at_half = table[np.isclose(table["density_key"], 0.5)]
    assert len(at_half) == 2 and set(at_half["n"]) == {1}
    assert any("sparse_path=on" in label for label in at_half["label"])


def test_stacked_evaluation_through_csr_equals_each_models_own(mode):
    """K = 3 models with different masks: their evaluation in columns, the first layer's CSR on the shared
    input and later layers block-diagonal (or dense, 3-D), equals each model's ``evaluate``."""
    from ticketlab.training.evaluate import evaluate

    net, _ = _net_and_mask()
    g = torch.Generator().manual_seed(3)
    masks = [
        dict(select({k: torch.rand(p.shape, generator=g) for k, p in prunable_parameters(net).items()}, d))
        for d in (0.1, 0.05, 0.2)
    ]
    models = [copy.deepcopy(net) for _ in masks]
    for model, mask in zip(models, masks):
        with torch.no_grad():
            for key, keep in mask.items():
                model.get_parameter(key).mul_(keep)
    names = [f"layers.{i}.{kind}" for i in range(3) for kind in ("weight",)]
    weights = [torch.stack([m.get_parameter(n).detach() for m in models]) for n in names]
    biases = [torch.stack([m.get_parameter(n.replace("weight", "bias")).detach() for m in models]) for n in names]
    stacked_masks = [torch.stack([mask[n].float() for mask in masks]) for n in names]
    x, y = torch.rand(700, 1, 28, 28, generator=g), torch.randint(0, 10, (700,), generator=g)
    for flags in ([True, True, True], [True, False, False], [False, True, False]):
        results = Evaluation(weights, biases, stacked_masks, flags, 256)(x, y)
        for model, got in zip(models, results, strict=True):
            reference = evaluate(model, x, y)
            assert got["acc"] == reference["acc"] and got["loss"] == pytest.approx(reference["loss"], rel=1e-5)


def test_a_level_evaluated_or_trained_sparse_is_marked_in_its_environment():
    from ticketlab.methods.context import _level_env

    def report(**flags):
        return {"mode": "auto", "layers": {"layers.0.weight": {"sparse": False, "eval_sparse": False, **flags}}}

    env = {"torch": "2.13.0"}
    assert _level_env(env, None) == env and _level_env(env, report()) == env
    assert _level_env(env, report(sparse=True))["sparse_path"] == "on"
    assert _level_env(env, report(eval_sparse=True))["sparse_path"] == "on"  # a validation loss can pick weights


def test_block_diagonal_products_equal_each_models_own():
    """K = 3 models' layers in one block-diagonal CSR: forward, input gradient and kept weight gradients
    equal each model's masked dense layer (autograd), and nothing crosses between models."""
    layers = [_layer(density=0.3, seed=s) for s in range(3)]
    w = torch.stack([layer[0] for layer in layers])
    m = torch.stack([layer[1] for layer in layers])
    b = torch.stack([layer[2] for layer in layers])
    step = SparseSGD([w.clone()], [b.clone()], [m], Recipe(), [True])
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 7, 30, generator=g).requires_grad_(True)
    grad_out = torch.randn(3, 7, 20, generator=g)
    w_ref = w.clone().requires_grad_(True)
    y = torch.baddbmm(b.unsqueeze(1), a, (w_ref * m).mT)
    (y * grad_out).sum().backward()
    assert torch.allclose(step.layer_forward(0, a.detach(), torch.empty(3, 7, 20)), y.detach(), atol=1e-5)
    assert torch.allclose(step.layer_input_grad(0, grad_out, torch.empty(3, 7, 30)), a.grad, atol=1e-5)
    kept = m.bool()
    assert torch.allclose(step.weight_grad(0, grad_out, a.detach()), w_ref.grad[kept], atol=1e-5)


@pytest.mark.parametrize("name", ["plain", "momentum_decay_l2", "adam_decay_l2"])
def test_stacked_training_on_the_sparse_path_equals_each_model_trained_dense(name, synthetic, mode):
    """train_many of 3 models with different masks on the block-diagonal sparse path equals each model
    trained alone on the dense path, to float tolerance; pruned weights stay exactly 0."""
    from ticketlab.training.stacked import train_many

    recipe = RECIPES[name]
    net, _ = _net_and_mask()
    g = torch.Generator().manual_seed(7)
    masks = [
        dict(select({k: torch.rand(p.shape, generator=g) for k, p in prunable_parameters(net).items()}, d))
        for d in (0.1, 0.05, 0.2)
    ]
    mode("on")
    stacked = [copy.deepcopy(net) for _ in masks]
    results = train_many(stacked, synthetic, recipe, masks=masks, seeds=[4, 5, 6])
    report = results[0].sparse_training
    assert report["mode"] == "on" and all(layer["sparse"] for layer in report["layers"].values())
    assert all(layer["eval_sparse"] for layer in report["layers"].values())
    mode("off")
    for model, mask, seed, result in zip(stacked, masks, (4, 5, 6), results):
        alone = copy.deepcopy(net)
        reference = train(alone, synthetic, recipe, mask=mask, seed=seed)
        for key, p in model.state_dict().items():
            assert torch.allclose(p, alone.state_dict()[key], atol=2e-5, rtol=1e-4), key
            if key in mask:
                assert torch.equal(p[~mask[key]], torch.zeros(int((~mask[key]).sum())))
        for row, ref in zip(result.history, reference.history, strict=True):
            assert row["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-4)


def test_runs_whose_sparser_levels_took_the_sparse_path_stay_one_curve(tmp_path, mode):
    """Two seeds, both on the sparse path at their pruned level and dense at level 0: no density cell
    mixes the two set-ups, so the kind keeps one label and the cell pools its two seeds."""
    from ticketlab.analysis.stats import labels, summarize

    mode("on")
    for seed in (0, 1):
        ticketlab.prune(
            "mlp:784-32-16-10", "synthetic", "lottery", 0.5, K=0.5, seed=seed,
            recipe=Recipe(steps="10it", batch_size=50), val_size=200, out=tmp_path, device="cpu",
        )  # fmt: skip
    frame = ticketlab.load_results(tmp_path)
    assert sorted(frame["env.sparse_path"].fillna("-")) == ["-", "-", "on", "on"]
    assert set(labels(frame)) == {"lottery"}
    table = summarize(frame)
    assert list(table["n"]) == [2, 2] and set(table["label"]) == {"lottery"}


def test_the_conv_benchmark_times_the_same_products_both_ways(monkeypatch):
    """benchmarks/sparse_conv_training.py compares a masked convolution's dense step with im2col + CSR: its
    sparse route gives autograd's output, input gradient and (at kept positions) weight gradient."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "sparse_conv_training.py"
    spec = importlib.util.spec_from_file_location("sparse_conv_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "BATCH", 4)
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(4, 8, 6, 6, generator=g), torch.randn(5, 8, 3, 3, generator=g)
    mask, grad_out = (torch.rand(w.shape, generator=g) < 0.3).float(), torch.randn(4, 5, 6, 6, generator=g)
    y, gx, gw = bench.sparse_step(x, w, mask, grad_out)()
    x_ref, w_ref = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    y_ref = F.conv2d(x_ref, w_ref * mask, padding=1)
    gx_ref, gw_ref = torch.autograd.grad(y_ref, (x_ref, w_ref), grad_out)
    assert torch.allclose(y, y_ref, atol=1e-4) and torch.allclose(gx, gx_ref, atol=1e-4)
    kept = mask.reshape(5, -1) != 0
    assert torch.allclose(gw.values(), gw_ref.reshape(5, -1)[kept], atol=1e-4)
    bench.dense_step(x, w, mask, grad_out)()  # the dense side runs on the same tensors
