"""(a) The limit: FLOP/s of a dense float32 matrix product, the fastest BLAS at its best measurement.

On CPU the limit is a 2048x2048 product with PyTorch's BLAS (MKL) and, where ``ticketlab.hardware.blas``
uses it, OpenBLAS's AVX-512 kernels. On CUDA a 2048 product is too small to keep a GPU busy, so the
limit is an 8192x8192 product on cuBLAS (TF32 only if the process allowed it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from speed.timing import median_time, synced
from ticketlab.hardware import blas as gemm


def matmul_flops(repeats: int, n: int = 2048, blas: str = "torch", device: torch.device | str = "cpu") -> float:
    """FLOP/s of an n x n x n float32 product: ``torch`` = ``a @ b`` (MKL on CPU, cuBLAS on CUDA, in full
    float32 unless the process allowed TF32), ``openblas`` = the OpenBLAS sgemm of ``ticketlab.hardware.blas``
    on as many threads as torch has."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    out = torch.empty(n, n, device=device)

    def product() -> object:
        return torch.mm(a, b, out=out) if blas == "torch" else gemm._gemm(a, b, out, 0.0)

    inner = 5
    with gemm.training_threads() if blas != "torch" else contextlib.nullcontext():
        product()
        t = median_time(synced(lambda: [product() for _ in range(inner)], device), repeats)
    return 2 * n**3 * inner / t


def limit_meter(
    repeats: int, n: int, device: torch.device, log: Callable[[str], object] = print
) -> Callable[[str], dict[str, float]]:
    """A function measuring the limit with every BLAS in use on ``device`` (``when`` labels the log line)."""
    cuda = device.type == "cuda"

    def measure(when: str) -> dict[str, float]:
        if cuda:
            by_blas = {"torch (cuBLAS)": matmul_flops(repeats, n=n, device=device)}
        else:
            by_blas = {"torch (MKL)": matmul_flops(repeats, n=n)}
            if gemm.active():
                by_blas["openblas"] = matmul_flops(repeats, n=n, blas="openblas")
        for blas, flops in by_blas.items():
            log(f"(a) {when}: dense {n}x{n} matmul, {blas}: {flops / 1e9:.1f} GFLOP/s")
        return by_blas

    return measure


def settle_limit(report: dict[str, Any], measurements: list[dict[str, float]]) -> None:
    """The limit is the fastest BLAS at its best measurement (a busy neighbour during one measurement would
    otherwise lower the limit and flatter every fraction); every row's fraction is taken against it."""
    report["matmul_flops_measurements"] = measurements
    report["matmul_flops_by_blas"] = {blas: max(m[blas] for m in measurements) for blas in measurements[0]}
    limit = report["matmul_flops"] = max(report["matmul_flops_by_blas"].values())
    for row in report["training"]:
        row["fraction_of_limit"] = row["gflops"] * 1e9 / limit
