"""ticketlab.data: file formats, lookup order, verified downloads, splits, standardisation, augmentation."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import operator
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ticketlab.data import DATASETS, Dataset, DownloadError, cifar_augment, dataset_status, load_dataset, sources
from ticketlab.data.cifar import read_cifar10
from ticketlab.data.idx import read_idx
from ticketlab.data.sources import RemoteFile
from ticketlab.files import CorruptFileError
from ticketlab.registry import UnknownNameError

from data_fixtures import (
    IDX_NAMES,
    cifar_batches,
    idx_bytes,
    mnist_arrays,
    mnist_files,
    serve,
    sha256,
    write_cifar_tarball,
    write_mnist,
)

FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No test sees the real cache, $TICKETLAB_DATA, system folders or mirrors."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TICKETLAB_DATA", raising=False)
    for name, source in list(sources.SOURCES.items()):
        monkeypatch.setitem(sources.SOURCES, name, dataclasses.replace(source, system_dirs=()))
    for name in list(sources.MIRRORS):
        monkeypatch.setitem(sources.MIRRORS, name, ["http://127.0.0.1:9/unreachable/"])


# ---- file formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reads_generated_files(tmp_path, gz):
    arrays = mnist_arrays(n_train=12, n_test=5)
    write_mnist(tmp_path, n_train=12, n_test=5, gz=gz)
    for name, expected in arrays.items():
        got = read_idx(tmp_path / (name + ".gz" if gz else name))
        assert got.dtype == np.uint8 and got.flags.writeable
        np.testing.assert_array_equal(got, expected)


def test_idx_rejects_damaged_files(tmp_path):
    good = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    cases = {
        "bad-magic": b"\x08\x03" + good[2:],
        "short": good[:-1],
        "long": good + b"\x00",
        "truncated-gzip": gzip.compress(good)[:-20],
        "corrupt-gzip": gzip.compress(good)[:10] + b"\xff" * 40,
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CorruptFileError, match=name):
            read_idx(tmp_path / name)


def test_cifar_tarball_and_folder_parse_identically(tmp_path):
    batches = cifar_batches(n=6)
    tarball = write_cifar_tarball(tmp_path / "cifar-10-python.tar.gz", batches)
    x_train, y_train, x_test, y_test = read_cifar10(tarball)
    assert x_train.shape == (30, 3, 32, 32) and x_test.shape == (6, 3, 32, 32)
    assert y_train.dtype == np.int64 and y_train.tolist() == functools.reduce(
        operator.iadd, (batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), []
    )
    # A row is 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32.
    row = batches["data_batch_1"][b"data"][0]
    np.testing.assert_array_equal(x_train[0, 1, 2, 3], row[1024 + 2 * 32 + 3])
    with tarfile.open(tarball) as tar:
        tar.extractall(tmp_path / "out", filter="data")
    for a, b in zip(read_cifar10(tmp_path / "out" / "cifar-10-batches-py"), (x_train, y_train, x_test, y_test)):
        np.testing.assert_array_equal(a, b)


def test_cifar_rejects_damaged_or_foreign_files(tmp_path):
    tarball = write_cifar_tarball(tmp_path / "good.tar.gz", cifar_batches(n=4))
    (tmp_path / "cut.tar.gz").write_bytes(tarball.read_bytes()[:-200])
    with pytest.raises(CorruptFileError, match="cut.tar.gz"):
        read_cifar10(tmp_path / "cut.tar.gz")
    # A pickle that would call a function on load is refused, not executed.
    batches = cifar_batches(n=4)
    del batches["test_batch"]
    evil = pickle.dumps(type("Evil", (), {"__reduce__": lambda self: (print, ("pwned",))})(), protocol=2)
    write_cifar_tarball(tmp_path / "evil.tar.gz", batches, extra={"test_batch": evil})
    with pytest.raises(CorruptFileError, match=r"refusing to load .*print"):
        read_cifar10(tmp_path / "evil.tar.gz")
    missing = cifar_batches(n=4)
    del missing["data_batch_3"]
    write_cifar_tarball(tmp_path / "missing.tar.gz", missing)
    with pytest.raises(CorruptFileError, match="data_batch_3"):
        read_cifar10(tmp_path / "missing.tar.gz")


# ---- lookup ----------------------------------------------------------------------------------------


def test_lookup_order_explicit_then_env_then_cache_then_system(tmp_path, monkeypatch):
    # Each location holds MNIST with a different training-set size, so the loaded size says which won.
    write_mnist(tmp_path / "explicit", n_train=41)
    write_mnist(tmp_path / "env" / "mnist", n_train=42)
    write_mnist(tmp_path / "xdg" / "ticketlab" / "mnist", n_train=43)
    write_mnist(tmp_path / "system", n_train=44, gz=False)
    monkeypatch.setitem(
        sources.SOURCES, "mnist", dataclasses.replace(sources.SOURCES["mnist"], system_dirs=(str(tmp_path / "system"),))
    )
    monkeypatch.setenv("TICKETLAB_DATA", str(tmp_path / "env"))

    def loaded(**kw):
        return len(load_dataset("mnist", val_size=0, download=False, **kw).x_train)

    def status(**kw):
        return next(r for r in dataset_status(**kw) if r["name"] == "mnist")["source"]

    assert loaded(root=tmp_path / "explicit") == 41 and status(root=tmp_path / "explicit") == "explicit path"
    assert loaded() == 42 and status() == "$TICKETLAB_DATA"
    monkeypatch.delenv("TICKETLAB_DATA")
    assert loaded() == 43 and status() == "cache"
    for f in (tmp_path / "xdg" / "ticketlab" / "mnist").iterdir():
        f.unlink()
    assert loaded() == 44 and status() == "system"
    row = next(r for r in dataset_status() if r["name"] == "mnist")
    assert row["found"] and row["where"] == str(tmp_path / "system") and row["files"] == list(IDX_NAMES)


def test_explicit_root_may_hold_the_dataset_folder(tmp_path):
    write_mnist(tmp_path / "root" / "mnist", n_train=30)
    assert len(load_dataset("mnist", root=tmp_path / "root", val_size=10, download=False).x_train) == 20


def test_not_found_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("fashion-mnist", root=tmp_path / "nowhere", download=False)
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message and str(tmp_path / "xdg" / "ticketlab") in message
    assert "apt-get install dataset-fashion-mnist" in message
    rows = {r["name"]: r for r in dataset_status()}
    assert set(rows) == set(DATASETS.names()) == {"mnist", "fashion-mnist", "cifar10", "synthetic"}
    assert rows["cifar10"] == {"name": "cifar10", "found": False, "where": None, "files": [], "source": "-"}


def test_unknown_dataset_lists_allowed_names():
    with pytest.raises(UnknownNameError, match="fashion-mnist"):
        load_dataset("fashon-mnist")


def test_corrupt_local_file_is_an_error_not_used_or_replaced(tmp_path):
    folder = write_mnist(tmp_path / "d", n_train=20)
    images = folder / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:-30])
    with pytest.raises(CorruptFileError, match="train-images-idx3-ubyte.gz"):
        load_dataset("mnist", root=folder, download=True)  # found locally: no download attempt
    assert images.exists()
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(3, np.uint8))))
    write_mnist(tmp_path / "e", n_train=20)
    (tmp_path / "e" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(3, np.uint8))))
    with pytest.raises(CorruptFileError, match="t10k-labels"):  # 20 test images, 3 labels
        load_dataset("mnist", root=tmp_path / "e", val_size=0)


# ---- downloads -------------------------------------------------------------------------------------


def _patch_mnist_checksums(monkeypatch, files: dict[str, bytes]) -> None:
    table = tuple(RemoteFile(name, sha256(data)) for name, data in files.items())
    monkeypatch.setitem(sources.SOURCES, "mnist", dataclasses.replace(sources.SOURCES["mnist"], files=table))


def test_download_falls_back_to_the_next_mirror(tmp_path, monkeypatch):
    files = mnist_files(n_train=25, n_test=10)
    _patch_mnist_checksums(monkeypatch, files)
    with serve({f"/good/{k}": v for k, v in files.items()}) as (base, requested):
        monkeypatch.setitem(sources.MIRRORS, "mnist", [f"{base}/missing/", f"{base}/good/"])
        data = load_dataset("mnist", val_size=5)
        assert sum(p.startswith("/missing/") for p in requested) == 4  # every file 404s on the first mirror
        cache = tmp_path / "xdg" / "ticketlab" / "mnist"
        assert sorted(p.name for p in cache.iterdir()) == sorted(files)  # no temp files left
        assert len(data.x_train) == 20 and len(data.x_test) == 10
        np.testing.assert_array_equal(data.y_test.numpy(), np.arange(10))
        # Already downloaded: a second load finds it in the cache without any request.
        requested.clear()
        load_dataset("mnist", val_size=5)
        assert requested == []


def test_truncated_download_is_rejected_and_nothing_is_kept(tmp_path, monkeypatch):
    files = mnist_files(n_train=25, n_test=10)
    _patch_mnist_checksums(monkeypatch, files)
    routes = {f"/m/{k}": v for k, v in files.items()}
    routes["/m/train-images-idx3-ubyte.gz"] = files["train-images-idx3-ubyte.gz"][:-100]
    with serve(routes) as (base, _):
        monkeypatch.setitem(sources.MIRRORS, "mnist", [f"{base}/m/"])
        with pytest.raises(DownloadError) as info:
            load_dataset("mnist", root=tmp_path / "root", val_size=5)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and sha256(files["train-images-idx3-ubyte.gz"]) in message
    assert list((tmp_path / "root" / "mnist").iterdir()) == []  # the download dir holds nothing


def test_download_keeps_a_present_verified_file_and_replaces_a_bad_one(tmp_path, monkeypatch):
    files = mnist_files(n_train=25, n_test=10)
    _patch_mnist_checksums(monkeypatch, files)
    dest = tmp_path / "xdg" / "ticketlab" / "mnist"
    dest.mkdir(parents=True)
    (dest / "train-images-idx3-ubyte.gz").write_bytes(files["train-images-idx3-ubyte.gz"])
    (dest / "train-labels-idx1-ubyte.gz").write_bytes(b"stale partial file")
    with serve({f"/m/{k}": v for k, v in files.items()}) as (base, requested):
        monkeypatch.setitem(sources.MIRRORS, "mnist", [f"{base}/m/"])
        load_dataset("mnist", val_size=5)
    assert "/m/train-images-idx3-ubyte.gz" not in requested and "/m/train-labels-idx1-ubyte.gz" in requested
    assert (dest / "train-labels-idx1-ubyte.gz").read_bytes() == files["train-labels-idx1-ubyte.gz"]


def test_published_checksums_are_well_formed():
    for source in sources.SOURCES.values():
        for f in source.files:
            assert f.sha256 is not None and len(f.sha256) == 64 and int(f.sha256, 16) >= 0
            assert f.md5 is not None and len(f.md5) == 32


# ---- splits and standardisation ---------------------------------------------------------------------


def test_validation_split_is_seeded_disjoint_and_complete(tmp_path):
    folder = write_mnist(tmp_path / "d", n_train=50, n_test=10)
    raw = torch.from_numpy(mnist_arrays(n_train=50, n_test=10)[IDX_NAMES[0]]).float().flatten(1)

    def rows(data: Dataset, split: str) -> list[int]:
        # Recover which original rows each split holds by undoing the standardisation.
        x = getattr(data, f"x_{split}").flatten(1) * data.std[0] + data.mean[0]
        return [int(torch.cdist(r[None], raw).argmin()) for r in x]

    a = load_dataset("mnist", root=folder, val_size=15, seed=1)
    b = load_dataset("mnist", root=folder, val_size=15, seed=1)
    c = load_dataset("mnist", root=folder, val_size=15, seed=2)
    train, val = rows(a, "train"), rows(a, "val")
    assert len(train) == 35 and len(val) == 15 and sorted(train + val) == list(range(50))
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_train, b.y_train)
    assert rows(c, "val") != val
    assert torch.equal(a.y_val, torch.from_numpy(mnist_arrays(50, 10)[IDX_NAMES[1]][val]).long())


def test_val_size_zero_and_too_large(tmp_path):
    folder = write_mnist(tmp_path / "d", n_train=30)
    data = load_dataset("mnist", root=folder, val_size=0)
    assert data.x_val.shape == (0, 1, 28, 28) and data.y_val.shape == (0,) and data.y_val.dtype == torch.int64
    with pytest.raises(ValueError, match="val_size"):
        load_dataset("mnist", root=folder, val_size=30)


def test_standardisation_uses_training_split_statistics_only(tmp_path):
    batches = cifar_batches(n=40)
    write_cifar_tarball(tmp_path / "c" / "cifar-10-python.tar.gz", batches)
    data = load_dataset("cifar10", root=tmp_path / "c", val_size=50, seed=3)
    assert data.augment == "cifar" and data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert torch.allclose(data.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(data.x_train.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5)
    # The test set is transformed with the same (training) statistics, not its own.
    raw_test = torch.from_numpy(batches["test_batch"][b"data"].reshape(-1, 3, 32, 32)).double()
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)
    torch.testing.assert_close(data.x_test.double(), (raw_test - mean) / std, atol=1e-5, rtol=0)
    assert data.x_val.mean().abs() > 1e-4  # val is not re-centred on itself


def test_dataset_to_moves_every_tensor():
    data = load_dataset("synthetic", val_size=10).to("meta")
    assert all(
        getattr(data, f).device.type == "meta" for f in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    )
    assert data.input_shape == (1, 28, 28)


# ---- synthetic --------------------------------------------------------------------------------------


def test_synthetic_is_fixed_fast_and_shaped():
    load_dataset("synthetic", val_size=100)  # warm-up: first torch calls pay one-off costs
    start = time.perf_counter()
    a = load_dataset("synthetic", val_size=500)
    assert time.perf_counter() - start < 0.5  # ~0.03 s measured; loose bound for busy CI machines
    b = load_dataset("synthetic", val_size=500)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert (
        a.x_train.shape == (2000, 1, 28, 28)
        and a.x_val.shape == (500, 1, 28, 28)
        and a.x_test.shape == (500, 1, 28, 28)
    )
    assert a.y_train.bincount().tolist() != [] and set(a.y_train.tolist()) == set(range(10)) and a.augment is None
    c = load_dataset("synthetic:3x32x32", val_size=0)
    assert c.input_shape == (3, 32, 32) and c.x_val.shape == (0, 3, 32, 32)
    with pytest.raises(ValueError, match="3x32x32"):
        load_dataset("synthetic:32x32")


# ---- augmentation ------------------------------------------------------------------------------------


def _augment_loop(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Reference: one image at a time, crop a slice of the padded image, then flip."""
    out = []
    for i in range(len(x)):
        padded = F.pad(x[i : i + 1], (4, 4, 4, 4), mode="reflect")[0]
        crop = padded[:, int(dy[i]) : int(dy[i]) + 32, int(dx[i]) : int(dx[i]) + 32]
        out.append(crop.flip(-1) if flip[i] else crop)
    return torch.stack(out)


