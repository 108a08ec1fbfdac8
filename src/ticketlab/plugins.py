"""Plugins: user modules that register datasets, models, criteria or methods (``@DATASETS.register(...)``
...) and are imported before a command runs: ``ticketlab --plugin my_module`` (a module name, or the path of
a ``.py`` file; repeatable), and every entry point of the group ``ticketlab.plugins`` of installed packages
(an entry point names a module, or a function that registers when called).

A sweep's worker processes and Ray tasks import the same plugins before they read their specs: what this
process loaded (:func:`loaded`) travels with the work (:func:`load_plugins` again, there). A plugin given by
name is looked for in the folder the command was started from, as ``python -m`` would.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

ENTRY_POINT_GROUP = "ticketlab.plugins"

_loaded: list[str] = []  # plugins this process imported through load_plugins, as they are passed on


class PluginError(ValueError):
    """A plugin that cannot be found or fails while it is imported (its registrations included)."""


def load_plugins(names: Iterable[str] = (), *, entry_points: bool = True, cwd: str | None = None) -> list[str]:
    """Import each plugin of ``names`` (module names or ``.py`` paths) and, with ``entry_points``, those the
    installed packages declare; returns every plugin loaded in this process so far, as :func:`loaded`.
    ``cwd``: the folder where names are looked for first (default: the current one). Loading one twice
    does nothing the second time."""
    folder = os.path.abspath(cwd or os.getcwd())
    names = list(names)
    if names and folder not in sys.path:
        sys.path.append(folder)  # after the installed packages: a file there never shadows one of them
    for name in names:
        _import(name, folder)
    if entry_points:
        for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            key = f"entry point {point.name} = {point.value}"
            if key in _done:
                continue
            try:
                target = point.load()
                if callable(target) and not isinstance(target, ModuleType):
                    target()
            except Exception as exc:
                raise PluginError(
                    f"plugin {point.name!r} ({point.value}, entry point of {ENTRY_POINT_GROUP}): "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            _done.add(key)
    return loaded()


def loaded() -> list[str]:
    """The plugins given by name or path that this process loaded, in order (absolute paths for files)."""
    return list(_loaded)


_done: set[str] = set()


def _import(name: str, folder: str) -> ModuleType:
    is_file = name.endswith(".py") or os.sep in name
    key = str(Path(folder, name).resolve()) if is_file else name
    if key in _done:
        return sys.modules[_module_name(key) if is_file else name]
    try:
        if is_file:
            path = Path(key)
            if not path.is_file():
                raise PluginError(f"plugin {name!r}: no such file")
            spec = importlib.util.spec_from_file_location(_module_name(key), path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[spec.name]
                raise
        else:
            module = importlib.import_module(name)
    except PluginError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name != name.split(".")[0]:
            raise PluginError(f"plugin {name!r}: it imports {exc.name!r}, which is not installed") from exc
        raise PluginError(
            f"plugin {name!r}: no module of that name in {folder} or on the Python path; give a module name or "
            "the path of a .py file"
        ) from None
    except Exception as exc:
        raise PluginError(f"plugin {name!r} failed while loading: {type(exc).__name__}: {exc}") from exc
    _done.add(key)
    _loaded.append(key)
    return module


def _module_name(path: str) -> str:
    """The module name of a plugin file: its stem, as ``import`` would name it."""
    return Path(path).stem
