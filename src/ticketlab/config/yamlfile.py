"""Reading the YAML files a person writes (specs, sweeps, tune files): every mistake in one is a
``ValueError`` whose lines each name the file, and the field where there is one; never a parser's
traceback. An empty file is refused: it would silently mean "every default" (a long job in ./runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def load_mapping(path: str | os.PathLike, kind: str, example: str) -> dict[str, Any]:
    """The mapping a YAML ``kind`` file (spec, sweep, tune file) holds; ``example`` is what a minimal one
    contains, for the message about an empty file."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder, not a {kind} file") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a text file (byte {exc.start} is not UTF-8); a {kind} is YAML text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or type(exc).__name__
        raise ValueError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None or data == {}:
        raise ValueError(f"{path}: the file is empty; a {kind} needs at least {example} (nothing was run)")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a {kind} is a mapping of fields, e.g. {example}; got a {type(data).__name__}")
    return data
