"""Wall time of a short IMP job with the sparse training path (``ticketlab.training.sparse``) off, automatic
and forced on: LeNet-300-100 on Fashion-MNIST, lottery (rewind to step 0), K = 0.5 down to 1/64 density
(6 pruned levels + dense), layerwise magnitude pruning, 1 epoch per level, SGD lr 0.1, batch 60.

Each job is ``run_on`` of the spec on data loaded once, into a fresh folder. The modes run in ``--rounds``
rounds (off, auto, on in each) so that a change of machine load hits all three. ``auto`` starts from an
empty verdict cache (a temporary ``XDG_CACHE_HOME``): its first round includes the micro-benchmarks,
later rounds read the cached verdicts. Reported: each job's wall time, the per-level training time (median
over rounds), which layers ``auto`` put on the sparse path, and the final test accuracies (equal to float
tolerance). The machine, torch threads and ``/proc/loadavg`` before and after are stated beside the figures.

Run: ``python benchmarks/sparse_training.py [--rounds 2] [--threads N] [--out benchmarks/sparse_training.md]``
(about 5 minutes on the 2-core development machine).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ticketlab.config import ExperimentSpec, MethodSpec, Recipe
from ticketlab.data import load_dataset
from ticketlab.experiment.run import run_on
from ticketlab.hardware import blas
from ticketlab.hardware.environment import cpu_model
from ticketlab.training import sparse

MODES = ("off", "auto", "on")
OUT = Path(__file__).resolve().with_name("sparse_training.md")
SPEC = ExperimentSpec(
    model="lenet300",
    dataset="fashion-mnist",
    recipe=Recipe(steps="1ep", batch_size=60, lr=0.1, eval_every="1ep"),
    densities=(1 / 64,),
    method=MethodSpec(name="lottery", K=0.5, scope="layerwise"),
)


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def job(data, mode: str) -> dict:
    sparse.set_mode(mode)
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        result = run_on(SPEC, data, root, device="cpu")
        wall = time.perf_counter() - started
    rows = sorted((r for r in result.rows if not r.get("control")), key=lambda r: r["level"])
    return {"mode": mode, "wall": wall, "rows": rows}


def sparse_layers(row: dict) -> str:
    layers = (row.get("sparse_training") or {}).get("layers", {})
    chosen = [name.removeprefix("layers.").removesuffix(".weight") for name, v in layers.items() if v["sparse"]]
    return ", ".join(chosen) if chosen else "-"


def markdown(jobs: list[dict], threads: int, load_before: str, load_after: str, seconds: float) -> str:
    # long: the report's lines in order
    by_mode = {m: [j for j in jobs if j["mode"] == m] for m in MODES}
    lines = [
        "# Sparse training: an IMP job with and without it",
        "",
        f"Produced by `python benchmarks/sparse_training.py` on {_dt.date.today().isoformat()}; whole run {seconds:.0f} s.",
        "",
        (
            f"- CPU: {cpu_model()}, {torch.backends.cpu.get_cpu_capability()} kernels, {os.cpu_count()} CPUs visible, "
            f"{threads} torch thread(s); dense Linear products through {blas.backend().name}; torch {torch.__version__}"
        ),
        (
            f"- load average (1, 5, 15 min) {load_before} before, {load_after} after: the machine is shared, "
            "so compare the modes within a round"
        ),
        (
            "- job: LeNet-300-100 on Fashion-MNIST (55k train, 5k val, 10k test), lottery (IMP, rewind to step 0), "
            "K = 0.5, layerwise magnitude, down to 1/64 density (dense + 6 levels), 1 epoch per level, SGD lr 0.1, "
            "batch 60, evaluation once per level"
        ),
        (
            "- `off`: the dense masked fused step; `auto`: layers timed at each level's start (cold cache in round 1, "
            "cached verdicts after); `on`: every pruned layer sparse"
        ),
        "",
        "## Whole job (seconds, data loading excluded; ratios: median of the per-round ratios)",
        "",
        "| round | " + " | ".join(MODES) + " | off / auto | off / on |",
        "|---:|" + "---:|" * (len(MODES) + 2),
    ]
    rounds = len(by_mode["off"])
    for r in range(rounds):
        walls = {m: by_mode[m][r]["wall"] for m in MODES}
        lines.append(
            f"| {r + 1} | "
            + " | ".join(f"{walls[m]:.1f}" for m in MODES)
            + f" | {walls['off'] / walls['auto']:.2f}x | {walls['off'] / walls['on']:.2f}x |"
        )
    ratios = {m: [by_mode["off"][r]["wall"] / by_mode[m][r]["wall"] for r in range(rounds)] for m in ("auto", "on")}
    lines.append(
        "| median | "
        + " | ".join(f"{statistics.median(j['wall'] for j in by_mode[m]):.1f}" for m in MODES)
        + f" | {statistics.median(ratios['auto']):.2f}x | {statistics.median(ratios['on']):.2f}x |"
    )
    lines += [
        "",
        "## Per level: training time (s, median over rounds) and what `auto` chose",
        "",
        "| level | density | " + " | ".join(f"train s ({m})" for m in MODES) + " | sparse layers (auto, last round) | "
        "auto's measurement in round 1 (us per whole step, the layer dense / sparse) | test acc off / auto / on |",
        "|---:|---:|" + "---:|" * len(MODES) + "---|---|---|",
    ]
    levels = range(len(by_mode["off"][0]["rows"]))
    for i, row in enumerate(by_mode["off"][0]["rows"]):
        times = {m: statistics.median(j["rows"][i]["train_time"] for j in by_mode[m]) for m in MODES}
        auto_row = by_mode["auto"][-1]["rows"][i]
        first_auto = by_mode["auto"][0]["rows"][i]
        verdicts = (first_auto.get("sparse_training") or {}).get("layers", {})
        verdict = "; ".join(
            f"{name.removeprefix('layers.').removesuffix('.weight')}: {v['dense_us']:.0f} / {v['sparse_us']:.0f}"
            for name, v in verdicts.items()
        )
        accs = " / ".join(f"{by_mode[m][-1]['rows'][i]['test_acc']:.4f}" for m in MODES)
        lines.append(
            f"| {row['level']} | {row['density']:.4f} | "
            + " | ".join(f"{times[m]:.2f}" for m in MODES)
            + f" | {sparse_layers(auto_row)} | {verdict or '-'} | {accs} |"
        )
    totals = {m: sum(statistics.median(j["rows"][i]["train_time"] for j in by_mode[m]) for i in levels) for m in MODES}
    lines.append(
        "| all | | "
        + " | ".join(f"{totals[m]:.2f}" for m in MODES)
        + f" | off / auto {totals['off'] / totals['auto']:.2f}x, off / on {totals['off'] / totals['on']:.2f}x | | |"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=OUT, help="the markdown file to write")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = tempfile.TemporaryDirectory()
    os.environ["XDG_CACHE_HOME"] = cache.name  # auto starts from no verdicts
    data = load_dataset(SPEC.dataset, val_size=SPEC.val_size, seed=SPEC.split_seed)
    load_before = load_average()
    started = time.perf_counter()
    jobs = []
    for r in range(args.rounds):
        for mode in MODES:
            jobs.append(job(data, mode))
            print(f"round {r + 1} {mode}: {jobs[-1]['wall']:.1f} s", flush=True)
    sparse.set_mode(None)
    text = markdown(jobs, torch.get_num_threads(), load_before, load_average(), time.perf_counter() - started)
    args.out.write_text(text)
    print(text)
    print(f"wrote {args.out}")
    cache.cleanup()
    return args.out


if __name__ == "__main__":
    main()
