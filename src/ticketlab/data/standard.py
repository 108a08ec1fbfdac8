"""The standard datasets (MNIST, Fashion-MNIST, CIFAR-10): find their files (see :mod:`locate`), download
them if allowed, and parse them. Files found locally are validated by format and shape; a damaged file
is an error (:class:`~ticketlab.files.CorruptFileError` naming it), never silently used or replaced."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ticketlab.data import cifar
from ticketlab.data.dataset import DATASETS, RawSplits
from ticketlab.data.download import DownloadError, download_dataset
from ticketlab.data.idx import read_idx
from ticketlab.data.locate import Found, download_dir, locate, not_found_message
from ticketlab.data.sources import SOURCES
from ticketlab.files import CorruptFileError


def find_or_download(name: str, root: str | os.PathLike | None, download: bool) -> Found:
    """Locate ``name``; if absent, download it when allowed, else raise FileNotFoundError."""
    found = locate(name, root)
    if found is None:
        if not download:
            raise FileNotFoundError(not_found_message(name, root))
        try:
            download_dataset(name, download_dir(name, root))
        except DownloadError as exc:
            raise DownloadError(
                f"dataset {name!r} is not on this machine and downloading it failed ({exc}). Put its files in "
                f"$TICKETLAB_DATA/{SOURCES[name].subdir}/ or in a folder given as the data root (--data-root); "
                f"or: {SOURCES[name].how_to_get}"
            ) from None
        found = locate(name, root)
        assert found is not None, "downloaded files were not found where they were written"
    return found


def _idx_pair(images: Path, labels: Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise CorruptFileError(f"{images}: expected uint8 images (N, H, W), got {x.dtype} {x.shape}")
    if y.shape != (len(x),) or (len(y) and int(y.max()) >= num_classes):
        raise CorruptFileError(f"{labels}: expected {len(x)} labels in 0..{num_classes - 1}, got shape {y.shape}")
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y).to(torch.int64)


def load_idx_dataset(name: str, root: str | os.PathLike | None, download: bool) -> RawSplits:
    """MNIST-style: four IDX files in the order train images, train labels, test images, test labels."""
    train_x, train_y, test_x, test_y = find_or_download(name, root, download).paths
    x_train, y_train = _idx_pair(train_x, train_y, 10)
    x_test, y_test = _idx_pair(test_x, test_y, 10)
    return RawSplits(x_train, y_train, x_test, y_test, num_classes=10)


@DATASETS.register("mnist")
def mnist(arg: str | None, *, root: str | os.PathLike | None = None, download: bool = True, **_: object) -> RawSplits:
    """MNIST (LeCun et al. 1998): 60k/10k grey 28x28 digits."""
    return load_idx_dataset("mnist", root, download)


@DATASETS.register("fashion-mnist")
def fashion_mnist(
    arg: str | None, *, root: str | os.PathLike | None = None, download: bool = True, **_: object
) -> RawSplits:
    """Fashion-MNIST (Xiao et al. 2017): MNIST's format with 10 clothing classes."""
    return load_idx_dataset("fashion-mnist", root, download)


@DATASETS.register("cifar10")
def cifar10(arg: str | None, *, root: str | os.PathLike | None = None, download: bool = True, **_: object) -> RawSplits:
    """CIFAR-10: 50k/10k RGB 32x32 images; trained with the standard crop+flip augmentation."""
    (path,) = find_or_download("cifar10", root, download).paths
    x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in cifar.read_cifar10(path))
    return RawSplits(x_train, y_train, x_test, y_test, num_classes=cifar.NUM_CLASSES, augment="cifar")


def dataset_status(root: str | os.PathLike | None = None) -> list[dict]:
    """One row per registered dataset for ``ticketlab data list``: whether and where its files are.

    Only looks for files (no parsing). The synthetic dataset is generated, so it is always found with
    source ``"built-in"``.
    """
    rows = []
    for name in DATASETS.names():
        if name not in SOURCES:
            rows.append({"name": name, "found": True, "where": None, "files": [], "source": "built-in"})
            continue
        found = locate(name, root)
        rows.append(
            {
                "name": name,
                "found": found is not None,
                "where": str(found.folder) if found else None,
                "files": [p.name for p in found.paths] if found else [],
                "source": found.source if found else "-",
            }
        )
    return rows
