"""The speed benchmark's arithmetic (its timings are run on demand, never in tests)."""

from __future__ import annotations

import pytest

from ticketlab.hardware import blas as gemm
from ticketlab.cli.bench import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark()


def test_limit_is_measured_with_each_blas(bench):
    assert bench.matmul_flops(1, n=128) > 0
    if gemm.active():
        assert bench.matmul_flops(1, n=128, blas="openblas") > 0


def _row(kind, k, seconds_per_model_epoch, fraction):
    return {"model": "lenet300", "batch": 60, "kind": kind, "K": k, "s_per_model_epoch": seconds_per_model_epoch,
            "fraction_of_limit": fraction}


def test_goals_compare_the_best_stacked_layout_with_the_baselines(bench):
    report = {"training": [
        _row("plain", 1, 0.8, 0.3), _row("two_processes", 2, 0.5, 0.4), _row("ours_single_dense", 1, 1.0, 0.2),
        _row("ours_many", 8, 0.45, 0.5), _row("ours_many_2proc", 8, 0.4, 0.75), _row("ours_many", 4, 0.1, 0.9),
    ]}
    goals = {g["goal"].split(" >= ")[-1] if " >= " in g["goal"] else g["goal"]: g for g in bench.goals(report)}
    assert goals["2x plain loop"]["value"] == pytest.approx(2.0) and goals["2x plain loop"]["met"]  # K=4 not counted
    assert goals["1.3x two 1-thread processes"]["value"] == pytest.approx(1.25)
    assert not goals["1.3x two 1-thread processes"]["met"]
    assert goals["70% of matmul limit"]["met"]
    single = goals["single-model trainer (no mask, as the plain loop) no slower than plain loop"]
    assert single["value"] == pytest.approx(0.8) and not single["met"]


def test_the_limit_is_the_best_measurement_of_the_fastest_blas(bench):
    report = {"training": [{"gflops": 100.0, "fraction_of_limit": None}]}
    bench.settle_limit(report, [{"torch (MKL)": 200e9, "openblas": 300e9}, {"torch (MKL)": 210e9, "openblas": 400e9}])
    assert report["matmul_flops_by_blas"] == {"torch (MKL)": 210e9, "openblas": 400e9}
    assert report["matmul_flops"] == 400e9
    assert report["training"][0]["fraction_of_limit"] == pytest.approx(0.25)


def test_interleaved_goals_use_the_median_of_per_round_ratios(bench):
    times = {"plain K=1": [0.8, 1.2, 0.7], "two_processes K=2": [0.5, 0.6, 0.45], "ours_single_dense K=1": [0.8, 1.0, 0.8],
             "ours_many_2proc K=8": [0.4, 0.5, 0.4], "ours_many_2proc K=16": [0.45, 0.5, 0.5]}
    report = {"matmul_flops": 100e9, "interleaved": [
        {"batch": 60, "rounds": 3, "steps": 600, "steps_per_epoch": 1000, "macs": 1000, "s_per_model_epoch": times}]}
    goals = {g["goal"]: g for g in bench.goals(report)}
    plain = goals["ours_many_2proc K=8 >= 2x plain loop"]  # K=8 has the lower median time
    assert plain["value"] == pytest.approx(2.0) and plain["range"] == pytest.approx([1.75, 2.4]) and plain["met"]
    two = goals["ours_many_2proc K=8 >= 1.3x two 1-thread processes"]
    assert two["value"] == pytest.approx(1.2) and not two["met"]  # ratios 1.25, 1.2, 1.125
    limit = goals["ours_many_2proc K=8 >= 70% of matmul limit"]  # 6 * 1000 * 60 * 1000 flops per model-epoch
    assert limit["value"] == pytest.approx(3.6e8 / 0.4 / 100e9)
    single = goals["single-model trainer (no mask, as the plain loop) no slower than plain loop"]
    assert single["value"] == pytest.approx(1.0) and single["met"]  # ratios 1.0, 1.2, 0.875
    assert "range" in single and "median of the per-round ratios" in bench.markdown({**_empty_report(), **report, "goals": bench.goals(report)})


def _empty_report():
    return {"date": "2026-11-22T00:00:00", "host": "h", "torch": "t", "threads": 2, "cpu_count": 2, "data": "d",
            "quick": True, "load_average_before": (0, 0, 0), "load_average_after": (0, 0, 0), "flop_formula": "f",
            "matmul_flops": 100e9, "training": [], "scoring": []}


def test_rounds_report_each_rounds_limit_and_the_share_of_it(bench):
    times = {"plain K=1": [0.8, 1.2], "ours_many_2proc K=8": [0.4, 0.5], "ours_many_2proc K=16": [0.45, 0.3]}
    block = {"batch": 60, "rounds": 2, "steps": 600, "steps_per_epoch": 1000, "macs": 100_000,
             "s_per_model_epoch": times, "limit_per_round": [100e9, 200e9]}
    text = bench.markdown({**_empty_report(), "interleaved": [block], "goals": []})
    # 3.6e10 flops per model-epoch; round 1: fastest stacked 0.4 s -> 90 GFLOP/s of 100; round 2: 0.3 s -> 120 of 200
    assert "| matmul limit at the round's start, GFLOP/s | 100 | 200 | 150 |" in text
    assert "| fastest stacked row, share of that round's limit | 90% | 60% | 75% |" in text
