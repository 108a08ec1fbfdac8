"""Sparse inference: a ticket whose pruned layers store only their kept weights (CSR) and multiply with
PyTorch's sparse kernels.

``sparsify(model)`` replaces every ``nn.Linear`` by :class:`SparseLinear` (``torch.addmm`` of the CSR weight,
MKL's sparse x dense product on x86 CPUs) and every ``nn.Conv2d`` with ``groups=1`` by :class:`SparseConv2d`.
PyTorch has no sparse convolution kernel on CPU, so the convolution is lowered to a product: the input
patches are laid out as columns (im2col) and the CSR weight (out_channels x in_channels*kh*kw) multiplies
them. That lowering copies every patch (kh*kw times the input) whatever the density, so for small
convolutions it costs as much as the dense convolution itself (``benchmarks/sparse_inference.py`` measures
where sparse wins). Other layers stay dense.

File format (``save_sparse``): a checksummed safetensors file with, per sparse layer, ``<name>.crow_indices``,
``<name>.col_indices`` (int32) and ``<name>.values``, the other tensors of the state dict as they are, and
the facts needed to rebuild the network in its metadata (``load_sparse``).
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.files import CorruptFileError, load_tensors, save_tensors
from ticketlab.models import build_model

FORMAT = "ticketlab-sparse-csr/1"
_PARTS = ("crow_indices", "col_indices", "values")


def to_csr(weight: torch.Tensor) -> torch.Tensor:
    """A 2-D dense matrix as CSR with int32 indices (half the index bytes of int64; MKL takes both)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        csr = weight.detach().to_sparse_csr()
        return torch.sparse_csr_tensor(
            csr.crow_indices().to(torch.int32),
            csr.col_indices().to(torch.int32),
            csr.values(),
            csr.shape,
            check_invariants=True,
        )


class SparseLinear(nn.Module):
    """``y = x W^T + b`` with W in CSR: computed as ``(W x^T + b)^T`` by one sparse x dense ``addmm`` (for a
    single example, a sparse matrix-vector product)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", to_csr(weight))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and x.shape[0] == 1:  # one example: a sparse matrix-vector product, half addmm's time here
            out = torch.mv(self.weight, x[0]) if self.bias is None else torch.addmv(self.bias, self.weight, x[0])
            return out.unsqueeze(0)
        lead = x.shape[:-1]
        cols = x.reshape(-1, self.in_features).t()
        if self.bias is None:
            out = torch.sparse.mm(self.weight, cols)
        else:
            out = torch.addmm(self.bias.unsqueeze(1), self.weight, cols)
        return out.t().reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.weight._nnz()}"


class SparseConv2d(nn.Module):
    """A 2-D convolution (groups 1, zero padding) as CSR weight x the input patches (im2col)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not supports_conv(conv):
            raise ValueError(
                f"SparseConv2d: groups={conv.groups}, padding={conv.padding!r}, "
                f"padding_mode={conv.padding_mode!r} are not supported"
            )
        self.out_channels = conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        self.register_buffer("weight", to_csr(conv.weight.reshape(conv.out_channels, -1)))
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        cols, out_h, out_w = im2col(x, self.kernel_size, self.stride, self.padding, self.dilation)
        if self.bias is None:
            out = torch.sparse.mm(self.weight, cols)
        else:
            out = torch.addmm(self.bias.unsqueeze(1), self.weight, cols)
        return out.reshape(self.out_channels, n, out_h, out_w).transpose(0, 1)

    def extra_repr(self) -> str:
        return (
            f"out_channels={self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, nnz={self.weight._nnz()}"
        )


