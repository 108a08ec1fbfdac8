"""Run directories moved between machines as bytes: what a Ray task receives before it starts (the
finished levels it resumes from, the shared initial weights and dense baselines) and what it sends back.

A bundle maps a path relative to the run folder to (sha256, bytes). The receiver checks every sha256, and
every tensor file's own checksum (``ticketlab.files``), before writing anything; it then writes each file
atomically, ``metrics.json`` files after all others and ``done.json`` last, so a crash while installing
leaves levels and runs that are complete or redone, as on one machine. Shared files (``inits/``,
``dense/``) are never overwritten: the first copy to arrive is the one every run uses.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from ticketlab.files import CorruptFileError, atomic_write_bytes, parse_tensors

Bundle = dict[str, tuple[str, bytes]]
NOT_SENT = frozenset({"claim.json", "failed.json"})  # about one machine's sweep, not the run's results
SHARED = ("inits", "dense")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bundle(root: str | os.PathLike, rels: Iterable[str], unchanged: Bundle | None = None) -> Bundle:
    """The files under each ``root/rel`` (a file or a folder, recursively), except claims, temporary files
    and files identical to those in ``unchanged`` (what the other side already has)."""
    root = Path(root)
    unchanged = unchanged or {}
    out: Bundle = {}
    for rel in rels:
        top = root / rel
        paths = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else []
        for path in paths:
            if path.name in NOT_SENT or path.name.startswith("."):
                continue
            name = path.relative_to(root).as_posix()
            data = path.read_bytes()
            digest = sha256(data)
            if name in unchanged and unchanged[name][0] == digest:
                continue
            out[name] = (digest, data)
    return out


def _safe(rel: str) -> PurePosixPath:
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise CorruptFileError(f"{rel!r}: not a path inside the run folder")
    return path


def check(files: Bundle) -> None:
    """Raise :class:`CorruptFileError` naming the first file whose bytes do not match what was sent."""
    for rel, (digest, data) in files.items():
        _safe(rel)
        if sha256(data) != digest:
            raise CorruptFileError(f"{rel}: received bytes do not match the sender's sha256")
        if rel.endswith(".safetensors"):
            parse_tensors(data, rel)


def _order(rel: str) -> tuple[int, str]:
    name = PurePosixPath(rel).name
    return (2 if name == "done.json" else 1 if name == "metrics.json" else 0), rel


def install(root: str | os.PathLike, files: Bundle) -> list[str]:
    """Verify ``files`` and write them under ``root``; returns the paths written (identical files already
    there, and shared entries that already exist, are left alone)."""
    check(files)
    root = Path(root)
    complete = {
        rel.split("/")[1]
        for rel in files
        if rel.startswith("dense/")
        and rel.count("/") >= 2
        and (root / "dense" / rel.split("/")[1] / "metrics.json").exists()
    }
    written = []
    for rel in sorted(files, key=_order):
        digest, data = files[rel]
        target = root / _safe(rel)
        parts = PurePosixPath(rel).parts
        if parts[0] in SHARED and (
            target.exists() or (parts[0] == "dense" and len(parts) > 2 and parts[1] in complete)
        ):
            continue
        if target.exists() and sha256(target.read_bytes()) == digest:
            continue
        atomic_write_bytes(target, data)
        written.append(rel)
    return written
