"""Speed benchmark (issue "Speed"): how close training gets to the processor's dense matmul limit.

In one run on one machine it measures
  (a) dense 2048x2048 float32 matmul FLOP/s on the configured threads, with PyTorch's BLAS (MKL) and,
      where ``ticketlab.hardware.blas`` uses it, OpenBLAS's AVX-512 kernels: the faster of the two is the limit;
  (b) a plain one-model PyTorch loop (data as one tensor, randperm, nn.Sequential / the zoo module, SGD);
  (c) ticketlab's single-model trainer ``ticketlab.training.loop.train``, without and with a mask, and (c2, MLPs)
      as a CPU sweep runs it by default: 2 one-thread processes with one masked model each;
  (d) ticketlab's K-model trainer ``ticketlab.training.stacked.train_many`` for K in --ks (masks applied), in one
      process, and (d2, MLPs) as a local sweep lays it out here: 2 one-thread processes with K/2 each;
  (e) two plain-loop processes with one thread each, run at the same time;
  (f) scoring: SNIP, GraSP and 100-round SynFlow on LeNet-300-100 and ResNet-20;
and writes JSON plus a markdown summary.

FLOP formula (stated, nominal): training = 6 x MACs per example x examples (2 forward + 4 backward);
for an MLP the MACs are the weight-matrix entries, for a conv net they are counted with forward hooks
(output elements x in-channels x kernel area). The input layer's input gradient is never computed, so
the real work is a little less than nominal; every trainer is charged the same formula.

Timing: time.perf_counter around a fixed number of steps after warm-up steps, median of repeats.
Training throughput is timed without the per-evaluation passes (the timed dataset has empty validation
and test splits) so the trainers are compared on the same work as the plain loop.

Run: ``ticketlab bench [--quick] [--out DIR] [--models lenet300,conv6] [--ks 1,4,8,16] [--rounds N]`` or
``python benchmarks/bench.py ...``. With ``--rounds N`` the rows the goals compare (b, e, c without mask,
d2 for K >= 8) are also timed in N interleaved rounds and the goals are judged on the median of the
per-round ratios. The matmul limit is measured before and after the trainers, and at the start of each
round; the best measurement counts, and each round's own figure is reported beside the round's times.
``--device cuda``: the same rows on the GPU, without the CPU's process layouts (c2), (d2), (e) and without
rounds; the limit there is an 8192x8192 float32 product on cuBLAS (TF32 only if the process allowed it).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime as _dt
import json
import os
import platform
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"


# -- set-up ----------------------------------------------------------------------------------------
def load_data(val_size: int = 5000):
    """Real Fashion-MNIST when it can be found, else synthetic data of the same size (55,000 x 1x28x28)."""
    from ticketlab.data import load_dataset

    try:
        return load_dataset("fashion-mnist", val_size=val_size, seed=0, download=False), "fashion-mnist"
    except Exception:  # not present here: synthetic of the same size
        from ticketlab.data.dataset import Dataset

        g = torch.Generator().manual_seed(0)
        return Dataset(
            name="synthetic-fmnist-size", x_train=torch.randn(60000 - val_size, 1, 28, 28, generator=g),
            y_train=torch.randint(10, (60000 - val_size,), generator=g), x_val=torch.randn(val_size, 1, 28, 28, generator=g),
            y_val=torch.randint(10, (val_size,), generator=g), x_test=torch.randn(10000, 1, 28, 28, generator=g),
            y_test=torch.randint(10, (10000,), generator=g), num_classes=10, augment=None,
        ), "synthetic (Fashion-MNIST size)"


def without_eval(data):
    """The same training split with empty validation/test splits: times training only."""
    empty = data.x_train[:0]
    return dataclasses.replace(data, x_val=empty, y_val=data.y_train[:0], x_test=empty, y_test=data.y_train[:0])


def build(name: str):
    from ticketlab.models import build_model, initialize

    return initialize(build_model(name, input_shape=(1, 28, 28), num_classes=10), seed=0)


def macs_per_example(model: nn.Module) -> int:
    """Multiply-accumulates of one forward pass on a 1x28x28 input (Linear and Conv layers)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Linear):
            total += module.in_features * module.out_features
        else:
            k = module.kernel_size[0] * module.kernel_size[1]
            total += output[0].numel() * (module.in_channels // module.groups) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    for h in handles:
        h.remove()
    return total


def random_masks(model: nn.Module, k: int, density: float):
    from ticketlab.masks import prunable_parameters, select

    out = []
    for i in range(k):
        g = torch.Generator().manual_seed(100 + i)
        out.append(select({n: torch.rand(p.shape, generator=g) for n, p in prunable_parameters(model).items()}, density))
    return out


def synced(fn, device: torch.device | str = "cpu"):
    """``fn`` followed by waiting for the device: CUDA calls return before the work is done."""
    if torch.device(device).type != "cuda":
        return fn

    def run():
        fn()
        torch.cuda.synchronize(device)
    return run


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# -- (a) the limit -----------------------------------------------------------------------------------
def matmul_flops(repeats: int, n: int = 2048, blas: str = "torch", device: torch.device | str = "cpu") -> float:
    """FLOP/s of an n x n x n float32 product: ``torch`` = ``a @ b`` (MKL on CPU, cuBLAS on CUDA, in full
    float32 unless the process allowed TF32), ``openblas`` = the OpenBLAS sgemm of ``ticketlab.hardware.blas`` on as
    many threads as torch has."""
    from ticketlab.hardware import blas as gemm
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    out = torch.empty(n, n, device=device)
    if blas == "torch":
        product = lambda: torch.mm(a, b, out=out)  # noqa: E731
    else:
        product = lambda: gemm._gemm(a, b, out, 0.0)  # noqa: E731
    inner = 5
    with gemm.training_threads() if blas != "torch" else contextlib.nullcontext():
        product()
        t = median_time(synced(lambda: [product() for _ in range(inner)], device), repeats)
    return 2 * n**3 * inner / t


# -- (b) the plain loop ------------------------------------------------------------------------------
def plain_model(name: str) -> nn.Module:
    if name == "lenet300":
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    return build(name)


def plain_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, steps: int, lr: float = 0.1) -> None:
    """What anyone would write: the data as one tensor, a randperm per epoch, slices, SGD."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    perm = torch.randperm(len(x), device=x.device)
    pos = 0
    for _ in range(steps):
        if pos + batch > len(x):
            perm, pos = torch.randperm(len(x), device=x.device), 0
        idx = perm[pos : pos + batch]
        pos += batch
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def worker(kind: str, name: str, batch: int, steps: int, warmup: int, k: int) -> None:
    """One of two processes run together ((e) and (d2)): one thread, warm up, print 'ready', wait for
    'go' on stdin, then print the time of its own timed loop."""
    import sys

    torch.set_num_threads(1)
    data, _ = load_data()
    if kind == "plain":
        model = plain_model(name)
        plain_loop(model, data.x_train, data.y_train, batch, warmup)
        timed = lambda: plain_loop(model, data.x_train, data.y_train, batch, steps)  # noqa: E731
    elif kind == "single":
        timed = single_runner(name, without_eval(data), batch, steps, warmup, masked=True)
    else:
        timed = many_runner(name, without_eval(data), batch, k, steps, warmup)
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    timed()
    print(time.perf_counter() - t0, flush=True)


def two_processes(name: str, batch: int, steps: int, warmup: int, repeats: int, kind: str = "plain", k: int = 1) -> float:
    """Time of two one-thread workers started together, ``steps`` each (median of repeats): the slower
    worker's own timing of its loop, so interpreter start-up and exit are not charged."""
    import subprocess
    import sys

    walls = []
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", f"{kind},{name},{batch},{steps},{warmup},{k}"]
    for _ in range(repeats):
        procs = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        own = []
        for p in procs:
            assert p.stdout is not None
            own.append(float(p.stdout.readline()))
            p.wait()
        walls.append(max(own))
    return statistics.median(walls)


