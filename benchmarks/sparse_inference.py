"""CPU inference time of a ticket as a dense masked model vs the sparse (CSR) module of ``ticketlab export
--format sparse``, for LeNet-300-100 and LeNet-5 at densities 10%, 2%, 1% and 0.5%, batch 1 and 256.

Set-up, stated in the output: every prunable layer (all Linear and Conv2d weights) keeps the same fraction
of its weights, chosen at random (seeded; at least one weight per layer), on Kaiming-normal weights. The
dense model is what ``load_ticket`` returns (the zoo model, zeros in place; its Linear layers use the
BLAS ``ticketlab.hardware.blas`` picks); the sparse one is ``ticketlab.tickets.sparsify`` of it (Linear:
``torch.addmm`` with the CSR weight; Conv2d: im2col (one strided copy) + CSR product, PyTorch having no sparse
convolution on CPU). Inputs are standard-normal images of the data's shape.

Timing: ``time.perf_counter`` around a call count calibrated to last about 20 ms, in ``--rounds`` rounds that
alternate dense and sparse (so a change of machine load hits both), after warm-up; the median per-call time
of the rounds is reported, with the median of the per-round ratios dense/sparse.

Run: ``python benchmarks/sparse_inference.py [--threads 1] [--rounds 15] [--out docs/results/bench]``
(about a minute on the 2-core development machine).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import time
from pathlib import Path

import torch

from ticketlab.hardware.environment import cpu_model
from ticketlab.masks import Mask, prunable_parameters
from ticketlab.models import build_model, initialize
from ticketlab.tickets import sparsify

DENSITIES = (0.10, 0.02, 0.01, 0.005)
BATCHES = (1, 256)
MODELS = {"lenet300": (1, 28, 28), "lenet5": (1, 28, 28)}
OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "bench"


def masked_model(name: str, density: float, seed: int = 0) -> tuple[torch.nn.Module, Mask]:
    """The zoo model with the same random fraction ``density`` of every prunable layer kept."""
    model = initialize(build_model(name, input_shape=MODELS[name]), "kaiming_normal", seed).eval()
    g = torch.Generator().manual_seed(seed)
    keep = {}
    for key, p in prunable_parameters(model).items():
        k = max(1, round(density * p.numel()))
        flat = torch.zeros(p.numel(), dtype=torch.bool)
        flat[torch.randperm(p.numel(), generator=g)[:k]] = True
        keep[key] = flat.view_as(p)
    mask = Mask(keep)
    mask.apply(model)
    return model, mask


def calibrate(fn, x: torch.Tensor, target: float = 0.02) -> int:
    calls = 1
    while True:
        started = time.perf_counter()
        for _ in range(calls):
            fn(x)
        if time.perf_counter() - started >= target or calls >= 1 << 16:
            return calls
        calls *= 2


def per_call(fn, x: torch.Tensor, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn(x)
    return (time.perf_counter() - started) / calls


@torch.inference_mode()
def measure(name: str, density: float, batch: int, rounds: int) -> dict:
    dense, mask = masked_model(name, density)
    sparse = sparsify(dense, mask.keys())
    x = torch.randn((batch, *MODELS[name]), generator=torch.Generator().manual_seed(1))
    err = float((sparse(x) - dense(x)).abs().max())
    calls = {m: calibrate(f, x) for m, f in (("dense", dense), ("sparse", sparse))}
    times = {"dense": [], "sparse": []}
    for _ in range(rounds):
        for m, f in (("dense", dense), ("sparse", sparse)):
            times[m].append(per_call(f, x, calls[m]))
    ratios = [d / s for d, s in zip(times["dense"], times["sparse"])]
    return {
        "model": name,
        "density": mask.density(),
        "batch": batch,
        "kept": mask.kept(),
        "dense_ms": 1e3 * statistics.median(times["dense"]),
        "sparse_ms": 1e3 * statistics.median(times["sparse"]),
        "speedup": statistics.median(ratios),
        "speedup_range": (min(ratios), max(ratios)),
        "max_abs_diff": err,
    }


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def markdown(rows: list[dict], threads: int, rounds: int, seconds: float, load: str) -> str:
    from ticketlab.hardware import blas

    lines = [
        f"# Sparse inference on CPU ({_dt.date.today().isoformat()})",
        "",
        (
            f"- CPU: {cpu_model()} (`/proc/cpuinfo`), {torch.get_num_threads()} torch thread(s) "
            f"(`--threads {threads}`), {torch.backends.cpu.get_cpu_capability()} kernels, {os.cpu_count()} CPUs visible; "
            f"load average {load} (1, 5, 15 min) before the run"
        ),
        (
            f"- torch {torch.__version__}, MKL {'yes' if torch.backends.mkl.is_available() else 'no'}; dense Linear "
            f"through {blas.backend().name} ({blas.backend().reason})"
        ),
        (
            "- every Linear/Conv2d layer keeps the stated fraction of its weights at random (Kaiming-normal values); "
            "sparse = `ticketlab.tickets.sparsify` (Linear: CSR `addmm`; Conv2d: im2col + CSR product)"
        ),
        (
            f"- time per forward call, median of {rounds} rounds alternating dense and sparse; speed-up = median of the "
            f"per-round ratios dense/sparse (range); whole run {seconds:.0f} s"
        ),
        "",
        "| model | density | weights kept | batch | dense (ms) | sparse (ms) | speed-up (range) | max abs diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lo, hi = r["speedup_range"]
        lines.append(
            f"| {r['model']} | {100 * r['density']:.2g}% | {r['kept']:,} | {r['batch']} | {r['dense_ms']:.3f} | "
            f"{r['sparse_ms']:.3f} | {r['speedup']:.2f}x ({lo:.2f}-{hi:.2f}) | {r['max_abs_diff']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=OUT, help="folder of the markdown table")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = load_average()
    started = time.perf_counter()
    rows = []
    for name in MODELS:
        for density in DENSITIES:
            for batch in BATCHES:
                rows.append(measure(name, density, batch, args.rounds))
                r = rows[-1]
                print(
                    f"{name} {100 * density:g}% batch {batch}: dense {r['dense_ms']:.3f} ms, sparse {r['sparse_ms']:.3f} ms, "
                    f"{r['speedup']:.2f}x",
                    flush=True,
                )
    text = markdown(rows, args.threads, args.rounds, time.perf_counter() - started, load)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"sparse_inference-{_dt.date.today().isoformat()}.md"
    path.write_text(text)
    print(text)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