def test_cifar_augment_matches_a_per_image_loop():
    x = torch.randn(64, 3, 32, 32)
    before = x.clone()
    out = cifar_augment(x, torch.Generator().manual_seed(7))
    assert out.shape == x.shape and torch.equal(x, before)
    # Replay the generator in the documented order: dy, dx, then flip draws.
    g = torch.Generator().manual_seed(7)
    dy, dx = torch.randint(0, 9, (64,), generator=g), torch.randint(0, 9, (64,), generator=g)
    flip = torch.rand(64, generator=g) < 0.5
    assert 0 < int(flip.sum()) < 64 and len(set(dy.tolist())) > 1
    torch.testing.assert_close(out, _augment_loop(x, dy, dx, flip), rtol=0, atol=0)


def test_cifar_augment_is_deterministic_and_flips_really_flip():
    x = torch.arange(32.0).expand(16, 3, 32, 32).contiguous()  # each row reads 0..31 left to right
    a = cifar_augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, cifar_augment(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, cifar_augment(x, torch.Generator().manual_seed(2)))
    slope = (a[:, 0, 0, 20] - a[:, 0, 0, 10]).sign()  # away from the reflected border: increasing or not
    assert (slope > 0).any() and (slope < 0).any()
    assert cifar_augment(x[:0], torch.Generator()).shape == (0, 3, 32, 32)