# -- (c), (d) our trainers ---------------------------------------------------------------------------
def single_runner(name: str, data, batch: int, steps: int, warmup: int, masked: bool = True,
                  device: torch.device | str = "cpu"):
    """One model (random 20% mask if ``masked``) through ``train``, warmed up; returns the timed call."""
    from ticketlab.config.recipe import Recipe
    from ticketlab.training.loop import train
    base = build(name)
    mask = random_masks(base, 1, 0.2)[0] if masked else None
    recipe = Recipe(steps=f"{steps + warmup}it", batch_size=batch, lr=0.1, eval_every=None)
    train(copy.deepcopy(base), data, recipe, mask=mask, end_step=warmup, device=device)
    return synced(lambda: train(copy.deepcopy(base), data, recipe, mask=mask, start_step=warmup, device=device), device)


def ours_single(name: str, data, batch: int, steps: int, warmup: int, repeats: int, masked: bool = True,
                device: torch.device | str = "cpu") -> float:
    return median_time(single_runner(name, data, batch, steps, warmup, masked, device), repeats)


def many_runner(name: str, data, batch: int, k: int, steps: int, warmup: int, device: torch.device | str = "cpu"):
    """K stacked models with random 20% masks, warmed up; returns the timed call (``steps`` steps)."""
    from ticketlab.config.recipe import Recipe
    from ticketlab.training.stacked import train_many

    base = build(name)
    masks = random_masks(base, k, 0.2)
    recipe = Recipe(steps=f"{steps + warmup}it", batch_size=batch, lr=0.1, eval_every=None)

    def run(start: int, end: int | None) -> None:
        train_many([copy.deepcopy(base) for _ in range(k)], data, recipe, masks=masks, seeds=list(range(k)),
                   start_step=start, end_step=end, device=device)

    run(0, warmup)
    return synced(lambda: run(warmup, None), device)


