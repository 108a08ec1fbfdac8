"""Where each real dataset comes from: its files, checksums, mirrors and known system folders.

Checksums (verified on download; every value below appears in several independent public sources):
- MNIST: sha256 and md5 of the four gzipped IDX files as served by the mirrors. The md5 values are
  torchvision's ``MNIST.resources``; the sha256 values are those pinned by e.g. TensorFlow-era loaders.
- Fashion-MNIST: sha256 and md5 of the four original gzips from Zalando's repository (the md5 values are
  the ones its README and torchvision publish). Debian's ``dataset-fashion-mnist`` re-compresses them
  (same IDX payload, different gzip bytes), so local files are checked by format and exact shape, not by
  these digests; see ``DEBIAN_FASHION_SHA256`` for the digests measured on the Debian package.
- CIFAR-10: md5 of ``cifar-10-python.tar.gz`` from its home page / torchvision, sha256 as pinned by Keras.

``MIRRORS`` is a plain module-level table so that a site mirror (or a test server on 127.0.0.1) can be
put in front of the canonical ones.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RemoteFile:
    """One file as published on the mirrors, with the digests it must have."""

    name: str
    sha256: str | None = None
    md5: str | None = None


@dataclass(frozen=True)
class Source:
    """A dataset's standard files. ``items``: each entry lists the names that satisfy it locally
    (``.gz`` or already decompressed; the CIFAR tarball or its extracted folder)."""

    subdir: str
    files: tuple[RemoteFile, ...]
    items: tuple[tuple[str, ...], ...]
    system_dirs: tuple[str, ...]
    how_to_get: str


def _idx_items(files: tuple[RemoteFile, ...]) -> tuple[tuple[str, ...], ...]:
    return tuple((f.name, f.name.removesuffix(".gz")) for f in files)


_MNIST_FILES = (
    RemoteFile(
        "train-images-idx3-ubyte.gz",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    ),
    RemoteFile(
        "train-labels-idx1-ubyte.gz",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "d53e105ee54ea40749a09fcbcd1e9432",
    ),
    RemoteFile(
        "t10k-images-idx3-ubyte.gz",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "9fb629c4189551a2d022fa330f9573f3",
    ),
    RemoteFile(
        "t10k-labels-idx1-ubyte.gz",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        "ec29112dd5afa0611ce80d1b7f02629c",
    ),
)
_FASHION_FILES = (
    RemoteFile(
        "train-images-idx3-ubyte.gz",
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    ),
    RemoteFile(
        "train-labels-idx1-ubyte.gz",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "25c81989df183df01b3e8a0aad5dffbe",
    ),
    RemoteFile(
        "t10k-images-idx3-ubyte.gz",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "bef4ecab320f06d8554ea6380940ec79",
    ),
    RemoteFile(
        "t10k-labels-idx1-ubyte.gz",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        "bb300cfdad3c16e7a12a480ee83cd310",
    ),
)
_CIFAR_FILES = (
    RemoteFile(
        "cifar-10-python.tar.gz",
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        "c58f30108f718f92721af3b95e74349a",
    ),
)

# Measured here on dataset-fashion-mnist 0.0~git20200523.55506a9-1 (/usr/share/datasets/fashion-mnist/).
# Informational only: the loader validates local files by format and shape.
DEBIAN_FASHION_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}

SOURCES: dict[str, Source] = {
    "mnist": Source(
        "mnist",
        _MNIST_FILES,
        _idx_items(_MNIST_FILES),
        (),
        "let ticketlab download it (download=True), or put the four IDX files in $TICKETLAB_DATA/mnist/",
    ),
    "fashion-mnist": Source(
        "fashion-mnist",
        _FASHION_FILES,
        _idx_items(_FASHION_FILES),
        ("/usr/share/datasets/fashion-mnist",),
        "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), let ticketlab download it (download=True), "
        "or put the four IDX files in $TICKETLAB_DATA/fashion-mnist/",
    ),
    "cifar10": Source(
        "cifar10",
        _CIFAR_FILES,
        (("cifar-10-python.tar.gz", "cifar-10-batches-py"),),
        (),
        "let ticketlab download it (download=True), or put cifar-10-python.tar.gz (or its extracted "
        "cifar-10-batches-py folder) in $TICKETLAB_DATA/cifar10/",
    ),
}

# Base URLs tried in order; a file's URL is base + file name.
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
}
