"""Tickets out of run directories: load_ticket gives the recorded numbers back, exports (dense state dict,
ONNX, sparse CSR module) compute what the ticket computes, and damaged or wrong input is refused."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ticketlab.api import load_ticket, prune
from ticketlab.config import Recipe
from ticketlab.files import CorruptFileError
from ticketlab.tickets import SparseConv2d, SparseLinear, TicketError, export_ticket, load_sparse, sparsify
from ticketlab.training.evaluate import evaluate

RECIPE = Recipe(steps="30it", batch_size=50, lr=0.05, momentum=0.9, eval_every="10it")
MLP = "mlp:784-32-10"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A lottery run of a tiny MLP (levels 0-2, a reinit control on each pruned level) and a one-shot LeNet-5."""
    root = tmp_path_factory.mktemp("tickets")
    mlp = prune(
        MLP, "synthetic", "lottery", 0.64, recipe=RECIPE, val_size=200, out=root, device="cpu", controls=("reinit",)
    )
    conv = prune(
        "lenet5",
        "synthetic",
        "oneshot",
        0.2,
        criterion="magnitude",
        recipe=RECIPE,
        val_size=200,
        out=root,
        device="cpu",
    )
    return {"mlp": mlp.path, "conv": conv.path}


def tickets_of(run):
    """(level, control) of every finished ticket and control of a run."""
    out = []
    for level_dir in sorted(run.glob("level_*")):
        level = int(level_dir.name[6:])
        out.append((level, None))
        out += [(level, d.name) for d in sorted(level_dir.iterdir()) if (d / "metrics.json").exists()]
    return out


def test_load_ticket_gives_the_recorded_test_accuracy_and_loss(runs, synthetic):
    checked = 0
    for run in runs.values():
        for level, control in tickets_of(run):
            ticket = load_ticket(run, level, control)
            got = evaluate(ticket.model, synthetic.x_test, synthetic.y_test)
            assert abs(got["acc"] - ticket.metrics["test_acc"]) <= 1e-6, (run, level, control)
            # the loss is continuous in every weight: a wrong tensor anywhere would show here
            assert got["loss"] == pytest.approx(ticket.metrics["test_loss"], rel=1e-6, abs=1e-6), (run, level, control)
            checked += 1
    assert checked == 3 + 2 + 2  # mlp: levels 0-2 and two reinit controls; lenet5: levels 0-1


def test_ticket_holds_its_mask_start_and_rewind(runs):
    ticket = load_ticket(runs["mlp"], 2)
    level_dir = runs["mlp"] / "level_02"
    assert ticket.spec.model == MLP and ticket.level == 2 and ticket.control is None
    assert (
        ticket.density == pytest.approx(0.64, abs=1e-3)
        and ticket.input_shape == (1, 28, 28)
        and ticket.num_classes == 10
    )
    assert len(ticket.mean) == len(ticket.std) == 1
    params = dict(ticket.model.named_parameters())
    for name, keep in ticket.mask.items():
        assert torch.all(params[name][~keep] == 0) and name in ticket.start
    stored_start = load_file(level_dir / "start.safetensors")
    assert all(torch.equal(ticket.start[k], stored_start[k]) for k in stored_start)
    assert ticket.rewind is not None and not ticket.model.training
    control = load_ticket(runs["mlp"], 1, "reinit")
    assert control.rewind is None and control.control == "reinit"
    # "ticket", the results tables' name for the ticket itself, loads the ticket (the same level as None)
    named = load_ticket(runs["mlp"], 2, "ticket")
    assert named.control is None and named.path == ticket.path and named.mask == ticket.mask
    # default: the last finished level; also at the package's top
    assert load_ticket(runs["mlp"]).level == 2
    import ticketlab

    assert ticketlab.load_ticket is load_ticket


def test_levels_are_listed_by_number(tmp_path):
    from ticketlab.store import RunDir

    for level in (0, 2, 10, 100):
        (tmp_path / f"level_{level:02d}").mkdir()
        (tmp_path / f"level_{level:02d}" / "metrics.json").write_text("{}")
    (tmp_path / "level_03").mkdir()  # not finished
    (tmp_path / "level_02" / "reinit").mkdir()
    (tmp_path / "level_02" / "reinit" / "metrics.json").write_text("{}")
    (tmp_path / "level_02" / "shuffle_mask").mkdir()  # not finished
    run = RunDir(tmp_path)
    assert run.levels() == [0, 2, 10, 100] and run.controls(2) == ["reinit"] and run.controls(3) == []


