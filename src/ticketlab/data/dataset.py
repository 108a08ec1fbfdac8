"""The in-memory dataset every experiment trains on, and ``load_dataset`` which builds it.

A registry entry returns raw splits (the original training set and the test set, any dtype); this
module holds out the seeded validation split and standardises every split with the per-channel mean
and std of what remains for training, so no statistic ever sees validation or test data.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ticketlab.registry import Registry, split_name


@dataclass
class RawSplits:
    """What a dataset loader returns: un-standardised (N, C, H, W) images and int labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    augment: str | None = None  # a name in ticketlab.data.AUGMENTATIONS, applied to training batches


# A loader gets the name's argument (``synthetic:3x32x32`` -> ``"3x32x32"``) and load_dataset's options.
Loader = Callable[..., RawSplits]
DATASETS: Registry[Loader] = Registry("dataset")


@dataclass
class Dataset:
    """Whole splits as tensors (airbench style): batches are index slices, never a DataLoader."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    augment: str | None
    mean: tuple[float, ...] = ()  # the per-channel statistics used, to undo or reuse the standardisation
    std: tuple[float, ...] = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    def to(self, device: str | torch.device) -> Dataset:
        """A copy with every tensor on ``device`` (no copy for tensors already there)."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **moved)


def split_validation(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded disjoint (train, val) index sets of the original training set, each in ascending order."""
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be in [0, {n}) for a training set of {n} examples, got {val_size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std of (N, C, H, W) data, in float64.

    uint8 images go through a 256-bin histogram per channel (exact, and faster than any float copy);
    other dtypes are accumulated in float64 over chunks so no float64 copy of the whole set is made.
    """
    c = x.shape[1]
    if x.dtype == torch.uint8:
        values = torch.arange(256, dtype=torch.float64)
        # torch.bincount takes uint8 as is (much faster than np.bincount, which widens to int64 first)
        hist = torch.stack([torch.bincount(x[:, i].flatten(), minlength=256).cpu().to(torch.float64) for i in range(c)])
        total, total_sq = hist @ values, hist @ values.square()
    else:
        total = torch.zeros(c, dtype=torch.float64)
        total_sq = torch.zeros(c, dtype=torch.float64)
        for start in range(0, len(x), chunk):
            part = x[start : start + chunk].to(torch.float64)
            total += part.sum(dim=(0, 2, 3)).cpu()
            total_sq += part.square().sum(dim=(0, 2, 3)).cpu()
    count = max(len(x) * x.shape[2] * x.shape[3], 1)
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return mean, torch.where(std > 0, std, torch.ones_like(std))  # a constant channel is left unscaled


def standardise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std per channel, as float32."""
    out = x.to(torch.float32)
    if out is x:
        out = out.clone()
    shape = (1, -1, 1, 1)
    return out.sub_(mean.to(torch.float32).view(shape)).div_(std.to(torch.float32).view(shape))


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    val_size: int = 5000,
    seed: int = 0,
    download: bool = True,
    device: str | torch.device = "cpu",
) -> Dataset:
    """Load a registered dataset with a seeded validation split held out of its training set.

    Raises ``UnknownNameError`` for an unknown name and ``FileNotFoundError`` (saying where it looked and
    how to get the data) when the files are missing and ``download`` is False.
    """
    loader = DATASETS.get(name)
    _, arg = split_name(name)
    raw = loader(arg, root=root, download=download, val_size=val_size)
    train_idx, val_idx = split_validation(len(raw.x_train), val_size, seed)
    x_train = raw.x_train[train_idx]
    mean, std = channel_stats(x_train)
    data = Dataset(
        name=name,
        x_train=standardise(x_train, mean, std),
        y_train=raw.y_train[train_idx].to(torch.int64),
        x_val=standardise(raw.x_train[val_idx], mean, std),
        y_val=raw.y_train[val_idx].to(torch.int64),
        x_test=standardise(raw.x_test, mean, std),
        y_test=raw.y_test.to(torch.int64),
        num_classes=raw.num_classes,
        augment=raw.augment,
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
    )
    return data.to(device)
