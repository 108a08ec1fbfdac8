"""The run's report as markdown, and the two files written (JSON + markdown)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from speed.compare import flops_per_model_epoch, shown

ROW_NAMES = {
    "plain": "(b) plain loop",
    "two_processes": "(e) 2 processes x 1 thread",
    "ours_single_dense": "(c) ours, one model, no mask",
    "ours_single": "(c) ours, one model, masked",
    "ours_single_2proc": "(c2) ours, 2 processes x 1 thread, one masked model each",
    "ours_many": "(d) ours, K models stacked",
    "ours_many_2proc": "(d2) ours, 2 processes x 1 thread x K/2 stacked",
}


def markdown(report: dict[str, Any]) -> str:
    lines = [
        *header(report),
        "",
        "| model | batch | trainer | K | s / model-epoch | model-epochs / s | GFLOP/s | of limit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["training"]:
        lines.append(
            f"| {r['model']} | {r['batch']} | {ROW_NAMES[r['kind']]} | {r['K']} | {r['s_per_model_epoch']:.3f} | "
            f"{r['model_epochs_per_s']:.2f} | {r['gflops']:.1f} | {r['fraction_of_limit']:.0%} |"
        )
    if report["scoring"]:  # none under --no-scoring: no empty table
        lines += ["", "| scoring | model | rounds | seconds |", "|---|---|---|---|"]
        for r in report["scoring"]:
            lines.append(f"| {r['criterion']} | {r['model']} | {r['rounds']} | {r['seconds']:.2f} |")
    for block in report.get("interleaved", []):
        lines += interleaved_table(block)
    lines += layout_tables(report)
    if report.get("comparisons"):
        source = "median of the per-round ratios (range)" if report.get("interleaved") else "from the table"
        lines += ["", f"| LeNet-300-100 | batch | measured: {source} | goal | met |", "|---|---|---|---|---|"]
        for c in report["comparisons"]:
            spread = f" ({c['range'][0]:.2f}-{c['range'][1]:.2f})" if "range" in c else ""
            lines.append(
                f"| {c['label']} | {c['batch']} | {shown(c['value'], c['goal'])}{spread} | {c['goal']} |"
                f" {'yes' if c['met'] else 'NO'} |"
            )
    if report.get("goals"):
        lines += ["", "| issue 21 goal | measured in this run | goal | met |", "|---|---|---|---|"]
        for g in report["goals"]:
            lines.append(f"| {g['label']} | {g['text']} | {g['goal']} | {'yes' if g['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def layout_tables(report: dict[str, Any]) -> list[str]:
    """(g) the candidate layouts and the choice per job size; (h) the IMP job's phases and extrapolation."""
    lines: list[str] = []
    layouts = report.get("layouts")
    if layouts:
        lines += [
            "",
            f"(g) Layouts (processes x threads x stacked K), LeNet-300-100 batch {layouts['batch']}, "
            f"{layouts['cores']} cores, each timed for about {layouts['budget_s']} s with every worker busy:",
            "",
            "| layout | ms / step | of limit |",
            "|---|---|---|",
        ]
        for r in layouts["rows"]:
            lines.append(f"| {r['layout']} | {r['seconds_per_step'] * 1e3:.2f} | {r['fraction_of_limit']:.0%} |")
        lines += ["", "| runs | chosen | candidates | of limit |", "|---|---|---|---|"]
        for c in layouts["choices"]:
            lines.append(
                f"| {c['runs']} | {c['layout']} | {', '.join(c['candidates'])} | {c['fraction_of_limit']:.0%} |"
            )
    imp = report.get("imp")
    if imp:
        per = imp["per_level_s"]
        lines += [
            "",
            f"(h) IMP job ({imp['job']}: {imp['runs']} runs, {imp['levels']} levels in all) at "
            f"{imp['steps_per_level']} steps per level, layout {imp['layout']}: {imp['wall_s']:.1f} s "
            f"(start-up {imp['startup_s']:.1f} s; runs cut at a level boundary: "
            f"{imp.get('pieces', imp['runs']) - imp['runs']}, their restarts {imp.get('restarts_s', 0.0):.1f} s). "
            "Per level, seconds per model:",
            "",
            "| train | evaluate | score | write |",
            "|---|---|---|---|",
            f"| {per['train']:.3f} | {per['evaluate']:.3f} | {per['score']:.3f} | {per['write']:.3f} |",
            "",
            f"Extrapolated to {imp['target_steps_per_level']} steps (20 epochs) per level: "
            f"{imp['extrapolated_wall_s'] / 60:.1f} min, {imp['extrapolated_fraction_of_limit']:.0%} of the limit; "
            f"overhead {imp['overhead_default_cadence']:.1%} at one evaluation per epoch, "
            f"{imp['overhead_job_cadence']:.1%} at the job's {imp['eval_every']} steps.",
        ]
        chosen = report.get("imp_layout")
        if chosen:
            lines += ["", *job_layout_lines(chosen)]
        dense = report.get("imp_dense")
        if dense:
            lines += ["", *sparse_lines(imp, dense)]
    return lines


