"""Would a sparse training path pay for convolutions on this CPU? One pruned convolution's training work,
dense against im2col + CSR, at densities 10%, 2% and 1%: the measurement that issue 21 asks for before a
path is built (``training.sparse`` has one for MLPs only).

Per layer and density, the seconds of the three products one training step needs:

* dense: ``F.conv2d`` forward and its autograd backward (input and weight gradients; oneDNN's kernels), the
  weight multiplied by its 0/1 mask as the masked dense step does;
* sparse: the input unfolded once (im2col, ``F.unfold``) into (C k k, B L) columns, the forward product
  ``W_csr @ columns``, the input gradient ``W_csr^T @ g`` folded back (``F.fold``), and the weight gradient
  only at kept positions (``torch.sparse.sampled_addmm``), with the layouts' copies between them.

The layers are Conv-6's on CIFAR-10 images (32x32, batch 60): 64->64 at 32x32, 128->128 at 16x16, 256->256
at 8x8 (3x3, padding 1), with Kaiming-normal weights and random masks of the given density (seeded).
Timing: ``time.perf_counter`` around calls calibrated to about 50 ms, in ``--rounds`` rounds alternating
dense and sparse, after warm-up; medians of the rounds and of the per-round ratios dense / sparse.

Run: ``python benchmarks/sparse_conv_training.py [--threads N] [--rounds 5] [--out docs/results/bench]``
(about two minutes on the 2-core development machine).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ticketlab.hardware.environment import cpu_model

LAYERS = ((64, 64, 32), (128, 128, 16), (256, 256, 8))  # (in channels, out channels, image side)
DENSITIES = (0.1, 0.02, 0.01)
BATCH, KERNEL = 60, 3


def _calls(fn: Callable[[], object], seconds: float = 0.05) -> int:
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 5:
        fn()
        n += 1
    return max(1, 5 * n)


def _time(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def dense_step(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor, g: torch.Tensor) -> Callable[[], object]:
    """The masked dense layer's forward and backward."""
    x = x.clone().requires_grad_(True)
    w = w.clone().requires_grad_(True)

    def run() -> None:
        y = F.conv2d(x, w * mask, padding=KERNEL // 2)
        _, gw = torch.autograd.grad(y, (x, w), g)
        gw.mul_(mask)

    return run


def sparse_step(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor, g: torch.Tensor) -> Callable[[], object]:
    """The same three products through a CSR of the kept weights and im2col columns."""
    out_c, in_c, k, _ = w.shape
    side = x.shape[-1]
    flat = (w * mask).reshape(out_c, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        w_csr = flat.to_sparse_csr()
        w_t = flat.t().contiguous().to_sparse_csr()
    g_cols = g.permute(1, 0, 2, 3).reshape(out_c, -1)  # (O, B L), as the next layer's backward would give it

    def run() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cols = F.unfold(x, k, padding=k // 2)  # (B, C k k, L)
        cols = cols.permute(1, 0, 2).reshape(in_c * k * k, -1)  # (C k k, B L)
        y = (w_csr @ cols).view(out_c, BATCH, side, side).permute(1, 0, 2, 3).contiguous()
        gx_cols = (w_t @ g_cols).view(in_c * k * k, BATCH, -1).permute(1, 0, 2)
        gx = F.fold(gx_cols, (side, side), k, padding=k // 2)
        gw = torch.sparse.sampled_addmm(w_csr, g_cols, cols.t(), beta=0.0)
        return y, gx, gw

    return run


def measure(rounds: int) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    for in_c, out_c, side in LAYERS:
        x = torch.randn(BATCH, in_c, side, side, generator=gen)
        w = torch.randn(out_c, in_c, KERNEL, KERNEL, generator=gen) * (2 / (in_c * KERNEL * KERNEL)) ** 0.5
        g = torch.randn(BATCH, out_c, side, side, generator=gen)
        for density in DENSITIES:
            mask = (torch.rand(w.shape, generator=gen) < density).float()
            dense, sparse = dense_step(x, w, mask, g), sparse_step(x, w, mask, g)
            for fn in (dense, sparse):
                fn()  # warm-up
            n_dense, n_sparse = _calls(dense), _calls(sparse)
            times: dict[str, list[float]] = {"dense": [], "sparse": []}
            for r in range(rounds):
                pair = (("dense", dense, n_dense), ("sparse", sparse, n_sparse))
                for name, fn, n in pair if r % 2 == 0 else pair[::-1]:
                    times[name].append(_time(fn, n))
            ratio = statistics.median(d / s for d, s in zip(times["dense"], times["sparse"]))
            rows.append(
                {
                    "layer": f"{in_c}->{out_c} at {side}x{side}",
                    "density": density,
                    "dense_ms": statistics.median(times["dense"]) * 1e3,
                    "sparse_ms": statistics.median(times["sparse"]) * 1e3,
                    "ratio": ratio,
                }
            )
            print(
                f"{rows[-1]['layer']} density {density:.0%}: dense {rows[-1]['dense_ms']:.2f} ms, "
                f"sparse {rows[-1]['sparse_ms']:.2f} ms, dense / sparse {ratio:.2f}",
                flush=True,
            )
    return rows


def markdown(rows: list[dict], rounds: int) -> str:
    lines = [
        f"# Sparse convolution training products — {_dt.date.today()}",
        "",
        f"{cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads; batch {BATCH}, 3x3, "
        f"padding 1, {rounds} alternated rounds (`benchmarks/sparse_conv_training.py`). Per step: forward, "
        "input gradient and weight gradient of one masked layer; dense = `F.conv2d` + autograd (oneDNN), "
        "sparse = im2col + CSR products + fold + sampled weight gradient.",
        "",
        "| layer | density | dense ms | sparse ms | dense / sparse |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['density']:.0%} | {r['dense_ms']:.2f} | {r['sparse_ms']:.2f} | {r['ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch's intra-op threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("docs/results/bench"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    text = markdown(measure(args.rounds), args.rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"sparse_conv_training-{_dt.date.today()}-{torch.get_num_threads()}threads.md"
    path.write_text(text)
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
