"""Tickets out of ticketlab: a dense state dict with the zeros baked in, an ONNX graph checked against
PyTorch with onnxruntime, or a sparse (CSR) module.

Every format is checked before anything is written and written atomically (temporary file, rename), so a
failed export leaves nothing behind. Exported files carry the ticket's facts (run, level, model, input
shape and standardisation, density, test accuracy) in their metadata, except ``.pt`` state dicts (plain).
"""

from __future__ import annotations

import copy
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ticketlab.files import atomic_write_bytes, save_tensors
from ticketlab.tickets.load import Ticket, TicketError
from ticketlab.tickets.sparse import save_sparse, sparsify

FORMATS = ("state_dict", "onnx", "sparse")
SUFFIXES = {"state_dict": (".safetensors", ".pt", ".pth"), "onnx": (".onnx",), "sparse": (".safetensors",)}
ONNX_TOLERANCE = 1e-5  # max |onnxruntime - PyTorch| on the logits of the check batch
SPARSE_TOLERANCE = 1e-4  # the sparse kernels sum in another order than the dense ones
CHECK_BATCH = 8


@dataclass(frozen=True)
class Exported:
    path: Path
    format: str
    bytes: int
    max_abs_diff: float | None = None  # onnx and sparse: against the dense PyTorch model


def check_target(fmt: str, out: str | os.PathLike) -> Path:
    """The format and output path, checked before any work: a known format, a suffix that fits it, and a
    path that is not a folder."""
    if fmt not in FORMATS:
        raise TicketError("format", f"must be one of {', '.join(FORMATS)}; got {fmt!r}")
    out = Path(out)
    if out.suffix not in SUFFIXES[fmt]:
        raise TicketError("out", f"format {fmt} is written to a {' or '.join(SUFFIXES[fmt])} file; got {str(out)!r}")
    if out.is_dir():
        raise TicketError("out", f"{out} is a folder; give a file name")
    if out.parent.exists() and not out.parent.is_dir():
        raise TicketError("out", f"{out.parent} is not a folder")
    if fmt == "onnx":
        missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if not _importable(name)]
        if missing:
            raise TicketError("format", f"onnx needs {', '.join(missing)}: pip install 'ticketlab[export]'")
    return out


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def export_ticket(ticket: Ticket, fmt: str, out: str | os.PathLike) -> Exported:
    """Write ``ticket`` as ``fmt`` (``state_dict``, ``onnx`` or ``sparse``) to ``out``."""
    out = check_target(fmt, out)
    if fmt == "state_dict":
        return export_state_dict(ticket, out)
    if fmt == "onnx":
        return export_onnx(ticket, out)
    return export_sparse(ticket, out)


def export_state_dict(ticket: Ticket, out: Path) -> Exported:
    """The model's state dict (pruned weights are zeros): safetensors with metadata, or a plain ``.pt``."""
    state = {k: v.detach().cpu().contiguous() for k, v in ticket.model.state_dict().items()}
    if out.suffix == ".safetensors":
        save_tensors(out, state, ticket.describe())
    else:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(out, buffer.getvalue())
    return Exported(out, "state_dict", out.stat().st_size)


def check_inputs(ticket: Ticket, batch: int = CHECK_BATCH, seed: int = 0) -> torch.Tensor:
    """A seeded batch shaped like the standardised data, for comparing two forms of the same network."""
    return torch.randn((batch, *ticket.input_shape), generator=torch.Generator().manual_seed(seed))


def portable(model: nn.Module) -> nn.Module:
    """A copy whose ``nn.Linear`` subclasses (ticketlab's BLAS-backed ``Linear``) are plain ``nn.Linear``:
    same weights and state dict, nothing that graph capture cannot trace."""
    plain = copy.deepcopy(model).cpu().eval()
    for module in plain.modules():
        if isinstance(module, nn.Linear) and type(module) is not nn.Linear:
            module.__class__ = nn.Linear
    return plain


def export_onnx(ticket: Ticket, out: Path) -> Exported:
    """ONNX (input ``input`` of shape (batch, C, H, W), output ``logits``; batch is dynamic), exported with
    PyTorch's ``torch.export``-based exporter and checked with onnxruntime on a batch of 8 and a batch of 1."""
    import onnx
    import onnxruntime

    model = portable(ticket.model)
    x = check_inputs(ticket)
    with tempfile.TemporaryDirectory() as tmp, _quiet_exporter():
        path = Path(tmp) / "ticket.onnx"
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=True,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            verbose=False,
        )
        proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, ticket.describe())
    data = proto.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    diff = 0.0
    with torch.inference_mode():
        for batch in (x, x[:1]):
            expected = ticket.model(batch.to(_device(ticket.model))).cpu()
            got = torch.from_numpy(session.run(None, {"input": batch.numpy()})[0])
            diff = max(diff, float((got - expected).abs().max()))
    if not diff <= ONNX_TOLERANCE:
        raise TicketError(
            "format",
            f"onnx: onnxruntime's logits differ from PyTorch's by {diff:.3g} > {ONNX_TOLERANCE:g}; nothing written",
        )
    atomic_write_bytes(out, data)
    return Exported(out, "onnx", len(data), diff)


def export_sparse(ticket: Ticket, out: Path) -> Exported:
    """The sparse module of :mod:`ticketlab.tickets.sparse` (prunable layers in CSR), checked against the dense
    model; read it back with ``ticketlab.tickets.load_sparse``."""
    dense = ticket.model
    sparse = sparsify(dense, ticket.mask.keys()).cpu()
    x = check_inputs(ticket)
    with torch.inference_mode():
        diff = float((sparse(x) - dense(x.to(_device(dense))).cpu()).abs().max())
    if not diff <= SPARSE_TOLERANCE:
        raise TicketError(
            "format", f"sparse: the sparse module's logits differ from the dense ones by {diff:.3g}; nothing written"
        )
    save_sparse(sparse, out, ticket.describe())
    return Exported(out, "sparse", out.stat().st_size, diff)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's progress lines, deprecation warnings and notes about torchvision are not the user's concern."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            logger.setLevel(level)
