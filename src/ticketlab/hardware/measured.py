"""What every measured choice shares (``gemm_choice``, ``adam_choice``, ``training.stack_choice``): the
machine a measurement holds for, and the measurement cached in the user cache, one checksummed file per key
(``files.keyed_file``). A damaged file is measured again, never used; a read-only cache is measured again
next time; a failed timing is reported, not cached."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

from ticketlab.files import CorruptFileError, keyed_file, read_keyed_json, user_cache_dir, write_keyed_json
from ticketlab.hardware.cpu import cpu_model

T = TypeVar("T")


def machine_key(version: int, threads: int | None = None, **extra: Any) -> dict[str, Any]:
    """What a measurement holds for: its format ``version``, processor, cores, torch, torch's thread count
    (now, unless given) and the ``extra`` fields of the choice."""
    return {
        "version": version,
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 1,
        "torch": torch.__version__,
        "threads": torch.get_num_threads() if threads is None else threads,
        **extra,
    }


def cache_file(folder: str, key: Mapping[str, Any], root: Path | None = None) -> Path:
    """The file of ``key`` in the user cache's ``folder`` (or ``root``'s)."""
    return keyed_file((root if root is not None else user_cache_dir()) / folder, key)


@dataclass(frozen=True)
class Measured(Generic[T]):
    """A measurement: ``rows`` (None when the timing failed, with its ``error``), from the ``source``
    "cache", "measured" or "timing failed", and a ``note`` (a damaged file measured again, not cached)."""

    rows: T | None
    source: str
    note: str = ""
    error: BaseException | None = None


def cached(
    path: Path,
    key: Mapping[str, Any],
    measure: Callable[[], Mapping[str, Any]],
    parse: Callable[[Mapping[str, Any], Path], T],
    failures: tuple[type[BaseException], ...] = (Exception,),
) -> Measured[T]:
    """``key``'s rows from ``path``, else ``measure()``'d and written there. ``parse`` checks rows (read or
    measured) and raises :class:`CorruptFileError` for bad ones; an exception of ``failures`` while
    measuring is a failed timing."""
    note = ""
    try:
        rows = read_keyed_json(path, key)
        if rows is not None:
            return Measured(parse(rows, path), "cache")
    except CorruptFileError as err:
        note = f"damaged cache file measured again: {err}"
    try:
        parsed = parse(dict(measure()), path)
    except failures as err:
        return Measured(None, "timing failed", note, err)
    try:
        write_keyed_json(path, key, parsed)
    except OSError as err:  # a read-only cache: measured again next time
        note = f"{note}; not cached ({err})" if note else f"not cached ({err})"
    return Measured(parsed, "measured", note)