def ours_many(name: str, data, batch: int, k: int, steps: int, warmup: int, repeats: int,
              device: torch.device | str = "cpu") -> float:
    return median_time(many_runner(name, data, batch, k, steps, warmup, device), repeats)


# -- the goals' rows, interleaved ------------------------------------------------------------------
def interleaved(name: str, data, batch: int, steps: int, warmup: int, rounds: int, ks: tuple[int, ...],
                log=print, limit=None) -> dict[str, Any]:
    """The rows the goals compare, timed in ``rounds`` rounds of one run each, one row after another
    within a round. On a shared machine the load drifts over minutes; a ratio taken within one round
    compares the rows under the same load, and the spread of the per-round ratios shows the noise.
    ``limit()``, if given, measures the matmul limit at the start of each round: not used by the goals
    (they take the run's best limit), it shows whether a slow round was slow for the matmul too."""
    from ticketlab.training.loop import steps_per_epoch
    plain = plain_model(name)
    plain_loop(plain, data.x_train, data.y_train, batch, warmup)
    single = single_runner(name, data, batch, steps, warmup, masked=False)

    def timed(fn):  # one run's seconds
        return lambda: median_time(fn, 1)

    runners = {  # kind -> (models trained per run, a run returning its seconds)
        ("plain", 1): (1, timed(lambda: plain_loop(plain, data.x_train, data.y_train, batch, steps))),
        ("two_processes", 2): (2, lambda: two_processes(name, batch, steps, warmup, 1)),
        ("ours_single_dense", 1): (1, timed(single)),
        **{("ours_many_2proc", k): (k, lambda k=k: two_processes(name, batch, steps, warmup, 1, "many", k // 2))
           for k in ks if k >= 2 and k % 2 == 0},
    }
    spe = steps_per_epoch(len(data.x_train), batch)
    per_model_epoch: dict[str, list[float]] = {f"{kind} K={k}": [] for kind, k in runners}
    limits: list[float] = []
    for r in range(rounds):
        if limit is not None:
            limits.append(limit())
        for (kind, k), (models, run) in runners.items():
            per_model_epoch[f"{kind} K={k}"].append(run() / (steps * models) * spe)
        log(f"  interleaved {name} b{batch} round {r + 1}/{rounds}: " +
            ", ".join(f"{key} {v[-1]:.3f}" for key, v in per_model_epoch.items()))
    return {"model": name, "batch": batch, "rounds": rounds, "steps": steps, "steps_per_epoch": spe,
            "macs": macs_per_example(build(name)), "s_per_model_epoch": per_model_epoch,
            **({"limit_per_round": limits} if limits else {})}


# -- (f) scoring -------------------------------------------------------------------------------------
def scoring_times(repeats: int, rounds: int, device: torch.device | str = "cpu") -> list[dict[str, Any]]:
    from ticketlab.criteria import ScoringContext, score
    from ticketlab.masks import Mask, select
    from ticketlab.models import build_model, initialize
    from ticketlab.schedules import multishot_densities

    rows = []
    for name, shape in (("lenet300", (1, 28, 28)), ("resnet20", (3, 32, 32))):
        model = initialize(build_model(name, input_shape=shape, num_classes=10), seed=0).to(device)
        g = torch.Generator().manual_seed(0)
        batches = [(torch.randn(100, *shape, generator=g).to(device), torch.randint(10, (100,), generator=g).to(device))
                   for _ in range(10)]
        ctx = ScoringContext(batches=batches, input_shape=shape, initial=None, seed=0, options={})
        for criterion, n_rounds in (("snip", 1), ("grasp", 1), ("synflow", rounds)):
            def run() -> None:
                mask = Mask.ones(model)
                for d in multishot_densities(0.01, n_rounds, "exponential", start=1.0):
                    mask.apply(model)
                    mask = select(score(criterion, model, mask, ctx), d, "global", previous=mask, seed=0)

            t = median_time(synced(run, device), repeats)
            rows.append({"model": name, "criterion": criterion, "rounds": n_rounds, "seconds": t,
                         "batches": 0 if criterion == "synflow" else len(batches)})
    return rows


# -- driver ------------------------------------------------------------------------------------------
def run_benchmark(quick: bool = False, models: tuple[str, ...] = ("lenet300", "conv6"), ks: tuple[int, ...] = (1, 4, 8, 16),
                  batches: tuple[int, ...] = (60, 128), threads: int | None = None, rounds: int = 0,
                  log=print, device: str = "cpu") -> dict[str, Any]:
    from ticketlab.hardware.device import resolve_device, set_threads
    from ticketlab.training.loop import steps_per_epoch
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    if cuda and rounds:
        raise ValueError("bench: rounds time the CPU's process layouts (e) and (d2); leave rounds out on CUDA")
    threads = set_threads(threads)
    data, data_name = load_data()
    timed = without_eval(data).to(dev)
    repeats = 3 if quick else 5
    report: dict[str, Any] = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"), "host": socket.gethostname(),
        "processor": platform.processor() or platform.machine(), "torch": torch.__version__, "threads": threads,
        "cpu_count": os.cpu_count(), "load_average_before": os.getloadavg(), "data": data_name, "quick": quick,
        "flop_formula": "6 x MACs per example x examples (2 forward + 4 backward)",
        "device": f"cuda ({torch.cuda.get_device_name(dev)})" if cuda else "cpu", "limit_n": 8192 if cuda else 2048,
    }
    from ticketlab.hardware import blas as gemm
    report["gemm_backend"] = "cuBLAS" if cuda else f"{gemm.backend().name} ({gemm.backend().reason})"

    def measure_limit(when: str) -> dict[str, float]:
        n = report["limit_n"]
        if cuda:  # a 2048 product is too small to keep a GPU busy
            by_blas = {"torch (cuBLAS)": matmul_flops(repeats, n=n, device=dev)}
        else:
            by_blas = {"torch (MKL)": matmul_flops(repeats, n=n)}
            if gemm.active():
                by_blas["openblas"] = matmul_flops(repeats, n=n, blas="openblas")
        for blas, flops in by_blas.items():
            log(f"(a) {when}: dense {n}x{n} matmul, {blas}: {flops / 1e9:.1f} GFLOP/s on {report['device']}")
        return by_blas

    # measured before and after the trainers, the higher one counts: a busy neighbour during one
    # measurement would otherwise lower the limit and flatter every fraction
    limits = [measure_limit("before")]
    limit = max(limits[0].values())
    log(f"    MLP layers of our trainers: {report['gemm_backend']}")
    rows = []
    for name in models:
        conv = name != "lenet300"
        macs = macs_per_example(build(name))
        steps = (2 if quick else 4) if conv else (100 if quick else 600)
        warmup = 1 if conv else 10
        model_ks = tuple(k for k in ks if not (quick and conv and k > 4))
        for batch in batches if not conv else batches[:1]:
            spe = steps_per_epoch(len(timed.x_train), batch)
            flops_per_step = 6 * macs * batch

            def add(kind: str, k: int, seconds: float, models_trained: int) -> None:
                per_model_epoch = seconds / (steps * models_trained) * spe
                achieved = flops_per_step * steps * models_trained / seconds
                rows.append({"model": name, "batch": batch, "kind": kind, "K": k, "seconds": seconds, "steps": steps,
                             "s_per_model_epoch": per_model_epoch, "model_epochs_per_s": 1 / per_model_epoch,
                             "gflops": achieved / 1e9, "fraction_of_limit": achieved / limit})
                log(f"  {name} b{batch} {kind:>14} K={k:<2} {per_model_epoch:7.3f} s/model-epoch "
                    f"{achieved / 1e9:6.1f} GFLOP/s ({achieved / limit:.0%} of the limit measured before)")

            model = plain_model(name).to(dev)
            plain_loop(model, timed.x_train, timed.y_train, batch, warmup)
            add("plain", 1, median_time(synced(lambda: plain_loop(model, timed.x_train, timed.y_train, batch, steps), dev), repeats), 1)
            if not cuda:  # (e), (c2), (d2) are the CPU's process layouts
                add("two_processes", 2, two_processes(name, batch, steps, warmup, max(1, repeats // 2)), 2)
            add("ours_single_dense", 1, ours_single(name, timed, batch, steps, warmup, repeats, masked=False, device=dev), 1)
            add("ours_single", 1, ours_single(name, timed, batch, steps, warmup, repeats, device=dev), 1)
            if not conv and not cuda:  # a CPU sweep's default layout: one-thread workers, one masked model each
                add("ours_single_2proc", 2, two_processes(name, batch, steps, warmup, max(1, repeats // 2), "single"), 2)
            for k in model_ks:
                add("ours_many", k, ours_many(name, timed, batch, k, steps, warmup, repeats, device=dev), k)
            for k in model_ks:
                if k >= 2 and k % 2 == 0 and not conv and not cuda:  # a sweep's layout here: 2 workers x 1 thread, K/2 stacked each
                    add("ours_many_2proc", k, two_processes(name, batch, steps, warmup, max(1, repeats // 2), "many", k // 2), k)
    def round_limit() -> float:  # counts towards the limit like the measurements before and after
        limits.append(measure_limit("in a round"))
        return max(limits[-1].values())

    report["interleaved"] = []
    if rounds and "lenet300" in models:
        for batch in batches:
            report["interleaved"].append(
                interleaved("lenet300", timed, batch, 100 if quick else 600, 10, rounds, tuple(k for k in ks if k >= 8), log,
                            limit=round_limit))
    limits.append(measure_limit("after"))
    report["training"] = rows
    settle_limit(report, limits)
    scoring = scoring_times(1 if quick else 3, 100, device=dev)
    report["scoring"] = scoring
    for r in scoring:
        log(f"(f) {r['model']} {r['criterion']} x{r['rounds']}: {r['seconds']:.2f} s")
    report["load_average_after"] = os.getloadavg()
    report["goals"] = goals(report)
    return report


def settle_limit(report: dict[str, Any], measurements: list[dict[str, float]]) -> None:
    """The limit is the fastest BLAS at its best measurement; every row's fraction is taken against it."""
    report["matmul_flops_measurements"] = measurements
    report["matmul_flops_by_blas"] = {blas: max(m[blas] for m in measurements) for blas in measurements[0]}
    limit = report["matmul_flops"] = max(report["matmul_flops_by_blas"].values())
    for row in report["training"]:
        row["fraction_of_limit"] = row["gflops"] * 1e9 / limit


def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals for LeNet-300-100 at batch 60 and 128: from the interleaved rounds where they
    were run (median of the per-round ratios, with their range), else from the table."""
    if report.get("interleaved"):
        return interleaved_goals(report)
    out = []
    rows = [r for r in report["training"] if r["model"] == "lenet300"]
    for batch in sorted({r["batch"] for r in rows}):
        by = {(r["kind"], r["K"]): r for r in rows if r["batch"] == batch}
        plain, two, single = by.get(("plain", 1)), by.get(("two_processes", 2)), by.get(("ours_single_dense", 1))
        many = [r for (kind, k), r in by.items() if kind in ("ours_many", "ours_many_2proc") and k >= 8]
        if not (plain and two and single and many):
            continue
        best = min(many, key=lambda r: r["s_per_model_epoch"])
        checks = [
            (f"{best['kind']} K={best['K']} >= 2x plain loop", plain["s_per_model_epoch"] / best["s_per_model_epoch"], 2.0),
            (f"{best['kind']} K={best['K']} >= 1.3x two 1-thread processes", two["s_per_model_epoch"] / best["s_per_model_epoch"], 1.3),
            (f"{best['kind']} K={best['K']} >= 70% of matmul limit", best["fraction_of_limit"], 0.7),
            ("single-model trainer (no mask, as the plain loop) no slower than plain loop",
             plain["s_per_model_epoch"] / single["s_per_model_epoch"], 1.0),
        ]
        for label, value, need in checks:
            out.append({"batch": batch, "goal": label, "value": value, "needed": need, "met": value >= need})
    return out


def flops_per_model_epoch(block: dict[str, Any]) -> float:
    """The table's formula for one interleaved block: 6 x MACs per example x examples per epoch."""
    return 6 * block["macs"] * block["batch"] * block["steps_per_epoch"]


def interleaved_goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    limit = report["matmul_flops"]
    for block in report["interleaved"]:
        times = block["s_per_model_epoch"]
        stacked = [key for key in times if key.startswith("ours_many")]
        best = min(stacked, key=lambda key: statistics.median(times[key]))

        def per_round(ratio) -> list[float]:
            return [ratio(i) for i in range(block["rounds"])]

        checks = [
            (f"{best} >= 2x plain loop", per_round(lambda i: times["plain K=1"][i] / times[best][i]), 2.0),
            (f"{best} >= 1.3x two 1-thread processes", per_round(lambda i: times["two_processes K=2"][i] / times[best][i]), 1.3),
            (f"{best} >= 70% of matmul limit",
             per_round(lambda i: flops_per_model_epoch(block) / times[best][i] / limit), 0.7),
            ("single-model trainer (no mask, as the plain loop) no slower than plain loop",
             per_round(lambda i: times["plain K=1"][i] / times["ours_single_dense K=1"][i]), 1.0),
        ]
        for label, values, need in checks:
            value = statistics.median(values)
            out.append({"batch": block["batch"], "goal": label, "value": value, "range": [min(values), max(values)],
                        "rounds": block["rounds"], "needed": need, "met": value >= need})
    return out


def markdown(report: dict[str, Any]) -> str:
    n = report.get("limit_n", 2048)
    lines = [
        f"# ticketlab speed benchmark — {report['date']} on {report['host']}",
        "",
        f"torch {report['torch']}, device {report.get('device', 'cpu')}, {report['threads']} threads, {report['cpu_count']} CPUs, data: {report['data']}, "
        f"{'quick' if report['quick'] else 'full'} mode; load average before {tuple(round(x, 1) for x in report['load_average_before'])}, "
        f"after {tuple(round(x, 1) for x in report['load_average_after'])}.",
        f"FLOPs: {report['flop_formula']}. Limit (a): dense {n}x{n} matmul {report['matmul_flops'] / 1e9:.1f} GFLOP/s, "
        "the fastest of " + ", ".join(f"{blas} {flops / 1e9:.1f}" for blas, flops in report.get("matmul_flops_by_blas", {}).items())
        + ", each the best of its measurements before and after the trainers"
        + (" and at the start of each interleaved round" if report.get("interleaved") else "") + " ("
        + "; ".join(", ".join(f"{blas} {flops / 1e9:.0f}" for blas, flops in m.items())
                    for m in report.get("matmul_flops_measurements", []))
        + ")"
        + (" (cuBLAS float32, the GEMM that MLP layers use; convolutions run on cuDNN, which may use TF32, PyTorch's "
           "default for convolutions, so conv rows can exceed 100%)." if report.get("device", "cpu").startswith("cuda") else
           " (the sgemm that MLP layers use; convolutions run on oneDNN kernels, which this figure does not bound, "
           "so conv rows can exceed 100%). The plain loops (b), (e) use PyTorch's BLAS; our trainers' MLP layers use "
           f"{report.get('gemm_backend', 'torch')}."),
        "",
        "| model | batch | trainer | K | s / model-epoch | model-epochs / s | GFLOP/s | of limit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {"plain": "(b) plain loop", "two_processes": "(e) 2 processes x 1 thread",
             "ours_single_dense": "(c) ours, one model, no mask", "ours_single": "(c) ours, one model, masked",
             "ours_single_2proc": "(c2) ours, 2 processes x 1 thread, one masked model each",
             "ours_many": "(d) ours, K models stacked", "ours_many_2proc": "(d2) ours, 2 processes x 1 thread x K/2 stacked"}
    for r in report["training"]:
        lines.append(f"| {r['model']} | {r['batch']} | {names[r['kind']]} | {r['K']} | {r['s_per_model_epoch']:.3f} | "
                     f"{r['model_epochs_per_s']:.2f} | {r['gflops']:.1f} | {r['fraction_of_limit']:.0%} |")
    lines += ["", "| scoring | model | rounds | seconds |", "|---|---|---|---|"]
    for r in report["scoring"]:
        lines.append(f"| {r['criterion']} | {r['model']} | {r['rounds']} | {r['seconds']:.2f} |")
    for block in report.get("interleaved", []):
        lines += ["", f"Interleaved, LeNet-300-100 batch {block['batch']}: {block['rounds']} rounds of {block['steps']} steps "
                  "per row, one row after another in each round (s / model-epoch):", "",
                  "| row | " + " | ".join(f"round {i + 1}" for i in range(block["rounds"])) + " | median |",
                  "|---|" + "---|" * (block["rounds"] + 1)]
        for key, values in block["s_per_model_epoch"].items():
            lines.append(f"| {key} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {statistics.median(values):.3f} |")
        if block.get("limit_per_round"):
            limits = block["limit_per_round"]
            stacked = [v for key, v in block["s_per_model_epoch"].items() if key.startswith("ours_many")]
            shares = [flops_per_model_epoch(block) / min(v[i] for v in stacked) / limits[i] for i in range(len(limits))] if stacked else []
            lines.append("| matmul limit at the round's start, GFLOP/s | " + " | ".join(f"{v / 1e9:.0f}" for v in limits)
                         + f" | {statistics.median(limits) / 1e9:.0f} |")
            if shares:
                lines.append("| fastest stacked row, share of that round's limit | " + " | ".join(f"{v:.0%}" for v in shares)
                             + f" | {statistics.median(shares):.0%} |")
    if report["goals"]:
        source = "median of the per-round ratios (range)" if report.get("interleaved") else "from the table"
        lines += ["", f"| goal (LeNet-300-100) | batch | measured: {source} | needed | met |", "|---|---|---|---|---|"]
        for g in report["goals"]:
            spread = f" ({g['range'][0]:.2f}-{g['range'][1]:.2f})" if "range" in g else ""
            lines.append(f"| {g['goal']} | {g['batch']} | {g['value']:.2f}{spread} | {g['needed']} | {'yes' if g['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out: Path | None = None) -> tuple[Path, Path]:
    out = Path(out) if out is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{report['date'][:10]}-{report['host']}"
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2))
    md_path.write_text(markdown(report))
    return json_path, md_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--models", default="lenet300,conv6")
    parser.add_argument("--ks", default="1,4,8,16")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, name, batch, steps, warmup, k = args.worker.split(",")
        worker(kind, name, int(batch), int(steps), int(warmup), int(k))
        return
    report = run_benchmark(args.quick, tuple(args.models.split(",")), tuple(int(k) for k in args.ks.split(",")),
                           threads=args.threads, rounds=args.rounds, device=args.device)
    for path in write(report, args.out):
        print(path)


if __name__ == "__main__":
    main()
