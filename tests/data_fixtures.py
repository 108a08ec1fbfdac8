"""Generated stand-ins for the standard dataset files, and a tiny HTTP server, for tests/test_data.py."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import pickle
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX: 0, 0, type 0x08, ndim, big-endian dims, data."""
    assert array.dtype == np.uint8
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.tobytes()


def mnist_arrays(n_train: int = 60, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        IDX_NAMES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        IDX_NAMES[1]: (np.arange(n_train) % 10).astype(np.uint8),
        IDX_NAMES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        IDX_NAMES[3]: (np.arange(n_test) % 10).astype(np.uint8),
    }


def mnist_files(n_train: int = 60, n_test: int = 20, seed: int = 0) -> dict[str, bytes]:
    """File name -> gzipped IDX bytes, as the mirrors serve them."""
    return {f"{k}.gz": gzip.compress(idx_bytes(v), mtime=0) for k, v in mnist_arrays(n_train, n_test, seed).items()}


def write_mnist(folder: Path, n_train: int = 60, n_test: int = 20, seed: int = 0, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in mnist_arrays(n_train, n_test, seed).items():
        data = idx_bytes(array)
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return folder


def cifar_batches(n: int = 6, seed: int = 0) -> dict[str, dict]:
    """Six tiny batches in CIFAR's python layout (bytes keys, uint8 (n, 3072) rows, list labels)."""
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {
        name: {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"{i}.png".encode() for i in range(n)],
        }
        for name in names
    }


def write_cifar_tarball(path: Path, batches: dict[str, dict], extra: dict[str, bytes] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    files = {name: pickle.dumps(batch, protocol=2) for name, batch in batches.items()}
    files.update(extra or {})
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextmanager
def serve(routes: dict[str, bytes]) -> Iterator[tuple[str, list[str]]]:
    """Serve ``routes`` (URL path -> body) on 127.0.0.1; yields the base URL and the list of requested paths."""
    requested: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            body = routes.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