def test_runs_written_before_data_json_still_load(runs, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(runs["mlp"], old)
    (old / "data.json").unlink()
    a, b = load_ticket(runs["mlp"], 1), load_ticket(old, 1)  # b reads the shape off the dataset
    assert (a.input_shape, a.num_classes, a.mean, a.std) == (b.input_shape, b.num_classes, b.mean, b.std)


@pytest.mark.parametrize("name", ["final.safetensors", "mask.safetensors", "start.safetensors"])
def test_a_damaged_file_is_refused_by_name(runs, tmp_path, name):
    copy = tmp_path / "run"
    shutil.copytree(runs["mlp"], copy)
    path = copy / "level_01" / name
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # one flipped byte in the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=f"{name}: checksum mismatch"):
        load_ticket(copy, 1)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(CorruptFileError, match=name):
        load_ticket(copy, 1)


def test_missing_level_control_or_run_name_the_field(runs, tmp_path):
    with pytest.raises(TicketError, match=r"level: .* no finished level 7 \(finished: 0, 1, 2\)") as info:
        load_ticket(runs["mlp"], 7)
    assert info.value.field == "level"
    with pytest.raises(TicketError, match=r"control: .*no finished control 'shuffle_mask' \(controls: reinit\)"):
        load_ticket(runs["mlp"], 1, "shuffle_mask")
    with pytest.raises(TicketError, match="run: .* no spec.json"):
        load_ticket(tmp_path)


def test_sparse_linear_and_conv_compute_what_the_dense_layers_compute():
    g = torch.Generator().manual_seed(0)

    def sparse_weight(*shape):
        w = torch.randn(shape, generator=g)
        return w * (torch.rand(shape, generator=g) < 0.1)

    linear = torch.nn.Linear(20, 7)
    with torch.no_grad():
        linear.weight.copy_(sparse_weight(7, 20))
    x = torch.randn(3, 5, 20, generator=g)  # leading dimensions are kept
    assert torch.allclose(SparseLinear(linear.weight, linear.bias)(x), linear(x), atol=1e-6)
    assert torch.allclose(SparseLinear(linear.weight, None)(x), F.linear(x, linear.weight), atol=1e-6)
    for kw in ({"stride": 2, "padding": 1}, {"dilation": 2, "bias": False}, {"padding": (0, 2), "stride": (1, 3)}):
        conv = torch.nn.Conv2d(3, 4, (3, 2), **kw)
        with torch.no_grad():
            conv.weight.copy_(sparse_weight(*conv.weight.shape))
        x = torch.randn(2, 3, 9, 11, generator=g)
        assert torch.allclose(SparseConv2d(conv)(x), conv(x), atol=1e-6), kw
    with pytest.raises(ValueError, match="groups=3"):
        SparseConv2d(torch.nn.Conv2d(3, 3, 3, groups=3))


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_sparse_module_equals_the_dense_masked_ticket(runs, synthetic, tmp_path, kind):
    ticket = load_ticket(runs[kind])
    sparse = sparsify(ticket.model, ticket.mask.keys())
    layers = {n: m for n, m in sparse.named_modules() if isinstance(m, (SparseLinear, SparseConv2d))}
    assert {f"{n}.weight" for n in layers} == set(ticket.mask)
    assert all(layers[n[: -len(".weight")]].weight._nnz() == int(k.sum()) for n, k in ticket.mask.items())
    x = synthetic.x_test[:100]
    with torch.inference_mode():
        expected = ticket.model(x)
        assert torch.allclose(sparse(x), expected, atol=1e-5)
        done = export_ticket(ticket, "sparse", tmp_path / "t.safetensors")
        assert torch.allclose(load_sparse(done.path)(x), expected, atol=1e-5)
    assert done.max_abs_diff <= 1e-4


def test_state_dict_export_is_the_dense_masked_model(runs, tmp_path):
    ticket = load_ticket(runs["mlp"], 2)
    safetensors_file = export_ticket(ticket, "state_dict", tmp_path / "t.safetensors").path
    pt_file = export_ticket(ticket, "state_dict", tmp_path / "t.pt").path
    for state in (load_file(safetensors_file), torch.load(pt_file, weights_only=True)):
        model = ticket.model.state_dict()
        assert sorted(state) == sorted(model) and all(torch.equal(state[k], model[k]) for k in state)
        for name, keep in ticket.mask.items():
            assert torch.all(state[name][~keep] == 0)
    from safetensors import safe_open

    with safe_open(safetensors_file, "pt") as f:
        meta = f.metadata()
    assert meta["ticketlab.level"] == "2" and json.loads(meta["ticketlab.input_shape"]) == [1, 28, 28]


def test_onnx_export_matches_pytorch(runs, synthetic, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    ticket = load_ticket(runs["conv"])
    done = export_ticket(ticket, "onnx", tmp_path / "t.onnx")
    assert done.max_abs_diff <= 1e-5
    session = ort.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    for x in (synthetic.x_test[:64], synthetic.x_test[:1]):
        with torch.inference_mode():
            expected = ticket.model(x)
        got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
        assert (got - expected).abs().max() <= 1e-5
    props = {p.key: p.value for p in onnx.load(str(done.path)).metadata_props}
    assert props["ticketlab.level"] == "1" and props["ticketlab.model"] == "lenet5"


def test_sparse_linear_on_one_example_takes_the_vector_path_and_agrees():
    g = torch.Generator().manual_seed(1)
    linear = torch.nn.Linear(30, 5)
    with torch.no_grad():
        linear.weight.mul_(torch.rand(linear.weight.shape, generator=g) < 0.2)
    for x in (torch.randn(1, 30, generator=g), torch.randn(30, generator=g), torch.randn(2, 1, 30, generator=g)):
        for bias in (linear.bias, None):
            assert torch.allclose(SparseLinear(linear.weight, bias)(x), F.linear(x, linear.weight, bias), atol=1e-6)
