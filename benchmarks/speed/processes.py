"""Two one-thread processes run at the same time: (e) two plain loops, (c2) one masked model each
(a CPU sweep's layout without stacking), (d2) K/2 stacked models each (a sweep's stacked layout on CPU).

Each worker is ``bench.py --worker kind,name,batch,steps,warmup,k``: it warms up, prints ``ready``, waits
for ``go`` on stdin and prints the time of its own timed loop, so interpreter start-up and exit are not
charged.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from speed.trainers import many_runner, plain_runner, single_runner
from speed.workload import load_data, without_eval

SCRIPT = Path(__file__).resolve().parents[1] / "bench.py"


def worker(spec: str) -> None:
    """One worker process; ``spec`` is ``kind,name,batch,steps,warmup,k`` with kind plain, single or many."""
    kind, name, batch, steps, warmup, k = spec.split(",")
    batch, steps, warmup, k = int(batch), int(steps), int(warmup), int(k)
    torch.set_num_threads(1)
    data, _ = load_data()
    if kind == "plain":
        timed = plain_runner(name, data, batch, steps, warmup)
    elif kind == "single":
        timed = single_runner(name, without_eval(data), batch, steps, warmup, masked=True)
    else:
        timed = many_runner(name, without_eval(data), batch, k, steps, warmup)
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    timed()
    print(time.perf_counter() - t0, flush=True)


def two_processes(
    name: str, batch: int, steps: int, warmup: int, repeats: int, kind: str = "plain", k: int = 1
) -> float:
    """Seconds of two workers started together, ``steps`` each, ``k`` models each for ``many`` (median of
    repeats): the slower worker's own timing of its loop."""
    walls = []
    command = [sys.executable, str(SCRIPT), "--worker", f"{kind},{name},{batch},{steps},{warmup},{k}"]
    for _ in range(repeats):
        procs = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"bench worker {command[3]} did not start (exit code {p.wait()}): {line!r}")
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
