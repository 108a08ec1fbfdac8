"""``ticketlab bench``: the speed benchmark of ``benchmarks/bench.py`` (not part of the test suite)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Annotated, Optional

import typer


def find_benchmark() -> Path:
    """``benchmarks/bench.py`` of the source checkout (editable install) or of the working directory."""
    for base in (Path(__file__).resolve().parents[3], Path.cwd()):
        candidate = base / "benchmarks" / "bench.py"
        if candidate.exists():
            return candidate
    raise ValueError("bench: benchmarks/bench.py not found; run from a ticketlab source checkout")


def load_benchmark() -> ModuleType:
    path = find_benchmark()
    spec = importlib.util.spec_from_file_location("ticketlab_benchmarks_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ints(text: str, field: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{field} takes comma-separated integers, e.g. 1,4,8,16; got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{field} takes integers >= 1, got {text!r}")
    return values


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        quick: Annotated[bool, typer.Option(help="Fewer steps, repeats and K (a few minutes).")] = False,
        out: Annotated[Optional[Path], typer.Option(help="Folder for the JSON and markdown (default benchmarks/results).")] = None,
        models: Annotated[str, typer.Option(help="Comma-separated models: lenet300, conv6.")] = "lenet300,conv6",
        ks: Annotated[str, typer.Option(help="Comma-separated K of the K-model trainer.")] = "1,4,8,16",
        batches: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "60,128",
        threads: Annotated[Optional[int], typer.Option(help="CPU threads (default: torch's or $TICKETLAB_THREADS).")] = None,
        rounds: Annotated[int, typer.Option(min=0, help="Also time the goals' LeNet-300-100 rows interleaved, in this "
                                            "many rounds, and judge the goals on the per-round ratios (0: off).")] = 0,
        device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N: where the trainers and the limit run.")] = "cpu",
    ) -> None:
        """Measure training speed against the processor's matmul limit; writes JSON and markdown."""
        from ticketlab.cli.common import clean_errors, console
        from ticketlab.models import MODELS

        with clean_errors():
            model_names = tuple(m.strip() for m in models.split(",") if m.strip())
            for name in model_names:
                MODELS.get(name)
            k_values, batch_sizes = _ints(ks, "ks"), _ints(batches, "batches")
            module = load_benchmark()
            report = module.run_benchmark(quick, model_names, k_values, batch_sizes, threads=threads, rounds=rounds,
                                          log=console.print, device=device)
            json_path, md_path = module.write(report, out)
            console.print(module.markdown(report))
            console.print(f"wrote {json_path} and {md_path}")
