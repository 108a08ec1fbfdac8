"""Wall time of a short lottery run with two controls, the controls stacked (``TICKETLAB_STACK_CONTROLS=on``,
the default) and one at a time (``off``): LeNet-300-100 on Fashion-MNIST, 300 steps per level, 2 pruned
levels (K = 0.8 to density 0.64), controls reinit and shuffle_mask, the CLI's default recipe otherwise.

The two ways run in ``--rounds`` interleaved rounds (off/on, then on/off) into fresh temporary folders.
Reported: each run's wall time and the controls' training time (the sum of their ``train_time``: a stack's
time is split among its models), medians and their ratios, with the CPU, torch's threads and ``uptime``
before and after.

Run: ``python benchmarks/stacked_controls.py [--rounds 3] [--threads N] [--data-root DIR]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time

import torch

from ticketlab.config import ExperimentSpec, MethodSpec, Recipe
from ticketlab.experiment.run import run_experiment
from ticketlab.hardware.cpu import cpu_model


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch's intra-op threads (default: torch's)")
    parser.add_argument("--data-root", default=None, help="where Fashion-MNIST is (default: the usual places)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = ExperimentSpec(
        model="lenet300",
        dataset="fashion-mnist",
        recipe=Recipe(steps="300it"),
        method=MethodSpec(name="lottery"),
        densities=[0.64],
        controls=["reinit", "shuffle_mask"],
    )
    print(f"CPU: {cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} thread(s)")
    print(f"uptime before: {uptime()}", flush=True)
    runs: dict[str, list[float]] = {"off": [], "on": []}
    controls: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as scratch:
        for r in range(args.rounds):
            for way in ("off", "on") if r % 2 == 0 else ("on", "off"):
                os.environ["TICKETLAB_STACK_CONTROLS"] = way
                start = time.perf_counter()
                result = run_experiment(spec, tempfile.mkdtemp(dir=scratch), data_root=args.data_root)
                runs[way].append(time.perf_counter() - start)
                rows = [row for row in result.rows if row.get("control")]
                controls[way].append(sum(row["train_time"] for row in rows))
                stacked = [row["stacked"] for row in rows]
                print(
                    f"round {r} {way}: run {runs[way][-1]:.2f} s, controls {controls[way][-1]:.2f} s, stacked {stacked}"
                )
    print(f"uptime after: {uptime()}")
    run_ratio = statistics.median(runs["off"]) / statistics.median(runs["on"])
    control_ratio = statistics.median(controls["off"]) / statistics.median(controls["on"])
    for way in ("off", "on"):
        print(f"{way}: run {statistics.median(runs[way]):.2f} s, controls {statistics.median(controls[way]):.2f} s")
    print(f"one at a time / stacked: whole run {run_ratio:.2f}x, controls' training {control_ratio:.2f}x")


if __name__ == "__main__":
    main()
