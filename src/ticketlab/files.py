"""Atomic, verified tensor files (safetensors).

Every file ticketlab writes goes to a temporary name first and is renamed into place, so a reader never
sees half a file. Tensor files carry a sha256 of their tensor bytes in the safetensors metadata: a file
truncated or altered later is detected on load instead of being used.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

_CHECKSUM_KEY = "ticketlab.sha256"


class CorruptFileError(ValueError):
    """A file exists but is truncated, altered or not what it claims to be."""


def umask() -> int:
    """The process's file-creation mask (read, not changed, where the system shows it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore it, which no other thread may see half-done
        old = os.umask(0o022)
        os.umask(old)
    return old


_UMASK_LOCK = threading.Lock()


def mkstemp_shared(folder: str | os.PathLike, prefix: str, suffix: str) -> tuple[int, str]:
    """``tempfile.mkstemp`` whose file gets the mode a plain ``open`` would give (0o666 less the umask,
    typically 0644), not mkstemp's private 0600: the file is renamed into place for others to read."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    os.fchmod(fd, 0o666 & ~umask())
    return fd, tmp


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder and an atomic rename; the file gets the
    mode ``open`` would give it (umask respected)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = mkstemp_shared(path.parent, f".{path.name}.", ".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Strict JSON (RFC 8259): NaN and infinities, which strict parsers reject, are written as null."""
    text = json.dumps(_finite(obj), indent=2, sort_keys=True, default=str, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def load_json(path: str | os.PathLike) -> Any:
    """A JSON file ticketlab wrote; one cut short or altered is a :class:`CorruptFileError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(
            f"{path}: not valid JSON ({exc}); the file was cut short or altered: delete it, or the level folder "
            "holding it, and run again to redo that part"
        ) from None


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _digest(tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim too (BN counters)
    return h.hexdigest()


def save_tensors(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """Save tensors atomically with a content checksum in the metadata."""
    plain = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta[_CHECKSUM_KEY] = _digest(plain)
    return atomic_write_bytes(path, st_save(plain, metadata=meta))


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load tensors and metadata; raise :class:`CorruptFileError` if the file is damaged."""
    path = Path(path)
    return parse_tensors(path.read_bytes(), path)


def parse_tensors(data: bytes, where: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """:func:`load_tensors` on a file's bytes (e.g. received over the network); ``where`` names it in errors."""
    path = where
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + header_len]).get("__metadata__", {}) or {}
    except (SafetensorError, ValueError, json.JSONDecodeError, RuntimeError) as exc:
        raise CorruptFileError(f"{path}: not a readable safetensors file ({exc})") from exc
    expected = meta.pop(_CHECKSUM_KEY, None)
    if expected is None:
        raise CorruptFileError(f"{path}: no ticketlab checksum in its metadata; not written by ticketlab")
    if _digest(tensors) != expected:
        raise CorruptFileError(f"{path}: checksum mismatch, the file was altered or damaged")
    return {name: tensors[name] for name in sorted(tensors)}, meta  # safetensors gives hash order


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """The content checksum ``save_tensors`` stores: names, dtypes, shapes and bytes of every tensor."""
    return _digest(tensors)


# -- measurement caches ------------------------------------------------------------------------------
CACHE_ENV = "TICKETLAB_CACHE_DIR"


def user_cache_dir() -> Path:
    """Where measured choices are kept: ``$TICKETLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/ticketlab``, else
    ``~/.cache/ticketlab``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ticketlab"


def keyed_file(folder: str | os.PathLike, key: Mapping[str, Any]) -> Path:
    """The file of ``folder`` that holds what was measured for ``key`` (a JSON-able mapping)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(folder) / f"{digest}.json"


def _keyed_checksum(key: Any, rows: Any) -> str:
    return hashlib.sha256(json.dumps({"key": key, "rows": rows}, sort_keys=True).encode()).hexdigest()


def write_keyed_json(path: str | os.PathLike, key: Mapping[str, Any], rows: Mapping[str, Any]) -> Path:
    """Write ``rows`` measured for ``key`` with a checksum of both (read back by :func:`read_keyed_json`)."""
    plain_key, plain_rows = json.loads(json.dumps(key)), json.loads(json.dumps(rows))
    return atomic_write_json(
        path, {"key": plain_key, "rows": plain_rows, "checksum": _keyed_checksum(plain_key, plain_rows)}
    )


def read_keyed_json(path: str | os.PathLike, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """The rows :func:`write_keyed_json` wrote for ``key`` (None when there is no file); a file that does not
    parse, fails its checksum or names another key is a :class:`CorruptFileError`."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        rows = data["rows"]
        if data["key"] != json.loads(json.dumps(key)) or data["checksum"] != _keyed_checksum(data["key"], rows):
            raise CorruptFileError(f"{path}: checksum or key does not match its contents")
        if not isinstance(rows, dict):
            raise CorruptFileError(f"{path}: its rows are not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as err:
        if isinstance(err, CorruptFileError):
            raise
        raise CorruptFileError(f"{path}: unreadable cache file ({type(err).__name__}: {err})") from None
    return rows
