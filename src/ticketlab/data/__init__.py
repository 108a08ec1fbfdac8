"""Datasets as in-memory tensors: loading (local files, download, synthetic), validation split,
standardisation and batched augmentation."""

from ticketlab.data import synthetic as _synthetic  # noqa: F401  (registers "synthetic")
from ticketlab.data.augment import AUGMENTATIONS, cifar_augment
from ticketlab.data.dataset import DATASETS, Dataset, RawSplits, load_dataset
from ticketlab.data.download import DownloadError
from ticketlab.data.standard import dataset_status

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "Dataset",
    "DownloadError",
    "RawSplits",
    "cifar_augment",
    "dataset_status",
    "load_dataset",
]
