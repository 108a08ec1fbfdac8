"""IDX files (the MNIST / Fashion-MNIST format), gzipped or raw, parsed into numpy arrays.

Format (LeCun's MNIST page): two zero bytes, a type code, the number of dimensions, then one big-endian
uint32 per dimension, then the data. A file whose header or length does not match is rejected with
:class:`~ticketlab.files.CorruptFileError` instead of being cut or padded into something plausible.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ticketlab.files import CorruptFileError

_GZIP_MAGIC = b"\x1f\x8b"
# type code -> big-endian dtype; MNIST-style data sets only use 0x08 but the format defines the rest.
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_bytes_maybe_gzip(path: str | os.PathLike) -> bytes:
    """The file's content, decompressed if it is gzip (detected by magic, not by the file name)."""
    path = Path(path)
    data = path.read_bytes()
    if data[:2] != _GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; truncation is EOFError
        raise CorruptFileError(f"{path}: corrupt or truncated gzip data ({exc})") from exc


def parse_idx(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array of the stored shape; the header must match the length exactly."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise CorruptFileError(f"{name}: not an IDX file (bad magic {data[:4].hex() or 'empty'})")
    dtype = np.dtype(_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise CorruptFileError(f"{name}: IDX header truncated or has no dimensions")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise CorruptFileError(
            f"{name}: IDX length {len(data)} bytes does not match its header {shape} ({expected} bytes)"
        )
    # frombuffer is a read-only view of ``data``; the copy makes it native-endian and writable for torch.
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a numpy array."""
    return parse_idx(read_bytes_maybe_gzip(path), name=str(path))
