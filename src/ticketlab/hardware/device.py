"""Choosing the compute device and CPU thread count."""

from __future__ import annotations

import os

import torch


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when present, else the CPU; anything else is used as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {str(device)!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for but CUDA is not available; use 'cpu' or 'auto'")
    return resolved


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads; ``None`` keeps ``$TICKETLAB_THREADS`` or torch's default.

    When other processes load the machine, two intra-op threads can make an epoch several times slower
    than one, so this must be a setting rather than a constant.
    """
    if threads is None and os.environ.get("TICKETLAB_THREADS"):
        threads = int(os.environ["TICKETLAB_THREADS"])
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()
