"""``TICKETLAB_GEMM=auto`` decides by measurement (hardware.gemm_choice): the faster backend, cached per
machine, a damaged cache measured again, forcing, and no measurement where OpenBLAS cannot apply. Timings
are injected; no timing is asserted."""

from __future__ import annotations

import json

import pytest
import torch

from ticketlab.files import read_keyed_json, write_keyed_json
from ticketlab.hardware import blas, gemm_choice
from ticketlab.hardware.gemm_choice import cache_file, decide, faster, machine_key


class Fake:
    """An injected measurement: fixed seconds per backend, counting its calls."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds
        self.calls = 0

    def __call__(self) -> dict[str, float]:
        self.calls += 1
        return dict(self.seconds)


KEY = {"version": 1, "cpu": "test cpu", "cores": 2, "torch": "0.0", "threads": 2}


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        ({"openblas": 1.0, "torch": 2.0}, "openblas"),
        ({"openblas": 2.0, "torch": 1.0}, "torch"),
        ({"openblas": 1.0, "torch": 1.0}, "torch"),  # a tie keeps PyTorch's own kernels
    ],
)
def test_the_chooser_picks_the_faster(tmp_path, seconds, expected):
    assert faster(seconds) == expected
    verdict = decide(Fake(seconds), KEY, tmp_path)
    assert verdict.name == expected and verdict.source == "measured" and verdict.seconds == seconds


def test_cache_miss_then_hit_and_the_key(tmp_path):
    fake = Fake({"openblas": 0.5, "torch": 0.9})
    first = decide(fake, KEY, tmp_path)
    assert fake.calls == 1 and first.source == "measured" and cache_file(KEY, tmp_path).exists()
    assert read_keyed_json(cache_file(KEY, tmp_path), KEY) == {"openblas": 0.5, "torch": 0.9}
    again = decide(fake, KEY, tmp_path)
    assert fake.calls == 1 and again.source == "cache" and again.name == "openblas" and again.seconds == first.seconds
    assert "from the cache" in again.describe() and "openblas 500.000 ms" in again.describe()
    # another thread count, CPU or torch is another key: measured anew
    for change in ({"threads": 1}, {"cpu": "other"}, {"torch": "9.9"}, {"cores": 16}):
        other = {**KEY, **change}
        assert cache_file(other, tmp_path) != cache_file(KEY, tmp_path)
        assert decide(fake, other, tmp_path).source == "measured"
    assert fake.calls == 5
    # the real key names this machine's processor, cores, torch and torch's threads now
    key = machine_key()
    assert key["torch"] == torch.__version__ and key["threads"] == torch.get_num_threads()
    assert machine_key(threads=7)["threads"] == 7


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # truncated
        lambda text: json.dumps({**json.loads(text), "rows": {"openblas": 9.0, "torch": 0.1}}),  # checksum fails
        lambda text: json.dumps({**json.loads(text), "key": {**KEY, "threads": 64}}),  # another key
        lambda text: "not json",
    ],
)
def test_a_damaged_cache_file_is_measured_again_and_rewritten(tmp_path, damage):
    decide(Fake({"openblas": 1.0, "torch": 2.0}), KEY, tmp_path)
    path = cache_file(KEY, tmp_path)
    path.write_text(damage(path.read_text()))
    fake = Fake({"openblas": 3.0, "torch": 2.0})
    verdict = decide(fake, KEY, tmp_path)
    assert fake.calls == 1 and verdict.source == "measured" and verdict.name == "torch"
    assert "damaged cache file measured again" in verdict.note and "damaged" in verdict.describe()
    assert read_keyed_json(path, KEY) == {"openblas": 3.0, "torch": 2.0}  # rewritten, sound


@pytest.mark.parametrize("rows", [{"openblas": 1.0}, {"openblas": -1.0, "torch": 1.0}, {"openblas": "x", "torch": 1}])
def test_a_cache_file_with_bad_rows_is_not_used(tmp_path, rows):
    write_keyed_json(cache_file(KEY, tmp_path), KEY, rows)  # a sound checksum over bad rows
    fake = Fake({"openblas": 1.0, "torch": 2.0})
    assert decide(fake, KEY, tmp_path).source == "measured" and fake.calls == 1


def test_a_failed_timing_runs_pytorch_kernels_and_caches_nothing(tmp_path):
    def broken() -> dict[str, float]:
        raise OSError("no such symbol")

    verdict = decide(broken, KEY, tmp_path)
    assert verdict.name == "torch" and verdict.source == "timing failed" and "no such symbol" in verdict.describe()
    assert not cache_file(KEY, tmp_path).exists()


def test_the_timed_products_are_the_training_products():
    shapes = []

    def product(a, b, out):
        assert out.shape == (a.shape[0], b.shape[1])
        shapes.append((tuple(a.shape), tuple(b.shape)))
        torch.mm(a, b, out=out)

    seconds = gemm_choice.time_products(product, reps=2, rounds=1)
    assert seconds > 0
    assert shapes[:3] == [((60, 784), (784, 300)), ((60, 300), (300, 784)), ((300, 60), (60, 784))]
    assert len(shapes) == 9 * (1 + 2)  # warm-up, then reps x rounds passes over 3 layers x 3 products


# -- the backend under TICKETLAB_GEMM ------------------------------------------------------------------
@pytest.fixture
def fake_machine(monkeypatch, tmp_path):
    """A CPU with AVX-512 where the wheel 'loads' (a stand-in library) and timings are injected; the
    backend is decided afresh in the test and again after it."""
    lib = object()
    monkeypatch.setenv("TICKETLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(blas, "_load_openblas", lambda: lib)
    monkeypatch.setattr(blas, "_override", None)
    monkeypatch.delenv("TICKETLAB_GEMM", raising=False)
    timings = Fake({"openblas": 1.0, "torch": 2.0})
    monkeypatch.setattr(blas, "time_backends", lambda used: timings() if used is lib else pytest.fail("wrong lib"))
    blas.backend.cache_clear()
    yield timings
    blas.backend.cache_clear()


@pytest.mark.parametrize(("openblas", "expected"), [(1.0, "openblas"), (3.0, "torch")])
def test_auto_runs_the_measured_faster_backend_once_per_machine(fake_machine, openblas, expected):
    fake_machine.seconds = {"openblas": openblas, "torch": 2.0}
    chosen = blas.backend()
    assert chosen.name == expected and fake_machine.calls == 1 and "measured now" in chosen.reason
    assert (chosen.lib is not None) == (expected == "openblas")
    blas.backend.cache_clear()  # as a new process would
    again = blas.backend()
    assert again.name == expected and fake_machine.calls == 1 and "from the cache" in again.reason


@pytest.mark.parametrize("forced", ["openblas", "torch"])
def test_forcing_a_backend_measures_nothing(fake_machine, monkeypatch, forced):
    fake_machine.seconds = {"openblas": 5.0, "torch": 1.0} if forced == "openblas" else {"openblas": 1.0, "torch": 5.0}
    monkeypatch.setenv("TICKETLAB_GEMM", forced)
    chosen = blas.backend()
    assert chosen.name == forced and "asked for" in chosen.reason and fake_machine.calls == 0


def test_without_avx512_auto_is_pytorch_without_measuring(fake_machine, monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(blas, "_load_openblas", lambda: pytest.fail("the wheel was loaded"))
    chosen = blas.backend()
    assert chosen == blas.Backend("torch", "the CPU has no AVX-512") and fake_machine.calls == 0


def test_this_cpu_decides_where_openblas_cannot_apply():
    """On a CPU without AVX-512 (the 2-core EPYC of CI) the real backend is PyTorch's, unmeasured."""
    if torch.backends.cpu.get_cpu_capability() == "AVX512":
        pytest.skip("this CPU has AVX-512: auto measures here")
    assert blas.set_backend(None) == blas.Backend("torch", "the CPU has no AVX-512")


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != "AVX512", reason="OpenBLAS's AVX-512 core")
def test_the_real_measurement_times_both_backends(tmp_path):
    chosen = blas.set_backend("openblas")
    try:
        if chosen.name != "openblas":
            pytest.skip(chosen.reason)
        verdict = decide(lambda: blas.time_backends(chosen.lib), KEY, tmp_path)
        assert verdict.source == "measured" and set(verdict.seconds) == {"openblas", "torch"}
        assert verdict.name == faster(verdict.seconds)
    finally:
        blas.set_backend(None)
