"""Named registries (timm style): ``@MODELS.register("lenet300")`` beside the builder.

Names may carry an argument after a colon (``mlp:784-400-10``, ``sgimp:75%``): the registry key is the
part before the colon, the rest is handed to the entry by whoever builds it (see :func:`split_name`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A name that no registry entry has; the message lists close matches and every valid name."""


def split_name(name: str) -> tuple[str, str | None]:
    """``"mlp:784-10"`` -> ``("mlp", "784-10")``; ``"snip"`` -> ``("snip", None)``."""
    key, sep, arg = name.strip().partition(":")
    return key.strip().lower(), (arg.strip() if sep else None)


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        key = name.lower()

        def decorator(obj: T) -> T:
            if key in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The entry for ``name`` (its key, before any ``:argument``)."""
        key, _ = split_name(name)
        if key not in self._entries:
            raise UnknownNameError(self.unknown_message(name))
        return self._entries[key]

    def unknown_message(self, name: str) -> str:
        key, _ = split_name(name)
        close = difflib.get_close_matches(key, self.names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Allowed: {', '.join(self.names())}."

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and split_name(name)[0] in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
