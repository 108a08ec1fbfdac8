"""Speed benchmark: how close training gets to the processor's dense matmul limit.

In one run on one machine it measures
  (a) dense float32 matmul FLOP/s on the configured threads: the limit (speed/limits.py);
  (b) a plain one-model PyTorch loop (data as one tensor, randperm, nn.Sequential / the zoo module, SGD);
  (c) ticketlab's single-model trainer ``ticketlab.training.loop.train``, without and with a mask, and
      (c2, MLPs) two one-thread processes with one masked model each, as a CPU sweep runs it;
  (d) ticketlab's K-model trainer ``ticketlab.training.stacked.train_many`` for K in --ks (masks applied),
      in one process, and (d2, MLPs) two one-thread processes with K/2 stacked models each;
  (e) two plain-loop processes with one thread each, run at the same time;
  (f) scoring: SNIP, GraSP and 100-round SynFlow on LeNet-300-100 and ResNet-20;
  (g) the layout (processes x threads x stacked K) a sweep would choose here for 8, 3 and 1 LeNet-300-100
      runs, and the timed candidates behind it (speed/layouts.py);
  (h) the 3-seed IMP job of imp_wall_time.yaml at a few hundred steps per level, its per-level phases
      (train, evaluate, score, write) and its wall time extrapolated to 20 epochs per level (speed/imp.py);
and the goals of issue 21 as ratios from this run; it writes JSON plus a markdown summary to --out (default benchmarks/results/).

    python benchmarks/bench.py [--quick | --smoke] [--models lenet300,conv6] [--ks 1,4,8,16]
                               [--batches 60,128] [--threads N] [--rounds N] [--device cpu|cuda] [--out DIR]
                               [--no-scoring]

--rounds N also times (b), (e), (c) without mask and (d2) for K >= 8 on LeNet-300-100 in N interleaved
rounds, and takes the ratios between them per round (steadier on a shared machine). --device cuda runs
the same rows on a GPU, without the CPU's process layouts (c2), (d2), (e) and without rounds.
--smoke runs every row for a step or two, to check that the script works; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the ``speed`` package beside this file

from speed.processes import worker
from speed.report import markdown, write
from speed.run import Settings, run_benchmark

from ticketlab.models import MODELS
from ticketlab.registry import UnknownNameError

RESULTS = Path(__file__).resolve().parent / "results"


def integers(text: str) -> tuple[int, ...]:
    """``"1,4,8"`` -> ``(1, 4, 8)``; each >= 1."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers, e.g. 1,4,8,16; got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"integers >= 1, got {text!r}")
    return values


def model_names(text: str) -> tuple[str, ...]:
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    for name in names:
        try:
            MODELS.get(name)
        except UnknownNameError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fewer steps, repeats and K (a few minutes)")
    mode.add_argument("--smoke", action="store_true", help="a step or two per row: checks the script runs (seconds)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON and markdown (default %(default)s)")
    p.add_argument("--models", type=model_names, default=("lenet300", "conv6"), help="comma-separated: lenet300, conv6")
    p.add_argument("--ks", type=integers, default=(1, 4, 8, 16), help="comma-separated K of the K-model trainer")
    p.add_argument("--batches", type=integers, default=(60, 128), help="comma-separated batch sizes")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's or $TICKETLAB_THREADS)")
    p.add_argument("--rounds", type=int, default=0, help="interleaved rounds of the LeNet-300-100 comparison (0: off)")
    p.add_argument("--no-scoring", action="store_true", help="leave out the scoring rows (f)")
    p.add_argument("--imp-seeds", type=int, default=3, help="runs of the IMP job (h) (default 3, the issue's job)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: where the trainers and the limit run")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # one of two processes run together (speed/processes.py)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    if args.rounds < 0:
        parser().error(f"--rounds takes an integer >= 0, got {args.rounds}")
    settings = Settings.named("quick" if args.quick else "smoke" if args.smoke else "full")
    if args.no_scoring:
        settings = dataclasses.replace(settings, scoring_models=())
    if args.imp_seeds < 1:
        parser().error(f"--imp-seeds takes an integer >= 1, got {args.imp_seeds}")
    settings = dataclasses.replace(settings, imp_seeds=args.imp_seeds)
    report = run_benchmark(
        settings, args.models, args.ks, args.batches, threads=args.threads, rounds=args.rounds, device=args.device
    )
    json_path, md_path = write(report, args.out)
    print(markdown(report))
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