def im2col(
    x: torch.Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[torch.Tensor, int, int]:
    """The input patches of (N, C, H, W) ``x`` as a (C*kh*kw, N*out_h*out_w) matrix, rows in the order of a
    flattened (C, kh, kw) kernel: one strided copy (several times faster here than ``F.unfold`` + transpose)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    n, c, h, w = x.shape
    out_h, out_w = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    s = x.stride()
    patches = x.as_strided((c, kh, kw, n, out_h, out_w), (s[1], s[2] * dh, s[3] * dw, s[0], s[2] * sh, s[3] * sw))
    return patches.reshape(c * kh * kw, n * out_h * out_w), out_h, out_w


def supports_conv(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)  # padding="same"/"valid" stays dense
    )


def _sparse_version(module: nn.Module) -> nn.Module | None:
    if isinstance(module, nn.Linear):
        return SparseLinear(module.weight, module.bias)
    if isinstance(module, nn.Conv2d) and supports_conv(module):
        return SparseConv2d(module)
    return None


@torch.no_grad()
def sparsify(model: nn.Module, weights: Iterable[str] | None = None) -> nn.Module:
    """A copy of ``model`` (in eval mode) whose Linear and supported Conv2d layers hold CSR weights: those
    whose weight is named in ``weights`` (e.g. a mask's keys: the prunable ones), or all of them."""
    wanted = None if weights is None else set(weights)
    sparse = copy.deepcopy(model).eval()
    for name, module in list(sparse.named_modules()):
        if not name or (wanted is not None and f"{name}.weight" not in wanted):
            continue
        replacement = _sparse_version(module)
        if replacement is None:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(sparse.get_submodule(parent_name), child, replacement)
    return sparse


def sparse_layers(module: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in module.named_modules() if isinstance(m, (SparseLinear, SparseConv2d))}


def save_sparse(module: nn.Module, path: str | os.PathLike, metadata: Mapping[str, str]) -> Path:
    """Write a sparsified module: CSR parts of its sparse layers, every other tensor dense."""
    layers = sparse_layers(module)
    tensors: dict[str, torch.Tensor] = {}
    for name, layer in layers.items():
        w = layer.weight
        for part, t in zip(_PARTS, (w.crow_indices(), w.col_indices(), w.values())):
            tensors[f"{name}.weight.{part}"] = t
    sparse_keys = {f"{name}.weight" for name in layers}
    for key, t in module.state_dict().items():
        if key not in sparse_keys:
            tensors[key] = t
    shapes = {f"{name}.weight": _dense_shape(layer) for name, layer in layers.items()}
    meta = {**metadata, "ticketlab.format": FORMAT, "ticketlab.sparse_weights": json.dumps(shapes, sort_keys=True)}
    return save_tensors(path, tensors, meta)


def _dense_shape(layer: nn.Module) -> list[int]:
    """The weight's shape in the dense model (a convolution's CSR matrix is its flattened kernel)."""
    if isinstance(layer, SparseConv2d):
        rows, cols = layer.weight.shape
        kh, kw = layer.kernel_size
        return [rows, cols // (kh * kw), kh, kw]
    return list(layer.weight.shape)


def read_sparse(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The dense state dict stored in a sparse file (zeros where nothing is stored), and its metadata."""
    tensors, meta = load_tensors(path)
    if meta.get("ticketlab.format") != FORMAT:
        raise CorruptFileError(
            f"{path}: not a ticketlab sparse file (format {meta.get('ticketlab.format')!r}, expected {FORMAT!r})"
        )
    state = dict(tensors)
    for key, shape in json.loads(meta["ticketlab.sparse_weights"]).items():
        parts = [state.pop(f"{key}.{part}") for part in _PARTS]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            csr = torch.sparse_csr_tensor(
                *parts, size=(shape[0], int(torch.tensor(shape[1:]).prod())), check_invariants=True
            )
        state[key] = csr.to_dense().reshape(shape)
    return state, meta


def load_sparse(path: str | os.PathLike) -> nn.Module:
    """The sparse module written by ``save_sparse`` (or ``ticketlab export --format sparse``)."""
    state, meta = read_sparse(path)
    model = build_model(
        meta["ticketlab.model"],
        input_shape=tuple(json.loads(meta["ticketlab.input_shape"])),
        num_classes=int(meta["ticketlab.num_classes"]),
        bn_momentum=float(meta["ticketlab.bn_momentum"]),
        bn_eps=float(meta["ticketlab.bn_eps"]),
        dropout=float(meta["ticketlab.dropout"]),
    )
    model.load_state_dict(state)
    return sparsify(model, json.loads(meta["ticketlab.sparse_weights"]))