# Source rows (or columns) of a 5-pixel side after reflect-padding by 4 and cropping at offset o = 0..8,
# written out by hand: the padded side reads 4 3 2 1 | 0 1 2 3 4 | 3 2 1 0.
REFLECT_5 = [
    [4, 3, 2, 1, 0],
    [3, 2, 1, 0, 1],
    [2, 1, 0, 1, 2],
    [1, 0, 1, 2, 3],
    [0, 1, 2, 3, 4],
    [1, 2, 3, 4, 3],
    [2, 3, 4, 3, 2],
    [3, 4, 3, 2, 1],
    [4, 3, 2, 1, 0],
]


def test_cifar_augment_crops_and_flips_a_tiny_image_as_computed_by_hand():
    image = torch.tensor([[10.0 * r + c for c in range(5)] for r in range(5)])  # pixel (r, c) holds 10r + c
    x = torch.stack([image, -image]).expand(400, 2, 5, 5).contiguous()  # two channels: the same crop for both
    out = cifar_augment(x, torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(11)  # the documented draw order: dy, dx, flip
    dy, dx = torch.randint(0, 9, (400,), generator=g).tolist(), torch.randint(0, 9, (400,), generator=g).tolist()
    flip = (torch.rand(400, generator=g) < 0.5).tolist()
    seen = set()
    for i in range(400):
        rows, cols = REFLECT_5[dy[i]], REFLECT_5[dx[i]][::-1] if flip[i] else REFLECT_5[dx[i]]
        expected = torch.tensor([[10.0 * r + c for c in cols] for r in rows])
        assert torch.equal(out[i, 0], expected) and torch.equal(out[i, 1], -expected), (dy[i], dx[i], flip[i])
        seen.add((dy[i], dx[i], flip[i]))
    assert len(seen) > 100  # most of the 9 x 9 x 2 crops and flips occur
    # offset 4 without a flip is the image itself; a flip at offset 4 mirrors it left to right
    assert any(torch.equal(o[0], image) for o in out) and any(torch.equal(o[0], image.flip(1)) for o in out)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cifar_augment_cpu_generator_on_cuda_batch_matches_cpu():
    x = torch.randn(32, 3, 32, 32)
    cpu = cifar_augment(x, torch.Generator().manual_seed(5))
    gpu = cifar_augment(x.cuda(), torch.Generator().manual_seed(5))
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)


# ---- real data ----------------------------------------------------------------------------------------


@pytest.mark.skipif(not FASHION_SYSTEM.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_the_debian_package(monkeypatch):
    monkeypatch.setitem(
        sources.SOURCES,
        "fashion-mnist",
        dataclasses.replace(sources.SOURCES["fashion-mnist"], system_dirs=(str(FASHION_SYSTEM),)),
    )
    start = time.perf_counter()
    data = load_dataset("fashion-mnist", download=False)
    elapsed = time.perf_counter() - start
    assert data.x_train.shape == (55000, 1, 28, 28) and data.x_val.shape == (5000, 1, 28, 28)
    assert data.x_test.shape == (10000, 1, 28, 28)
    for y in (data.y_train, data.y_val, data.y_test):
        assert y.dtype == torch.int64 and int(y.min()) == 0 and int(y.max()) == 9
    assert data.y_test.bincount().tolist() == [1000] * 10  # Fashion-MNIST's test set is balanced
    assert elapsed < 5  # ~1 s measured
