"""Downloading a dataset's files from its mirrors: each file is tried on every mirror in order, streamed
to a temporary file beside its destination while its sha256/md5 are computed, and renamed into place only
when every published digest matches. A truncated or altered file therefore never reaches the cache."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from ticketlab.data import sources
from ticketlab.data.sources import RemoteFile
from ticketlab.files import mkstemp_shared

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """No mirror delivered a file with the published checksums."""


def _fetch(url: str, tmp: Path, file: RemoteFile, progress: Progress | None, timeout: float) -> None:
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    request = urllib.request.Request(url, headers={"User-Agent": "ticketlab"})
    with urllib.request.urlopen(request, timeout=timeout) as response, tmp.open("wb") as out:
        length = response.headers.get("Content-Length")
        task = progress.add_task("", name=file.name, total=int(length) if length else None) if progress else None
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            sha256.update(chunk)
            md5.update(chunk)
            if progress is not None and task is not None:
                progress.advance(task, len(chunk))
        out.flush()
        os.fsync(out.fileno())
    if file.sha256 and sha256.hexdigest() != file.sha256:
        raise ValueError(f"sha256 {sha256.hexdigest()} != expected {file.sha256} (truncated or altered)")
    if file.md5 and md5.hexdigest() != file.md5:
        raise ValueError(f"md5 {md5.hexdigest()} != expected {file.md5} (truncated or altered)")


def download_file(
    file: RemoteFile,
    mirrors: Sequence[str],
    dest_dir: str | os.PathLike,
    *,
    progress: Progress | None = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch ``file`` from the first mirror that serves it with the right checksums; atomic write."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + file.name
        fd, tmp_name = mkstemp_shared(dest_dir, f".{file.name}.", ".partial")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            _fetch(url, tmp, file, progress, timeout)
            os.replace(tmp, dest_dir / file.name)
            return dest_dir / file.name
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            failures.append(f"{url}: {exc}")
        finally:
            tmp.unlink(missing_ok=True)
    expected = f"sha256 {file.sha256}" if file.sha256 else f"md5 {file.md5}"
    raise DownloadError(
        f"could not download {file.name} (expected {expected}); nothing was saved. Tried " + "; ".join(failures)
    )


def download_dataset(name: str, dest_dir: str | os.PathLike, *, show_progress: bool = True) -> list[Path]:
    """Download every file of dataset ``name`` (a key of ``sources.SOURCES``) into ``dest_dir``.

    Files already present are kept only if they carry the published digests; others are replaced.
    """
    source = sources.SOURCES[name]
    dest_dir = Path(dest_dir)
    columns = (TextColumn("{task.fields[name]}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    paths = []
    with Progress(*columns, transient=True, disable=not show_progress) as progress:
        for file in source.files:
            existing = dest_dir / file.name
            if existing.is_file() and _digest(existing) == file.sha256:
                paths.append(existing)
                continue
            paths.append(download_file(file, sources.MIRRORS[name], dest_dir, progress=progress))
    return paths


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