def job_layout_lines(chosen: dict[str, Any]) -> list[str]:
    """The layout the IMP job's sweep chose with sparse training auto, and the rows behind it."""
    points = ", ".join(f"{d} ({share:.0%} of the levels)" for d, share in chosen["shares"].items())
    rows = "; ".join(
        f"{r['layout']} {r['seconds_per_step'] * 1e3:.2f} ({r['job_seconds_per_step'] * 1e3:.2f})"
        for r in chosen["rows"]
    )
    return [
        f"The job's layout, as its sweep chose it ({chosen['source']}): {chosen['layout']} for {chosen['runs']} runs, "
        f"each candidate timed with the job's Adam recipe at densities {points}. Ms per step, weighted over "
        f"those points (in brackets: per step of the whole job, its batches shared among the workers): {rows}."
    ]


def sparse_lines(imp: dict[str, Any], dense: dict[str, Any]) -> list[str]:
    """(h) with the sparse training path (``auto``, the default) and without it (``off``): issue 21's item 5."""
    rows = [("auto (default)", imp), ("off", dense)]
    lines = [
        "The same job with and without sparse training (`TICKETLAB_SPARSE_TRAINING`; shares of the limit count "
        "the dense model's FLOPs):",
        "",
        f"| sparse training | levels with a layer trained sparse | wall at {imp['steps_per_level']} steps | "
        "train per level and model | at 20 epochs per level | of the limit |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r.get('sparse_levels', 0)} of {r['levels']} | {r['wall_s']:.1f} s | "
            f"{r['per_level_s']['train']:.3f} s | {r['extrapolated_wall_s'] / 60:.1f} min | "
            f"{r['extrapolated_fraction_of_limit']:.0%} |"
        )
    lines += [
        "",
        f"Without / with: training {dense['per_level_s']['train'] / imp['per_level_s']['train']:.2f}x, "
        f"the job at 20 epochs per level {dense['extrapolated_wall_s'] / imp['extrapolated_wall_s']:.2f}x.",
    ]
    return lines


def header(report: dict[str, Any]) -> list[str]:
    n = report["limit_n"]
    load = [tuple(round(x, 1) for x in report[key]) for key in ("load_average_before", "load_average_after")]
    fastest = ", ".join(f"{blas} {flops / 1e9:.1f}" for blas, flops in report["matmul_flops_by_blas"].items())
    measurements = "; ".join(
        ", ".join(f"{blas} {flops / 1e9:.0f}" for blas, flops in m.items()) for m in report["matmul_flops_measurements"]
    )
    when = "before and after the trainers" + (
        " and at the start of each interleaved round" if report.get("interleaved") else ""
    )
    if report["device"].startswith("cuda"):
        bound = (
            "cuBLAS float32, the GEMM that MLP layers use; convolutions run on cuDNN, which may use TF32, "
            "PyTorch's default for convolutions, so conv rows can exceed 100%)."
        )
    else:
        bound = (
            "the sgemm that MLP layers use; convolutions run on oneDNN kernels, which this figure does not bound, "
            "so conv rows can exceed 100%). The plain loops (b), (e) use PyTorch's BLAS; our trainers' MLP layers "
            f"use {report['gemm_backend']}."
        )
    return [
        f"# ticketlab speed benchmark — {report['date']} on {report['host']}",
        "",
        (
            f"{report['processor']}, torch {report['torch']}, device {report['device']}, {report['threads']} threads, "
            f"{report['cpu_count']} CPUs, data: {report['data']}, {report['mode']} mode; load average before {load[0]}, "
            f"after {load[1]}."
        ),
        (
            f"FLOPs: {report['flop_formula']}. Limit (a): dense {n}x{n} matmul {report['matmul_flops'] / 1e9:.1f} GFLOP/s, "
            f"the fastest of {fastest}, each the best of its measurements {when} ({measurements}) ({bound}"
        ),
    ]


def interleaved_table(block: dict[str, Any]) -> list[str]:
    title = (
        f"Interleaved, LeNet-300-100 batch {block['batch']}: {block['rounds']} rounds of {block['steps']} steps "
        "per row, one row after another in each round (s / model-epoch):"
    )
    lines = [
        "",
        title,
        "",
        "| row | " + " | ".join(f"round {i + 1}" for i in range(block["rounds"])) + " | median |",
        "|---|" + "---|" * (block["rounds"] + 1),
    ]
    for key, values in block["s_per_model_epoch"].items():
        lines.append(f"| {key} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {statistics.median(values):.3f} |")
    if block.get("limit_per_round"):
        limits = block["limit_per_round"]
        stacked = [v for key, v in block["s_per_model_epoch"].items() if key.startswith("ours_many")]
        lines.append(
            "| matmul limit at the round's start, GFLOP/s | "
            + " | ".join(f"{v / 1e9:.0f}" for v in limits)
            + f" | {statistics.median(limits) / 1e9:.0f} |"
        )
        if stacked:
            shares = [flops_per_model_epoch(block) / min(v[i] for v in stacked) / limits[i] for i in range(len(limits))]
            lines.append(
                "| fastest stacked row, share of that round's limit | "
                + " | ".join(f"{v:.0%}" for v in shares)
                + f" | {statistics.median(shares):.0%} |"
            )
    return lines


def write(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``<out>/<date>-<host>.json`` and ``.md``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{report['date'][:10]}-{report['host']}"
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2))
    md_path.write_text(markdown(report))
    return json_path, md_path
