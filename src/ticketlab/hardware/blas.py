"""The matrix multiplies of fully connected layers on CPUs where PyTorch's own BLAS is slow.

PyTorch's CPU build multiplies float32 matrices with MKL, which took its AVX2 code path on an AMD Zen 5
VM with AVX-512; there OpenBLAS's AVX-512 kernels (the ``scipy-openblas32`` wheel, forced to its SkylakeX
core) were about twice as fast, at 2048x2048 and at LeNet-300-100's shapes (figures:
benchmarks/README.md), while on an Intel Xeon MKL is already fast. MLP training is mostly these
multiplies, so this module can route them to OpenBLAS where that measures faster: :func:`linear` is
``F.linear`` for 2-D inputs and K stacked models (3-D), differentiable twice (GraSP's Hessian-gradient
product), with PyTorch's own kernels wherever the fast path does not apply
(CUDA, float64, no AVX-512, ``TICKETLAB_GEMM=torch``). :class:`Linear` is ``nn.Linear`` computed that
way: same parameters, state-dict keys, hooks and ``isinstance``.

Threads: OpenBLAS keeps its own thread pool, and its threads and PyTorch's OpenMP threads both spin
while waiting, so two of each on two cores make training many times slower. So OpenBLAS runs on the
calling thread (1 thread) by default, and :func:`training_threads` swaps the two thread counts for a
training loop whose time is mostly GEMMs: OpenBLAS gets PyTorch's threads, PyTorch gets one.

``TICKETLAB_GEMM``: ``auto`` (default: where the CPU has AVX-512 and the wheel loads, whichever of OpenBLAS
and PyTorch's BLAS measures faster on this machine, timed once and cached: ``hardware.gemm_choice``),
``openblas`` (wherever the CPU has AVX-512) or ``torch`` (never). ``Backend.reason`` says which and why
(recorded by the speed benchmark).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.hardware import gemm_choice

CHOICES = ("auto", "openblas", "torch")
CORE = "SkylakeX"  # OpenBLAS's AVX-512 kernels; DYNAMIC_ARCH builds do not pick them on Zen 5 by themselves
_ROW, _NO_TRANS, _TRANS = 101, 111, 112  # CBLAS enums


@dataclass(frozen=True)
class Backend:
    """What :func:`backend` decided and why, for the speed benchmark and error messages."""

    name: str  # "openblas" or "torch"
    reason: str
    lib: ctypes.CDLL | None = None


_override: str | None = None


def _checked(choice: str, where: str) -> str:
    choice = choice.strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"{where} must be one of {', '.join(CHOICES)}; got {choice!r}")
    return choice


def set_backend(choice: str | None) -> Backend:
    """Choose the backend for the rest of the process (``None``: back to ``$TICKETLAB_GEMM``); for
    benchmarks and tests that compare the two."""
    global _override
    _override = None if choice is None else _checked(choice, "gemm backend")
    backend.cache_clear()
    return backend()


def _load_openblas() -> ctypes.CDLL:
    """Load scipy-openblas32 with its AVX-512 core. The core is chosen once, when the library is first
    loaded in the process, from ``$OPENBLAS_CORETYPE``; importing the ``scipy_openblas32`` package loads
    it, so the library is opened directly by path, with the variable set only around the load."""
    spec = importlib.util.find_spec("scipy_openblas32")
    if spec is None or not spec.submodule_search_locations:
        raise OSError("the scipy-openblas32 package is not installed")
    libs = sorted((Path(spec.submodule_search_locations[0]) / "lib").glob("libscipy_openblas*.so*"))
    if not libs:
        raise OSError("scipy-openblas32 has no shared library for this platform")
    before = os.environ.get("OPENBLAS_CORETYPE")
    os.environ["OPENBLAS_CORETYPE"] = CORE
    try:
        lib = ctypes.CDLL(str(libs[0]))
    finally:
        if before is None:
            del os.environ["OPENBLAS_CORETYPE"]
        else:
            os.environ["OPENBLAS_CORETYPE"] = before
    lib.scipy_openblas_get_corename.restype = ctypes.c_char_p
    lib.scipy_openblas_get_num_threads.restype = ctypes.c_int
    core = lib.scipy_openblas_get_corename().decode()
    if core.lower() != CORE.lower():
        raise OSError(
            f"OpenBLAS was already loaded with its {core} core (scipy_openblas32 imported before ticketlab), not {CORE}"
        )
    i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    lib.scipy_cblas_sgemm.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
    lib.scipy_cblas_sgemm.restype = None
    lib.scipy_cblas_sgemm_batch_strided.argtypes = [i, i, i, i, i, i, f, p, i, i, p, i, i, f, p, i, i, i]
    lib.scipy_cblas_sgemm_batch_strided.restype = None
    lib.scipy_openblas_set_num_threads(1)
    return lib


@cache
def backend() -> Backend:
    """The GEMM backend of this process, decided once (``TICKETLAB_GEMM``, the CPU, the wheel, and under
    ``auto`` the measured verdict of ``hardware.gemm_choice`` for torch's thread count at that moment)."""
    choice = _override or _checked(os.environ.get("TICKETLAB_GEMM", "auto"), "TICKETLAB_GEMM")
    if choice == "torch":
        return Backend("torch", f"{choice!r} asked for")
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        return Backend("torch", "the CPU has no AVX-512")
    try:
        lib = _load_openblas()
    except (OSError, AttributeError) as err:  # AttributeError: a wheel too old for sgemm_batch_strided
        return Backend("torch", f"OpenBLAS unavailable: {err}")
    if choice == "openblas":
        return Backend("openblas", f"{choice!r} asked for: OpenBLAS {CORE} kernels", lib)
    verdict = gemm_choice.decide(lambda: time_backends(lib))
    if verdict.name == "openblas":
        return Backend("openblas", f"OpenBLAS {CORE} kernels, {verdict.describe()}", lib)
    return Backend("torch", f"PyTorch's BLAS, {verdict.describe()}")


def time_backends(lib: ctypes.CDLL) -> dict[str, float]:
    """Seconds of ``gemm_choice``'s products with PyTorch's kernels on torch's threads and with OpenBLAS on
    them instead (PyTorch on one, as :func:`training_threads` trains)."""
    threads = torch.get_num_threads()
    seconds = {"torch": gemm_choice.time_products(lambda a, b, out: out.addmm_(a, b, beta=0.0))}
    torch.set_num_threads(1)
    lib.scipy_openblas_set_num_threads(threads)
    try:
        seconds["openblas"] = gemm_choice.time_products(lambda a, b, out: _gemm(a, b, out, 0.0, lib=lib))
    finally:
        lib.scipy_openblas_set_num_threads(1)
        torch.set_num_threads(threads)
    return seconds


def active() -> bool:
    return backend().name == "openblas"


@contextmanager
def training_threads() -> Iterator[None]:
    """Inside: OpenBLAS on PyTorch's intra-op threads, PyTorch on one (see the module docstring).
    Does nothing when OpenBLAS is not the backend or PyTorch already runs on one thread."""
    threads = torch.get_num_threads()
    if not active() or threads == 1:
        yield
        return
    lib = backend().lib
    torch.set_num_threads(1)
    lib.scipy_openblas_set_num_threads(threads)
    try:
        yield
    finally:
        lib.scipy_openblas_set_num_threads(1)
        torch.set_num_threads(threads)


def threads_for(model: nn.Module, device: torch.device) -> AbstractContextManager[None]:
    """The thread swap of :func:`training_threads` for training ``model`` on ``device`` when its time is
    these GEMMs (a CPU model whose weighted layers are all :class:`Linear`, i.e. an MLP), else nothing."""
    weighted = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    if device.type == "cpu" and weighted and all(isinstance(m, Linear) for m in weighted):
        return training_threads()
    return nullcontext()


def _operand(t: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """(tensor, CBLAS transpose flag, leading dimension) for the last two dims, copying only if neither
    they nor their transpose are row-major."""
    rows, cols = t.shape[-2:]
    if t.stride(-1) == 1 and t.stride(-2) >= max(1, cols):
        return t, _NO_TRANS, t.stride(-2)
    if t.stride(-2) == 1 and t.stride(-1) >= max(1, rows):
        return t, _TRANS, t.stride(-1)
    t = t.contiguous()
    return t, _NO_TRANS, max(1, cols)


def _gemm(
    a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, beta: float, alpha: float = 1.0, lib: ctypes.CDLL | None = None
) -> torch.Tensor:
    """out = alpha * a @ b + beta * out with OpenBLAS (``lib``, default the backend's); 2-D, or 3-D with a
    leading batch (stacked models). ``out`` must be contiguous."""
    lib = lib or backend().lib
    m, k = a.shape[-2:]
    n = b.shape[-1]
    if m == 0 or n == 0:
        return out
    if k == 0:
        return out.mul_(beta) if beta else out.zero_()
    a, ta, lda = _operand(a)
    b, tb, ldb = _operand(b)
    if out.dim() == 2:
        lib.scipy_cblas_sgemm(
            _ROW, ta, tb, m, n, k, alpha, a.data_ptr(), lda, b.data_ptr(), ldb, beta, out.data_ptr(), n
        )
    else:
        if a.stride(0) == 0 or b.stride(0) == 0:  # a broadcast operand: give it its own rows
            a, ta, lda = _operand(a.contiguous())
            b, tb, ldb = _operand(b.contiguous())
        lib.scipy_cblas_sgemm_batch_strided(
            _ROW,
            ta,
            tb,
            m,
            n,
            k,
            alpha,
            a.data_ptr(),
            lda,
            a.stride(0),
            b.data_ptr(),
            ldb,
            b.stride(0),
            beta,
            out.data_ptr(),
            n,
            m * n,
            out.shape[0],
        )
    return out


class _MatMul(torch.autograd.Function):
    """a @ b on OpenBLAS. The backward is built from this Function too, so it is differentiable again."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return _gemm(a, b, a.new_empty(*a.shape[:-1], b.shape[-1]), 0.0)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        a, b = ctx.saved_tensors
        ga = _MatMul.apply(g, b.mT) if ctx.needs_input_grad[0] else None
        gb = _MatMul.apply(a.mT, g) if ctx.needs_input_grad[1] else None
        return ga, gb


class _Linear(torch.autograd.Function):
    """x @ w^T + b with the bias as the GEMM's starting value (one pass fewer than adding it after)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        shape = (*x.shape[:-1], w.shape[-2])
        if b is None:
            return _gemm(x, w.mT, x.new_empty(shape), 0.0)
        start = (b.unsqueeze(-2) if x.dim() == 3 else b).expand(shape).contiguous()
        return _gemm(x, w.mT, start, 1.0)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, w = ctx.saved_tensors
        gx = _MatMul.apply(g, w) if ctx.needs_input_grad[0] else None
        gw = _MatMul.apply(g.mT, x) if ctx.needs_input_grad[1] else None
        gb = g.sum(-2) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


def _fast(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> bool:
    # under torch.func transforms (vmap, grad, jacrev) the tensors are wrappers without plain storage
    if not active() or torch._C._are_functorch_transforms_active():
        return False
    tensors = (x, w) if b is None else (x, w, b)
    if any(t.device.type != "cpu" or t.dtype != torch.float32 or t.layout != torch.strided for t in tensors):
        return False
    if x.dim() == 2:
        return w.dim() == 2 and (b is None or b.dim() == 1)
    # stacked: x (K, B, in), w (K, out, in), b (K, out)
    return x.dim() == 3 and w.dim() == 3 and x.shape[0] == w.shape[0] and (b is None or b.dim() == 2)


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, w, b)`` for x (B, in), w (out, in), b (out); for K stacked models x (K, B, in),
    w (K, out, in), b (K, out) gives (K, B, out), model k's batch through model k's layer."""
    if _fast(x, w, b):
        return _Linear.apply(x, w, b)
    if x.dim() == 3 and w.dim() == 3:
        return torch.baddbmm(b.unsqueeze(1), x, w.mT) if b is not None else torch.bmm(x, w.mT)
    return F.linear(x, w, b)


def addmm_(
    out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, alpha: float = 1.0, beta: float = 1.0
) -> torch.Tensor:
    """``out = beta * out + alpha * a @ b`` in place, not differentiable; 2-D, or 3-D for K stacked models.

    One pass over ``out``: an SGD step can be the weight-gradient GEMM itself (``out`` = the weights,
    ``alpha = -lr``), so the gradient never exists as a tensor (``ticketlab.training.fused_sgd``).
    """
    if _fast(a, b, None) and out.device.type == "cpu" and out.dtype == torch.float32 and out.is_contiguous():
        _gemm(a, b, out, beta, alpha)
    elif beta == 0.0 and alpha == 1.0:  # a plain product: mm / bmm measured faster than addmm_ with beta 0
        (torch.bmm if out.dim() == 3 else torch.mm)(a, b, out=out)
    elif out.dim() == 3:
        out.baddbmm_(a, b, beta=beta, alpha=alpha)
    else:
        out.addmm_(a, b, beta=beta, alpha=alpha)
    return out


def linear_into(out: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``out = x @ w^T + b`` written into the preallocated ``out``, not differentiable: x (B, in), w (out, in),
    b (out), or K stacked x (K, B, in), w (K, out, in), b (K, out). The bias is the GEMM's starting value,
    broadcast by the GEMM call itself (no expanded copy of it is made)."""
    if _fast(x, w, b) and out.dtype == torch.float32 and out.is_contiguous():
        out.copy_(b.unsqueeze(-2).expand_as(out))
        return _gemm(x, w.mT, out, 1.0)
    if out.dim() == 3:
        return torch.baddbmm(b.unsqueeze(1), x, w.mT, out=out)
    return torch.addmm(b, x, w.mT, out=out)


class Linear(nn.Linear):
    """``nn.Linear`` whose product goes through :func:`linear` (forward hooks, ``functional_call`` and
    state dicts behave exactly as for ``nn.Linear``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
