"""One benchmark run on one machine: the limit, the table of trainers, optional interleaved rounds,
the scoring times, and the report (a JSON-ready dict).

Timing: ``time.perf_counter`` around a fixed number of steps after warm-up steps, median of repeats.
The matmul limit is measured before and after the trainers and at the start of each interleaved
round; the best measurement counts. Seconds per model-epoch = seconds / (steps x models trained) x
steps per epoch.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import socket
from collections.abc import Callable
from typing import Any

import torch

from speed.compare import comparisons, goals
from speed.imp import imp_job, job_layout
from speed.layouts import layout_report
from speed.limits import limit_meter, settle_limit
from speed.processes import two_processes
from speed.scoring import scoring_times
from speed.timing import median_time
from speed.trainers import many_runner, plain_runner, single_runner
from speed.workload import FLOP_FORMULA, build, load_data, macs_per_example, without_eval
from ticketlab.data.dataset import Dataset
from ticketlab.hardware import blas as gemm
from ticketlab.hardware.device import resolve_device, set_threads
from ticketlab.hardware.environment import cpu_model
from ticketlab.training.loop import steps_per_epoch

Log = Callable[[str], object]
WARM_STEPS = 20  # steps per level of (h)'s untimed warm-up job


@dataclasses.dataclass(frozen=True)
class Settings:
    """How long each measurement runs. ``full`` is what the figures in benchmarks/README.md used."""

    mode: str = "full"
    mlp_steps: int = 600  # timed steps per row
    conv_steps: int = 4
    mlp_warmup: int = 10
    conv_warmup: int = 1
    repeats: int = 5  # median of; the two-process rows take half as many
    conv_max_k: int | None = None  # K of conv nets' stacked rows at most
    limit_n: int = 2048  # matrix size of the limit on CPU
    cuda_limit_n: int = 8192
    scoring_repeats: int = 3
    synflow_rounds: int = 100
    scoring_models: tuple[str, ...] = ("lenet300", "resnet20")
    layout_budget: float = 2.0  # seconds of timed steps per candidate layout (g)
    imp_steps: int = 1832  # training steps per level of the IMP job (h), 2 epochs at batch 60; 0: not run
    imp_seeds: int = 3  # its runs (the job: 3)

    @classmethod
    def named(cls, mode: str) -> Settings:
        presets = {
            "full": cls(),
            "quick": cls(
                "quick",
                mlp_steps=100,
                conv_steps=2,
                repeats=3,
                conv_max_k=4,
                scoring_repeats=1,
                layout_budget=0.5,
                imp_steps=300,
            ),
            # checks that the script runs end to end in seconds; its figures mean nothing
            "smoke": cls(
                "smoke",
                mlp_steps=2,
                conv_steps=1,
                mlp_warmup=1,
                repeats=1,
                conv_max_k=2,
                limit_n=256,
                cuda_limit_n=256,
                scoring_repeats=1,
                synflow_rounds=2,
                scoring_models=("lenet300",),
                layout_budget=0.01,
                imp_steps=0,
            ),
        }
        return presets[mode]

    def steps(self, conv: bool) -> tuple[int, int]:
        """(timed steps, warm-up steps) of one row."""
        return (self.conv_steps, self.conv_warmup) if conv else (self.mlp_steps, self.mlp_warmup)


def run_benchmark(
    settings: Settings = Settings(),
    models: tuple[str, ...] = ("lenet300", "conv6"),
    ks: tuple[int, ...] = (1, 4, 8, 16),
    batches: tuple[int, ...] = (60, 128),
    threads: int | None = None,
    rounds: int = 0,
    log: Log = print,
    device: str = "cpu",
) -> dict[str, Any]:
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    if cuda and rounds:
        raise ValueError("bench: rounds time the CPU's process layouts (e) and (d2); leave rounds out on CUDA")
    threads = set_threads(threads)
    data, data_name = load_data()
    timed = without_eval(data).to(dev)
    report: dict[str, Any] = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "processor": processor_name(),
        "torch": torch.__version__,
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "data": data_name,
        "mode": settings.mode,
        "settings": dataclasses.asdict(settings),
        "flop_formula": FLOP_FORMULA,
        "device": f"cuda ({torch.cuda.get_device_name(dev)})" if cuda else "cpu",
        "limit_n": settings.cuda_limit_n if cuda else settings.limit_n,
        "gemm_backend": "cuBLAS" if cuda else f"{gemm.backend().name} ({gemm.backend().reason})",
    }
    measure = limit_meter(settings.repeats, report["limit_n"], dev, log)
    limits = [measure("before")]
    log(f"    MLP layers of our trainers: {report['gemm_backend']}")
    report["training"] = []
    for name in models:
        report["training"] += table_rows(name, timed, settings, ks, batches, dev, max(limits[0].values()), log)

    def round_limit() -> float:  # counts towards the limit like the measurements before and after
        limits.append(measure("in a round"))
        return max(limits[-1].values())

    report["interleaved"] = []
    if rounds and "lenet300" in models:
        steps, warmup = settings.steps(conv=False)
        for batch in batches:
            report["interleaved"].append(
                interleaved(
                    "lenet300",
                    timed,
                    batch,
                    steps,
                    warmup,
                    rounds,
                    tuple(k for k in ks if k >= 8),
                    log,
                    limit=round_limit,
                )
            )
    limits.append(measure("after"))
    settle_limit(report, limits)
    if not cuda and "lenet300" in models:
        report["layouts"] = layout_report(batches[0], settings.layout_budget, report["matmul_flops"], log)
        if settings.imp_steps:
            runs, limit = settings.imp_seeds, report["matmul_flops"]
            # in the layout the sweep itself chooses for the job (timed with its Adam recipe; (g) times SGD),
            # and untimed first, in each mode: the layout (timed per sparse-training mode) and each
            # sparse-training verdict the job needs are measured once per machine and cached (sweep.layout,
            # training.sparse), as by any job after a machine's first
            layout = None
            log(f"(h) warm-up: the job at {WARM_STEPS} steps per level, sparse training off and auto, not timed")
            for mode in ("off", "auto"):
                imp_job(WARM_STEPS, layout, limit, lambda line: None, sparse=mode, seeds=runs)
            report["imp_layout"] = job_layout(runs)  # its choice and the rows behind it, from that cache
            report["imp_dense"] = imp_job(settings.imp_steps, layout, limit, log, sparse="off", seeds=runs)
            report["imp"] = imp_job(settings.imp_steps, layout, limit, log, sparse="auto", seeds=runs)
    report["scoring"] = scoring_times(settings.scoring_repeats, settings.synflow_rounds, settings.scoring_models, dev)
    for r in report["scoring"]:
        log(f"(f) {r['model']} {r['criterion']} x{r['rounds']}: {r['seconds']:.2f} s")
    report["load_average_after"] = os.getloadavg()
    report["comparisons"] = comparisons(report)
    report["goals"] = goals(report)
    return report


def processor_name() -> str:
    """The CPU's model name (``ticketlab.hardware.environment.cpu_model``)."""
    return cpu_model()


