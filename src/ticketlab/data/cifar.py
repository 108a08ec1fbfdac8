"""CIFAR-10 from its python version: the tarball ``cifar-10-python.tar.gz`` or the extracted
``cifar-10-batches-py`` folder (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html).

Each batch is a pickled dict ``{b"data": uint8 (n, 3072) row-major RGB planes, b"labels": [int]}``.
Pickles can run code, so they are read with an unpickler that only builds numpy arrays and plain
containers; anything else in a batch file is an error, not an import.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from ticketlab.files import CorruptFileError

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
NUM_CLASSES = 10

_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's array-unpickling function
# The archive was pickled by Python 2 with numpy.core; files pickled by numpy 2 name numpy._core.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how Python 3 writes bytes at protocol 2
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch") from None


def parse_batch(data: bytes, *, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> (images uint8 (n, 3, 32, 32), labels int64 (n,))."""
    try:
        batch = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # any unpickling failure means a damaged or foreign file
        raise CorruptFileError(f"{name}: not a readable CIFAR batch ({type(exc).__name__}: {exc})") from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise CorruptFileError(f"{name}: CIFAR batch without b'data' and b'labels'")
    images, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072:
        raise CorruptFileError(f"{name}: CIFAR data must be uint8 (n, 3072), got {getattr(images, 'shape', None)}")
    if labels.shape != (len(images),) or (len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES)):
        raise CorruptFileError(f"{name}: {labels.shape} labels (range 0-9 expected) for {len(images)} images")
    return images.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _batches_from_tar(path: Path) -> dict[str, bytes]:
    wanted = {f"{FOLDER}/{b}" for b in (*TRAIN_BATCHES, TEST_BATCH)}
    found: dict[str, bytes] = {}
    try:
        # Stream the members in archive order: random access into a .tar.gz re-decompresses from the start.
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    handle = tar.extractfile(member)
                    assert handle is not None
                    found[member.name.rsplit("/", 1)[1]] = handle.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise CorruptFileError(f"{path}: corrupt or truncated tar archive ({exc})") from exc
    return found


def read_cifar10(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read CIFAR-10 from the tarball or the extracted folder -> (x_train, y_train, x_test, y_test)."""
    path = Path(path)
    if path.is_dir():
        found = {b: (path / b).read_bytes() for b in (*TRAIN_BATCHES, TEST_BATCH) if (path / b).is_file()}
    else:
        found = _batches_from_tar(path)
    missing = [b for b in (*TRAIN_BATCHES, TEST_BATCH) if b not in found]
    if missing:
        raise CorruptFileError(f"{path}: CIFAR-10 batches missing: {', '.join(missing)}")
    train = [parse_batch(found[b], name=f"{path}/{b}") for b in TRAIN_BATCHES]
    x_test, y_test = parse_batch(found[TEST_BATCH], name=f"{path}/{TEST_BATCH}")
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return x_train, y_train, x_test, y_test
