"""ticketlab: find, train and study sparse subnetworks (lottery tickets) with PyTorch."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

__version__ = "0.1.0"

_API = {"train_dense", "prune", "load_results", "load_ticket"}

# Module names of the first release that README and user scripts used, kept importable after the layout
# grouped them into packages (docs/architecture.md): ``ticketlab.train.train`` keeps working.
MOVED = {
    "ticketlab.train": "ticketlab.training",
    "ticketlab.vectorized": "ticketlab.training.stacked",
    "ticketlab.fused_sgd": "ticketlab.training.fused_sgd",
    "ticketlab.batched": "ticketlab.experiment.lockstep",
    "ticketlab.recipe": "ticketlab.config.recipe",
    "ticketlab.spec": "ticketlab.config.spec",
    "ticketlab.gemm": "ticketlab.hardware.blas",
    "ticketlab.io": "ticketlab.files",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module name as the module that now holds its contents (the same module object)."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(MOVED[spec.name])
        self._own_spec = module.__spec__  # the import system is about to write the alias's spec over it
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._own_spec  # already executed under its own name; keep that name


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())


def __getattr__(name: str):
    # The API imports torch; keep ``import ticketlab`` (and ``ticketlab --help``) light until it is used.
    if name in _API:
        from ticketlab import api

        return getattr(api, name)
    if f"{__name__}.{name}" in MOVED:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(name)