def table_rows(
    name: str,
    data: Dataset,
    settings: Settings,
    ks: tuple[int, ...],
    batches: tuple[int, ...],
    dev: torch.device,
    limit: float,
    log: Log,
) -> list[dict[str, Any]]:
    """Every trainer on one model: (b), (e), (c), (c2), (d), (d2) at each batch size (conv nets: the first)."""
    conv = name != "lenet300"
    cpu = dev.type != "cuda"
    macs = macs_per_example(build(name))
    steps, warmup = settings.steps(conv)
    model_ks = tuple(k for k in ks if not (conv and settings.conv_max_k and k > settings.conv_max_k))
    pair_repeats = max(1, settings.repeats // 2)
    rows = []
    for batch in batches if not conv else batches[:1]:
        spe = steps_per_epoch(len(data.x_train), batch)
        flops_per_step = 6 * macs * batch

        def add(kind: str, k: int, seconds: float, models_trained: int) -> None:
            per_model_epoch = seconds / (steps * models_trained) * spe
            achieved = flops_per_step * steps * models_trained / seconds
            rows.append(
                {
                    "model": name,
                    "batch": batch,
                    "kind": kind,
                    "K": k,
                    "seconds": seconds,
                    "steps": steps,
                    "s_per_model_epoch": per_model_epoch,
                    "model_epochs_per_s": 1 / per_model_epoch,
                    "gflops": achieved / 1e9,
                    "fraction_of_limit": achieved / limit,
                }
            )
            log(
                f"  {name} b{batch} {kind:>14} K={k:<2} {per_model_epoch:7.3f} s/model-epoch "
                f"{achieved / 1e9:6.1f} GFLOP/s ({achieved / limit:.0%} of the limit measured before)"
            )

        add("plain", 1, median_time(plain_runner(name, data, batch, steps, warmup, dev), settings.repeats), 1)
        if cpu:  # (e), (c2), (d2) are the CPU's process layouts
            add("two_processes", 2, two_processes(name, batch, steps, warmup, pair_repeats), 2)
        for kind, masked in (("ours_single_dense", False), ("ours_single", True)):
            add(kind, 1, median_time(single_runner(name, data, batch, steps, warmup, masked, dev), settings.repeats), 1)
        if not conv and cpu:  # a CPU sweep's default layout: one-thread workers, one masked model each
            add("ours_single_2proc", 2, two_processes(name, batch, steps, warmup, pair_repeats, "single"), 2)
        for k in model_ks:
            add("ours_many", k, median_time(many_runner(name, data, batch, k, steps, warmup, dev), settings.repeats), k)
        for k in model_ks:
            if (
                k >= 2 and k % 2 == 0 and not conv and cpu
            ):  # a sweep's layout here: 2 workers x 1 thread, K/2 stacked each
                add("ours_many_2proc", k, two_processes(name, batch, steps, warmup, pair_repeats, "many", k // 2), k)
    return rows


def interleaved(
    name: str,
    data: Dataset,
    batch: int,
    steps: int,
    warmup: int,
    rounds: int,
    ks: tuple[int, ...],
    log: Log = print,
    limit: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """(b), (e), (c) without mask and (d2) for ``ks``, timed in ``rounds`` rounds of one run each: a ratio
    within one round compares the rows under the same load, and the spread of the per-round ratios shows
    the noise. Rows compared with each other run back to back, in pairs ((b) and (c); (e) and (d2)), first
    one then the other first in alternate rounds: a one-process row is never timed seconds apart from its
    partner with a two-process row's start-up between them, and a drift in the load favours neither.
    ``limit()``, if given, measures the matmul limit at the start of each round, to show whether a slow
    round was slow for the matmul too."""
    plain = plain_runner(name, data, batch, steps, warmup)
    single = single_runner(name, data, batch, steps, warmup, masked=False)

    def timed(fn):  # one run's seconds
        return lambda: median_time(fn, 1)

    runners = {  # row -> (models trained per run, a run returning its seconds)
        "plain K=1": (1, timed(plain)),
        "two_processes K=2": (2, lambda: two_processes(name, batch, steps, warmup, 1)),
        "ours_single_dense K=1": (1, timed(single)),
        **{
            f"ours_many_2proc K={k}": (k, lambda k=k: two_processes(name, batch, steps, warmup, 1, "many", k // 2))
            for k in ks
            if k >= 2 and k % 2 == 0
        },
    }
    spe = steps_per_epoch(len(data.x_train), batch)
    per_model_epoch: dict[str, list[float]] = {key: [] for key in runners}
    limits: list[float] = []
    stacked = [key for key in runners if key.startswith("ours_many_2proc")]
    pairs = [["plain K=1", "ours_single_dense K=1"], ["two_processes K=2", *stacked]]
    for r in range(rounds):
        if limit is not None:
            limits.append(limit())
        for pair in pairs:
            for key in pair if r % 2 == 0 else reversed(pair):
                models, run = runners[key]
                per_model_epoch[key].append(run() / (steps * models) * spe)
        log(
            f"  interleaved {name} b{batch} round {r + 1}/{rounds}: "
            + ", ".join(f"{key} {v[-1]:.3f}" for key, v in per_model_epoch.items())
        )
    return {
        "model": name,
        "batch": batch,
        "rounds": rounds,
        "steps": steps,
        "steps_per_epoch": spe,
        "macs": macs_per_example(build(name)),
        "s_per_model_epoch": per_model_epoch,
        **({"limit_per_round": limits} if limits else {}),
    }
