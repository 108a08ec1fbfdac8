"""Finding a dataset's files on disk: an explicit path, then ``$TICKETLAB_DATA``, then the user cache,
then known system folders. The first folder that holds every required file wins; a partial folder
is passed over (and named in the error if nothing is found)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ticketlab.data.sources import SOURCES, Source


@dataclass(frozen=True)
class Found:
    """Where a dataset was found: the folder, one path per required item, and which lookup step hit."""

    folder: Path
    paths: tuple[Path, ...]
    source: str  # "explicit path" | "$TICKETLAB_DATA" | "cache" | "system"


def cache_dir() -> Path:
    """The user cache, ``$XDG_CACHE_HOME/ticketlab`` or ``~/.cache/ticketlab``; downloads go here."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ticketlab"


def candidates(name: str, root: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """Every folder looked at for ``name``, in lookup order, with the step's label."""
    source = SOURCES[name]
    out: list[tuple[Path, str]] = []
    if root is not None:
        root = Path(root).expanduser()
        # An explicit path may be the dataset folder itself, a data root holding it, or one of its files
        # (the CIFAR tarball, the cifar-10-batches-py folder).
        out += [(root, "explicit path"), (root / source.subdir, "explicit path")]
        if any(root.name in item for item in source.items):
            out.append((root.parent, "explicit path"))
    if env := os.environ.get("TICKETLAB_DATA"):
        out.append((Path(env).expanduser() / source.subdir, "$TICKETLAB_DATA"))
    out.append((cache_dir() / source.subdir, "cache"))
    out += [(Path(d), "system") for d in source.system_dirs]
    return out


def _match(folder: Path, source: Source) -> tuple[Path, ...] | None:
    paths = []
    for item in source.items:
        hit = next((folder / n for n in item if (folder / n).exists()), None)
        if hit is None:
            return None
        paths.append(hit)
    return tuple(paths)


def locate(name: str, root: str | os.PathLike | None = None) -> Found | None:
    """The first candidate folder holding all of ``name``'s files, or None."""
    for folder, label in candidates(name, root):
        if paths := _match(folder, SOURCES[name]):
            return Found(folder, paths, label)
    return None


def download_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """Where a download of ``name`` is stored: under the explicit root if given, else
    ``$TICKETLAB_DATA`` if set, else the user cache."""
    subdir = SOURCES[name].subdir
    if root is not None:
        return Path(root).expanduser() / subdir
    if env := os.environ.get("TICKETLAB_DATA"):
        return Path(env).expanduser() / subdir
    return cache_dir() / subdir


def not_found_message(name: str, root: str | os.PathLike | None = None) -> str:
    """Where we looked and how to get the data, for FileNotFoundError."""
    source = SOURCES[name]
    wanted = ", ".join(" or ".join(item) for item in source.items)
    looked = ", ".join(f"{folder} ({label})" for folder, label in candidates(name, root))
    return f"dataset {name!r} not found (need {wanted}); looked in {looked}. To get it: {source.how_to_get}."
