"""The OpenBLAS GEMM path of fully connected layers against PyTorch's own kernels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ticketlab.config.recipe import Recipe
from ticketlab.data import load_dataset
from ticketlab.hardware import blas as gemm
from ticketlab.masks import prunable_parameters, select
from ticketlab.models import build_model, initialize
from ticketlab.training.loop import train
from ticketlab.training.stacked import train_many

needs_avx512 = pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() != "AVX512", reason="OpenBLAS's SkylakeX kernels need AVX-512"
)


def _reference(x, w, b):
    """float64 PyTorch: the exact value both float32 paths approximate."""
    x, w = x.double(), w.double()
    b = None if b is None else b.double()
    if x.dim() == 3:
        out = torch.bmm(x, w.mT)
        return out if b is None else out + b.unsqueeze(1)
    return F.linear(x, w, b)


def _inputs(stacked: bool, layout: str, bias: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    k = (3,) if stacked else ()
    x = torch.randn(*k, 7, 5, generator=g)
    w = torch.randn(*k, 4, 5, generator=g)
    b = torch.randn(*k, 4, generator=g) if bias else None
    if layout == "transposed":  # same values, column-major storage
        x = x.mT.contiguous().mT
        w = w.mT.contiguous().mT
    elif layout == "strided":  # every other column of a wider tensor: copied before the call
        x = torch.stack([x, x], dim=-1).flatten(-2)[..., ::2]
    elif layout == "broadcast" and stacked:  # one weight shared by the K models (stride 0)
        w = w[:1].expand_as(w)
    return x, w, b


@needs_avx512
@pytest.mark.parametrize("stacked", [False, True], ids=["2d", "stacked"])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided", "broadcast"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_linear_matches_float64_reference_values_and_gradients(openblas, stacked, layout, bias):
    x, w, b = _inputs(stacked, layout, bias)
    leaves = [t.detach().clone().requires_grad_() for t in (x, w) + ((b,) if bias else ())]
    out = gemm.linear(*leaves) if bias else gemm.linear(*leaves, None)
    assert out.grad_fn is not None and "Linear" in type(out.grad_fn).__name__  # the OpenBLAS Function ran
    ref_leaves = [t.detach().double().requires_grad_() for t in (x, w) + ((b,) if bias else ())]
    ref = _reference(*ref_leaves) if bias else _reference(*ref_leaves, None)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    out.backward(upstream)
    ref.backward(upstream.double())
    for got, want in zip(leaves, ref_leaves):
        torch.testing.assert_close(got.grad.double(), want.grad, rtol=1e-5, atol=1e-5)


@needs_avx512
def test_linear_is_differentiable_twice_like_pytorch(openblas):
    """GraSP needs H g through the layers: the backward is itself built from differentiable GEMMs."""

    def hvp(fn):
        g = torch.Generator().manual_seed(3)
        x = torch.randn(6, 5, generator=g)
        w = torch.randn(4, 5, generator=g, requires_grad=True)
        w2 = torch.randn(3, 4, generator=g, requires_grad=True)
        v = torch.randn(4, 5, generator=g)
        loss = fn(torch.tanh(fn(x, w, None)), w2, None).pow(2).sum()
        (grad,) = torch.autograd.grad(loss, w, create_graph=True)
        (hv,) = torch.autograd.grad((grad * v).sum(), w)
        return hv

    torch.testing.assert_close(hvp(gemm.linear), hvp(F.linear), rtol=1e-4, atol=1e-5)


@needs_avx512
def test_linear_is_deterministic_and_handles_empty_batches(openblas):
    x, w, b = _inputs(True, "contiguous", True)
    assert torch.equal(gemm.linear(x, w, b), gemm.linear(x, w, b))
    empty = gemm.linear(torch.randn(0, 5), torch.randn(4, 5), torch.randn(4))
    assert empty.shape == (0, 4)
    no_inner = gemm.linear(torch.randn(2, 0), torch.randn(4, 0), torch.ones(4))
    assert torch.equal(no_inner, torch.ones(2, 4))


@needs_avx512
def test_torch_func_transforms_fall_back_to_pytorch_kernels(openblas):
    """vmap / grad see wrapper tensors without storage for BLAS: the layer must still work under them."""
    from torch.func import functional_call, grad, vmap

    layer = gemm.Linear(5, 3)
    xs = torch.randn(4, 2, 5)
    per_sample = vmap(lambda x: layer(x))(xs)
    torch.testing.assert_close(per_sample, F.linear(xs, layer.weight, layer.bias))
    params = {k: v.detach() for k, v in layer.named_parameters()}
    g = grad(lambda p, x: functional_call(layer, p, (x,)).sum())(params, xs[0])
    torch.testing.assert_close(g["weight"], xs[0].sum(0).expand(3, 5))


def test_torch_backend_and_other_dtypes_use_pytorch_kernels(torch_gemm):
    x, w, b = _inputs(True, "contiguous", True)
    assert torch.equal(gemm.linear(x, w, b), torch.baddbmm(b.unsqueeze(1), x, w.mT))
    x2, w2, b2 = _inputs(False, "contiguous", True)
    assert torch.equal(gemm.linear(x2, w2, b2), F.linear(x2, w2, b2))
    gemm.set_backend(None)
    xd = x2.double()  # float64 never goes to the float32 BLAS
    assert torch.equal(gemm.linear(xd, w2.double(), b2.double()), F.linear(xd, w2.double(), b2.double()))


def test_backend_setting_names_the_allowed_values(monkeypatch):
    with pytest.raises(ValueError, match="auto, openblas, torch"):
        gemm.set_backend("mkl")
    monkeypatch.setenv("TICKETLAB_GEMM", "fast")
    gemm.backend.cache_clear()
    try:
        with pytest.raises(ValueError, match="TICKETLAB_GEMM must be one of auto, openblas, torch; got 'fast'"):
            gemm.backend()
    finally:
        monkeypatch.delenv("TICKETLAB_GEMM")
        gemm.set_backend(None)


@needs_avx512
def test_training_threads_swap_and_restore(openblas):
    lib = gemm.backend().lib
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with gemm.training_threads():
            assert torch.get_num_threads() == 1
            assert lib.scipy_openblas_get_num_threads() == 2
        assert torch.get_num_threads() == 2
        assert lib.scipy_openblas_get_num_threads() == 1  # outside: no pool of its own to fight OpenMP's
    finally:
        torch.set_num_threads(before)


def _lenet_run(trainer: str):
    data = load_dataset("synthetic", val_size=100, seed=0)
    model = initialize(build_model("lenet300", input_shape=(1, 28, 28)), seed=5)
    g = torch.Generator().manual_seed(9)
    mask = select({k: torch.rand(p.shape, generator=g) for k, p in prunable_parameters(model).items()}, 0.3)
    recipe = Recipe(steps="16it", batch_size=50, lr=0.1, momentum=0.9, eval_every="8it")
    if trainer == "train":
        result = train(model, data, recipe, mask=mask, seed=2, device="cpu")
    else:
        [result] = train_many([model], data, recipe, masks=[mask], seeds=[2], device="cpu")
    return model.state_dict(), result


@needs_avx512
@pytest.mark.parametrize("trainer", ["train", "train_many"])
def test_training_on_openblas_equals_training_on_pytorch_kernels(trainer):
    try:
        gemm.set_backend("torch")
        want_state, want = _lenet_run(trainer)
        if gemm.set_backend("openblas").name != "openblas":
            pytest.skip(gemm.backend().reason)
        got_state, got = _lenet_run(trainer)
    finally:
        gemm.set_backend(None)
    for key in want_state:
        torch.testing.assert_close(got_state[key], want_state[key], rtol=1e-4, atol=1e-5)
        if key.endswith("weight"):  # pruned weights stay exactly zero on both paths
            assert torch.equal(got_state[key] == 0, want_state[key] == 0)
    for row_got, row_want in zip(got.history, want.history):
        assert row_got["val_loss"] == pytest.approx(row_want["val_loss"], rel=1e-4)


@needs_avx512
def test_thread_swap_only_for_models_made_of_gemm_layers_on_cpu(openblas):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cpu = torch.device("cpu")
        with gemm.threads_for(build_model("lenet300", input_shape=(1, 28, 28)), cpu):
            assert torch.get_num_threads() == 1
        with gemm.threads_for(build_model("conv2", input_shape=(1, 28, 28)), cpu):
            assert torch.get_num_threads() == 2  # convolutions keep torch's threads
        with gemm.threads_for(build_model("lenet300", input_shape=(1, 28, 28)), torch.device("cuda")):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("blas", ["openblas", "torch_gemm"])
@pytest.mark.parametrize("stacked", [False, True])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
@pytest.mark.parametrize("alpha, beta", [(1.0, 0.0), (-0.1, 1.0), (0.5, 0.9)])
def test_addmm_in_place(request, blas, stacked, layout, alpha, beta):
    request.getfixturevalue(blas)
    a, b, _ = _inputs(stacked, layout, bias=False, seed=3)  # a (.., 7, 5), b (.., 4, 5)
    out = torch.randn(*a.shape[:-1], 4, generator=torch.Generator().manual_seed(4))
    expected = beta * out.double() + alpha * (a.double() @ b.double().mT)
    result = gemm.addmm_(out, a, b.mT, alpha=alpha, beta=beta)
    assert result.data_ptr() == out.data_ptr()
    assert torch.allclose(out.double(), expected, atol=1e-5)
