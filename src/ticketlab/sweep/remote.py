"""Ray tasks on machines that share no filesystem with the driver.

A task computes in a private scratch folder on its node and returns its results as bytes through Ray's
object store; the driver verifies and installs them into the sweep's folder (``transfer``). Before it
starts, the task receives what the driver already has of its runs (finished levels, so it resumes rather
than recomputes), their stored initial weights and shared dense baselines. A node that lacks a dataset's
files gets them from the driver: they are put in the object store once per sweep, checked against their
sha256 on arrival and stored in that node's data cache (``$TICKETLAB_DATA``, else the user cache), where
later tasks on the node find them.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ticketlab.config.spec import ExperimentSpec
from ticketlab.data.locate import download_dir, locate
from ticketlab.data.sources import SOURCES
from ticketlab.experiment.dense import DENSE_DIR, dense_name
from ticketlab.experiment.run import init_file_prefix
from ticketlab.files import CorruptFileError
from ticketlab.registry import split_name
from ticketlab.sweep.transfer import Bundle, bundle, check, install, sha256


def needed(root: Path, specs: list[ExperimentSpec]) -> list[str]:
    """The paths under ``root`` a batch of runs resumes from: run directories, initial weights, dense levels."""
    rels = [spec.run_id() for spec in specs]
    inits = root / "inits"
    if inits.is_dir():
        prefixes = tuple(init_file_prefix(spec) for spec in specs)
        rels += [f"inits/{p.name}" for p in sorted(inits.iterdir()) if p.name.startswith(prefixes)]
    rels += [f"{DENSE_DIR}/{name}" for spec in specs if (name := dense_name(spec)) is not None]
    return rels


def dataset_files(name: str, data_root: str | None) -> dict[str, tuple[str, bytes]] | None:
    """A file-based dataset's files as found here (relative to its folder, with sha256), or None when it
    is generated or not found here."""
    key, _ = split_name(name)
    if key not in SOURCES:
        return None
    found = locate(key, data_root)
    if found is None:
        return None
    out = {}
    for path in found.paths:
        items = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for item in items:
            data = item.read_bytes()
            out[item.relative_to(found.folder).as_posix()] = (sha256(data), data)
    return out


def ensure_data(name: str, data_root: str | None, fetch: Callable[[], dict[str, tuple[str, bytes]]]) -> bool:
    """Make ``name``'s files present on this node, storing the driver's copy (``fetch()``, called only if
    needed) in the node's data cache after checking every file's sha256; True if it was fetched."""
    key, _ = split_name(name)
    if locate(key, data_root) is not None:
        return False
    files = fetch()
    folder = download_dir(key, None)
    for rel, (digest, data) in files.items():
        if sha256(data) != digest or Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise CorruptFileError(f"dataset {name!r}: {rel} does not match the driver's sha256")
    for rel, (_, data) in files.items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    return True


def remote_batch(
    batch: list[dict[str, Any]], shipped: Bundle, datasets: dict[str, list[Any]], kwargs: dict[str, Any]
) -> tuple[list[Any], Bundle]:
    """The Ray task: install ``shipped`` in a scratch folder, fetch missing datasets, run the batch there
    and return its outcomes and every file it wrote or changed."""
    import ray

    from ticketlab.sweep.batch import run_batch

    scratch = Path(tempfile.mkdtemp(prefix="ticketlab-task-"))
    try:
        install(scratch, shipped)
        for name, ref in datasets.items():
            ensure_data(name, kwargs.get("data_root"), lambda ref=ref: ray.get(ref[0]))
        outcomes = run_batch(batch, str(scratch), **kwargs)
        specs = [ExperimentSpec.model_validate(data) for data in batch]
        files = bundle(scratch, needed(scratch, specs), unchanged=shipped)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"
    return [replace(o, node=node) for o in outcomes], files


class RayPool:
    """Batches as Ray tasks; results installed under ``root`` as each task ends."""

    def __init__(
        self, root: str, specs: list[ExperimentSpec], cpus: int, kwargs: dict[str, Any], data_root: str | None
    ) -> None:
        import ray

        self.root = Path(root)
        self.kwargs = kwargs
        self.capacity = 1  # tasks in flight at a time: set from the cluster's CPUs by the caller
        self.task = ray.remote(num_cpus=cpus)(remote_batch)
        self.batches: dict[Any, list[dict[str, Any]]] = {}
        self.datasets: dict[str, list[Any]] = {}
        for name in sorted({s.dataset for s in specs}):
            files = dataset_files(name, data_root)
            if files is not None:  # wrapped in a list: Ray passes a nested ref as is, fetched only when needed
                self.datasets[name] = [ray.put(files)]

    def submit(self, batch: list[dict[str, Any]], budget: int | None = None) -> Any:
        specs = [ExperimentSpec.model_validate(data) for data in batch]
        shipped = bundle(self.root, needed(self.root, specs))
        datasets = {s.dataset: self.datasets[s.dataset] for s in specs if s.dataset in self.datasets}
        kwargs = self.kwargs if budget is None else {**self.kwargs, "budget": budget}
        ref = self.task.remote(batch, shipped, datasets, kwargs)
        self.batches[ref] = batch
        return ref

    def next_done(self, handles: list[Any]) -> tuple[Any, list[Any]]:
        import ray

        from ticketlab.sweep.batch import lost

        ready, _ = ray.wait(handles, num_returns=1)
        batch = self.batches.pop(ready[0])
        try:
            outcomes, files = ray.get(ready[0])
            check(files)
        except CorruptFileError as exc:
            return ready[0], lost(batch, f"results damaged on the way back: {exc}")
        except Exception as exc:  # a lost task or node fails its batch only
            return ready[0], lost(batch, f"ray task failed: {type(exc).__name__}: {exc}")
        install(self.root, files)
        return ready[0], outcomes
