"""The speed benchmark (benchmarks/bench.py and its pieces in benchmarks/speed/): the arithmetic of its
rows and comparisons, its trainers on tiny inputs, and one real run of the script. Timings are never
asserted; the benchmark is run on demand, not by the tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.hardware import blas as gemm

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:  # the script's modules are not part of the package
    sys.path.insert(0, str(BENCHMARKS))

import bench  # noqa: E402
from speed import compare, limits, report, run, scoring, trainers, workload  # noqa: E402


# -- workload, limit ---------------------------------------------------------------------------------
def test_macs_count_linear_and_conv_layers():
    assert workload.macs_per_example(workload.build("lenet300")) == 784 * 300 + 300 * 100 + 100 * 10
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.Flatten(), nn.Linear(4 * 28 * 28, 10)
    )
    # output elements x (in-channels / groups) x kernel area, per conv
    assert workload.macs_per_example(net) == 4 * 28 * 28 * 1 * 9 + 4 * 28 * 28 * 2 * 9 + 4 * 28 * 28 * 10


def test_limit_is_measured_with_each_blas():
    assert limits.matmul_flops(1, n=128) > 0
    measured = limits.limit_meter(1, 128, torch.device("cpu"), log=lambda line: None)("before")
    assert set(measured) == ({"torch (MKL)", "openblas"} if gemm.active() else {"torch (MKL)"})
    assert all(flops > 0 for flops in measured.values())


def test_the_limit_is_the_best_measurement_of_the_fastest_blas():
    report_ = {"training": [{"gflops": 100.0, "fraction_of_limit": None}]}
    limits.settle_limit(report_, [{"torch (MKL)": 200e9, "openblas": 300e9}, {"torch (MKL)": 210e9, "openblas": 400e9}])
    assert report_["matmul_flops_by_blas"] == {"torch (MKL)": 210e9, "openblas": 400e9}
    assert report_["matmul_flops"] == 400e9
    assert report_["training"][0]["fraction_of_limit"] == pytest.approx(0.25)


# -- trainers ----------------------------------------------------------------------------------------
def test_plain_loop_is_plain_sgd():
    torch.manual_seed(0)
    x, y = torch.randn(12, 5), torch.randint(3, (12,))
    model = nn.Linear(5, 3)
    w, b = model.weight.detach().clone().requires_grad_(), model.bias.detach().clone().requires_grad_()
    trainers.plain_loop(model, x, y, batch=12, steps=1, lr=0.5)  # one batch = the whole set, in any order
    F.cross_entropy(x @ w.T + b, y).backward()
    assert torch.allclose(model.weight, w - 0.5 * w.grad, atol=1e-6)
    assert torch.allclose(model.bias, b - 0.5 * b.grad, atol=1e-6)


def test_the_runners_train_with_ticketlab_on_tiny_data(synthetic):
    data = workload.without_eval(synthetic)
    assert len(data.x_val) == len(data.x_test) == 0 and len(data.x_train) == len(synthetic.x_train)
    for runner in (
        trainers.plain_runner("lenet300", data, 8, 2, 1),
        trainers.single_runner("lenet300", data, 8, 2, 1, masked=True),
        trainers.single_runner("lenet300", data, 8, 2, 1, masked=False),
        trainers.many_runner("lenet300", data, 8, 2, 2, 1),
    ):
        runner()


def test_random_masks_keep_the_density():
    masks = workload.random_masks(workload.build("lenet300"), 2, 0.2)
    for mask in masks:
        assert sum(int(m.sum()) for m in mask.values()) == round(0.2 * 266200)  # biases are not prunable
    assert not all(torch.equal(masks[0][n], masks[1][n]) for n in masks[0])


def test_scoring_rows():
    rows = scoring.scoring_times(1, 2, ("lenet300",))
    assert [(r["criterion"], r["rounds"], r["batches"]) for r in rows] == [
        ("snip", 1, 10),
        ("grasp", 1, 10),
        ("synflow", 2, 0),
    ]
    assert all(r["seconds"] > 0 and r["model"] == "lenet300" for r in rows)


# -- the table and the rounds, with every timing replaced by a fixed figure ----------------------------
@pytest.fixture
def fixed_times(monkeypatch):
    """Every row in one process takes 2 s, every pair of processes 3 s; the runners do nothing."""
    calls = []
    monkeypatch.setattr(run, "median_time", lambda fn, repeats: 2.0)
    monkeypatch.setattr(run, "two_processes", lambda *args, **kwargs: calls.append(args) or 3.0)
    for name in ("plain_runner", "single_runner", "many_runner"):
        monkeypatch.setattr(run, name, lambda *args, **kwargs: lambda: None)
    return calls


def _tiny(n: int):
    x = torch.zeros(n, 1, 28, 28)
    return workload.Dataset(
        name="t",
        x_train=x,
        y_train=torch.zeros(n, dtype=torch.long),
        x_val=x[:0],
        y_val=torch.zeros(0, dtype=torch.long),
        x_test=x[:0],
        y_test=torch.zeros(0, dtype=torch.long),
        num_classes=10,
        augment=None,
    )


def test_table_rows_per_model_epoch_and_flops(fixed_times):
    settings = run.Settings.named("smoke")  # 2 timed steps
    rows = run.table_rows(
        "lenet300", _tiny(600), settings, (1, 8), (60,), torch.device("cpu"), 1e9, log=lambda line: None
    )
    assert [(r["kind"], r["K"]) for r in rows] == [
        ("plain", 1),
        ("two_processes", 2),
        ("ours_single_dense", 1),
        ("ours_single", 1),
        ("ours_single_2proc", 2),
        ("ours_many", 1),
        ("ours_many", 8),
        ("ours_many_2proc", 8),
    ]
    by = {(r["kind"], r["K"]): r for r in rows}
    # 10 steps per epoch; seconds / (2 steps x models trained) x 10
    assert by["plain", 1]["s_per_model_epoch"] == pytest.approx(2.0 / 2 * 10)
    assert by["two_processes", 2]["s_per_model_epoch"] == pytest.approx(3.0 / 4 * 10)
    assert by["ours_many", 8]["s_per_model_epoch"] == pytest.approx(2.0 / 16 * 10)
    assert by["ours_many_2proc", 8]["s_per_model_epoch"] == pytest.approx(3.0 / 16 * 10)
    flops = 6 * 266200 * 60 * 2 * 8 / 3.0
    assert by["ours_many_2proc", 8]["gflops"] == pytest.approx(flops / 1e9)
    assert by["ours_many_2proc", 8]["fraction_of_limit"] == pytest.approx(flops / 1e9)
    assert fixed_times[-1] == ("lenet300", 60, 2, 1, 1, "many", 4)  # two workers with K/2 = 4 models each


def test_the_process_layouts_run_on_cpu_only(fixed_times):
    settings = run.Settings.named("quick")  # conv nets: K <= 4
    rows = run.table_rows(
        "lenet300", _tiny(600), settings, (8,), (60, 120), torch.device("cuda"), 1e9, lambda line: None
    )
    assert {r["kind"] for r in rows} == {"plain", "ours_single_dense", "ours_single", "ours_many"} and not fixed_times
    assert {r["batch"] for r in rows} == {60, 120}
    rows = run.table_rows("conv6", _tiny(600), settings, (2, 8), (60, 120), torch.device("cpu"), 1e9, lambda line: None)
    assert [(r["kind"], r["K"]) for r in rows] == [
        ("plain", 1),
        ("two_processes", 2),
        ("ours_single_dense", 1),
        ("ours_single", 1),
        ("ours_many", 2),
    ]
    assert {r["batch"] for r in rows} == {60}  # conv nets at the first batch size only


def test_interleaved_rounds(fixed_times, monkeypatch):
    measured, order = [], []
    for name in ("plain_runner", "single_runner"):
        monkeypatch.setattr(run, name, lambda *args, name=name, **kwargs: lambda: order.append(name))
    monkeypatch.setattr(run, "median_time", lambda fn, repeats: fn() or 2.0)
    monkeypatch.setattr(
        run, "two_processes", lambda *args, **kwargs: order.append(f"{args[-2] if len(args) > 5 else 'plain'}x2") or 3.0
    )
    block = run.interleaved(
        "lenet300",
        _tiny(600),
        60,
        2,
        1,
        3,
        (8, 16),
        lambda line: None,
        limit=lambda: measured.append(1) or 100e9 * len(measured),
    )
    assert block["rounds"] == 3 and block["steps_per_epoch"] == 10 and block["macs"] == 266200
    assert block["limit_per_round"] == [100e9, 200e9, 300e9]
    times = block["s_per_model_epoch"]
    assert list(times) == [
        "plain K=1",
        "two_processes K=2",
        "ours_single_dense K=1",
        "ours_many_2proc K=8",
        "ours_many_2proc K=16",
    ]
    assert times["plain K=1"] == pytest.approx([10.0] * 3)
    assert times["two_processes K=2"] == pytest.approx([7.5] * 3)
    assert times["ours_many_2proc K=16"] == pytest.approx([3.0 / 32 * 10] * 3)
    # the compared rows back to back, in pairs, each pair's order alternating from round to round
    one_round = ["plain_runner", "single_runner", "plainx2", "manyx2", "manyx2"]
    reversed_round = ["single_runner", "plain_runner", "manyx2", "manyx2", "plainx2"]
    assert order == one_round + reversed_round + one_round


# -- comparisons and goals ---------------------------------------------------------------------------
FLOPS_PER_MODEL_EPOCH = 1e11


def _row(kind, k, seconds_per_model_epoch, model="lenet300"):
    return {
        "model": model,
        "batch": 60,
        "kind": kind,
        "K": k,
        "s_per_model_epoch": seconds_per_model_epoch,
        "gflops": FLOPS_PER_MODEL_EPOCH / seconds_per_model_epoch / 1e9,
    }


def test_comparisons_from_the_table_take_the_fastest_stacked_row_with_k_at_least_8():
    rows = [
        _row("plain", 1, 0.8),
        _row("two_processes", 2, 0.5),
        _row("ours_single_dense", 1, 1.0),
        _row("ours_many", 8, 0.45),
        _row("ours_many_2proc", 8, 0.4),
        _row("ours_many", 4, 0.1),
        _row("plain", 1, 5.0, model="conv6"),
    ]
    found = {c["comparison"]: c for c in compare.comparisons({"training": rows, "matmul_flops": 400e9})}
    assert found["vs_plain"]["value"] == pytest.approx(2.0) and found["vs_plain"]["met"]  # K=4 not counted
    assert found["vs_plain"]["label"].startswith("ours_many_2proc K=8")
    assert found["vs_two_processes"]["value"] == pytest.approx(1.25) and not found["vs_two_processes"]["met"]
    assert found["of_limit"]["value"] == pytest.approx(1e11 / 0.4 / 400e9) and not found["of_limit"]["met"]
    assert found["single_vs_plain"]["value"] == pytest.approx(0.8) and not found["single_vs_plain"]["met"]
    assert all("range" not in c for c in found.values())


def test_comparisons_leave_out_rows_not_run():
    cuda = [_row("plain", 1, 0.8), _row("ours_single_dense", 1, 0.4), _row("ours_many", 8, 0.2)]
    assert [c["comparison"] for c in compare.comparisons({"training": cuda, "matmul_flops": 1e12})] == [
        "vs_plain",
        "of_limit",
        "single_vs_plain",
    ]
    unstacked = [_row("plain", 1, 0.8), _row("ours_single_dense", 1, 0.4), _row("ours_many", 4, 0.2)]
    assert [c["comparison"] for c in compare.comparisons({"training": unstacked, "matmul_flops": 1e12})] == [
        "single_vs_plain"
    ]


def test_comparisons_from_rounds_are_medians_of_per_round_ratios():
    times = {
        "plain K=1": [0.8, 1.2, 0.7],
        "two_processes K=2": [0.5, 0.6, 0.45],
        "ours_single_dense K=1": [0.8, 1.0, 0.8],
        "ours_many_2proc K=8": [0.4, 0.5, 0.4],
        "ours_many_2proc K=16": [0.45, 0.5, 0.5],
    }
    report_ = {
        "matmul_flops": 100e9,
        "interleaved": [
            {"batch": 60, "rounds": 3, "steps": 600, "steps_per_epoch": 1000, "macs": 1000, "s_per_model_epoch": times}
        ],
    }
    found = {c["comparison"]: c for c in compare.comparisons(report_)}
    plain = found["vs_plain"]  # K=8 has the lower median time
    assert plain["label"].startswith("ours_many_2proc K=8")
    assert plain["value"] == pytest.approx(2.0) and plain["range"] == pytest.approx([1.75, 2.4]) and plain["met"]
    two = found["vs_two_processes"]
    assert two["value"] == pytest.approx(1.2) and not two["met"]  # ratios 1.25, 1.2, 1.125
    assert found["of_limit"]["value"] == pytest.approx(3.6e8 / 0.4 / 100e9)  # 6 x 1000 x 60 x 1000 per model-epoch
    single = found["single_vs_plain"]
    assert (
        single["value"] == pytest.approx(1.0) and not single["met"] and single["rounds"] == 3
    )  # ratios 1.0, 1.2, 0.875; goal 1.5x
    text = report.markdown({**_empty_report(), **report_, "comparisons": compare.comparisons(report_)})
    assert "median of the per-round ratios" in text and "| 2.00 (1.75-2.40) | 2.0 | yes |" in text


def _empty_report():
    return {
        "date": "2026-11-22T00:00:00",
        "host": "h",
        "processor": "p",
        "torch": "t",
        "threads": 2,
        "cpu_count": 2,
        "data": "d",
        "mode": "quick",
        "load_average_before": (0, 0, 0),
        "load_average_after": (0, 0, 0),
        "flop_formula": "f",
        "device": "cpu",
        "limit_n": 2048,
        "gemm_backend": "torch",
        "matmul_flops": 100e9,
        "matmul_flops_by_blas": {"torch (MKL)": 100e9},
        "matmul_flops_measurements": [{"torch (MKL)": 100e9}],
        "training": [],
        "scoring": [],
    }


def test_rounds_report_each_rounds_limit_and_the_share_of_it():
    times = {"plain K=1": [0.8, 1.2], "ours_many_2proc K=8": [0.4, 0.5], "ours_many_2proc K=16": [0.45, 0.3]}
    block = {
        "batch": 60,
        "rounds": 2,
        "steps": 600,
        "steps_per_epoch": 1000,
        "macs": 100_000,
        "s_per_model_epoch": times,
        "limit_per_round": [100e9, 200e9],
    }
    text = report.markdown({**_empty_report(), "interleaved": [block]})
    # 3.6e10 flops per model-epoch; round 1: fastest stacked 0.4 s -> 90 GFLOP/s of 100; round 2: 0.3 s -> 120 of 200
    assert "| matmul limit at the round's start, GFLOP/s | 100 | 200 | 150 |" in text
    assert "| fastest stacked row, share of that round's limit | 90% | 60% | 75% |" in text


def test_the_header_names_the_limit_of_the_device():
    cpu = report.markdown({**_empty_report(), "gemm_backend": "openblas (AVX-512)"})
    assert "dense 2048x2048 matmul 100.0 GFLOP/s" in cpu and "MLP layers use openblas (AVX-512)." in cpu
    cuda = report.markdown({**_empty_report(), "device": "cuda (H200)", "limit_n": 8192})
    assert "device cuda (H200)" in cuda and "8192x8192" in cuda and "cuBLAS float32" in cuda and "oneDNN" not in cuda


def test_the_scoring_table_is_left_out_when_nothing_was_scored():
    assert "| scoring |" not in report.markdown({**_empty_report(), "scoring": []})
    scored = [{"criterion": "snip", "model": "lenet300", "rounds": 1, "seconds": 0.25}]
    assert "| snip | lenet300 | 1 | 0.25 |" in report.markdown({**_empty_report(), "scoring": scored})


# -- the command -------------------------------------------------------------------------------------
def test_the_command_line_takes_the_flags():
    args = bench.parser().parse_args(
        [
            "--quick",
            "--out",
            "o",
            "--models",
            "lenet300,conv6",
            "--ks",
            "8,16",
            "--batches",
            "60",
            "--threads",
            "1",
            "--rounds",
            "3",
            "--device",
            "cuda",
        ]
    )
    assert (args.quick, args.out, args.models, args.ks, args.batches, args.threads, args.rounds, args.device) == (
        True,
        Path("o"),
        ("lenet300", "conv6"),
        (8, 16),
        (60,),
        1,
        3,
        "cuda",
    )
    assert bench.integers("1, 4,8") == (1, 4, 8)
    assert args.imp_seeds == 3 and bench.parser().parse_args(["--imp-seeds", "8"]).imp_seeds == 8
    for bad in (["--ks", "0"], ["--ks", "a"], ["--models", "lenet3000"], ["--quick", "--smoke"]):
        with pytest.raises(SystemExit):
            bench.parser().parse_args(bad)
    with pytest.raises(SystemExit):
        bench.main(["--imp-seeds", "0"])


@pytest.mark.slow  # starts about ten Python processes that import torch (the two-process rows)
def test_the_script_runs_and_writes_its_report(tmp_path):
    command = [
        sys.executable,
        str(BENCHMARKS / "bench.py"),
        "--smoke",
        "--models",
        "lenet300",
        "--ks",
        "8",
        "--batches",
        "8",
        "--rounds",
        "1",
        "--threads",
        "1",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr
    (json_path,), (md_path,) = tmp_path.glob("*.json"), tmp_path.glob("*.md")
    result = json.loads(json_path.read_text())
    assert result["mode"] == "smoke" and result["threads"] == 1 and result["limit_n"] == 256
    assert [(r["kind"], r["K"]) for r in result["training"]] == [
        ("plain", 1),
        ("two_processes", 2),
        ("ours_single_dense", 1),
        ("ours_single", 1),
        ("ours_single_2proc", 2),
        ("ours_many", 8),
        ("ours_many_2proc", 8),
    ]
    spe = result["interleaved"][0]["steps_per_epoch"]
    models = {"plain": 1, "two_processes": 2, "ours_single_dense": 1, "ours_single": 1, "ours_single_2proc": 2}
    for r in result["training"]:
        trained = models.get(r["kind"], r["K"])
        assert r["s_per_model_epoch"] == pytest.approx(r["seconds"] / (r["steps"] * trained) * spe)
        assert r["fraction_of_limit"] == pytest.approx(r["gflops"] * 1e9 / result["matmul_flops"])
    assert len(result["matmul_flops_measurements"]) == 3  # before, the one round, after
    assert [r["criterion"] for r in result["scoring"]] == ["snip", "grasp", "synflow"]
    assert [c["comparison"] for c in result["comparisons"]] == [
        "vs_plain",
        "vs_two_processes",
        "of_limit",
        "single_vs_plain",
    ]
    text = md_path.read_text()
    assert text == report.markdown(result) and text in done.stdout
    assert text.count("| lenet300 | 8 |") == 7 and "| ours_many_2proc K=8 | " in text
    # (g) the layout it would choose for 8, 3 and 1 runs, with the rows behind the choice
    layouts = result["layouts"]
    assert [c["runs"] for c in layouts["choices"]] == [8, 3, 1]
    timed = {r["layout"] for r in layouts["rows"]}
    for choice in layouts["choices"]:
        assert choice["layout"] in choice["candidates"] and set(choice["candidates"]) <= timed
    assert "(g) Layouts" in text and "| issue 21 goal |" in text


# -- issue 21's goals --------------------------------------------------------------------------------
def test_imp_evaluation_count():
    from speed.imp import evaluations

    assert evaluations(600, 300) == 3 and evaluations(30, 300) == 2 and evaluations(18320, 300) == 63


def test_issue_goals_are_stated_with_their_direction():
    report_ = {
        "layouts": {"choices": [{"runs": 8, "layout": "2x1x4", "fraction_of_limit": 0.81}]},
        "imp": {
            "runs": 3,
            "extrapolated_wall_s": 660.0,
            "steps_per_level": 300,
            "extrapolated_fraction_of_limit": 0.5,
            "overhead_default_cadence": 0.04,
        },
        "comparisons": [{"comparison": "single_vs_plain", "batch": 60, "value": 1.6}],
    }
    found = compare.goals(report_)
    assert [(g["text"], g["met"]) for g in found] == [
        ("81%", True),
        ("11.0 min (its FLOPs at 100% of this machine's limit: 5.5 min)", False),  # 660 s > 10 min; 0.5 x 11 min
        ("50%", False),
        ("4.0%", True),
        ("1.60x", True),
    ]
    assert compare.goals({}) == []
    # a figure never reads as the goal's other side: more places where two would round it across
    edge = {
        "layouts": {"choices": [{"runs": 8, "layout": "2x1x4", "fraction_of_limit": 0.7996}]},
        "imp": {**report_["imp"], "extrapolated_wall_s": 600.3, "overhead_default_cadence": 0.10004},
        "comparisons": [{"comparison": "single_vs_plain", "batch": 60, "value": 1.4989}],
    }
    assert [(g["text"].split(" (")[0], g["met"]) for g in compare.goals(edge)] == [
        ("79.96%", False),
        ("10.005 min", False),
        ("50%", False),
        ("10.004%", False),
        ("1.499x", False),
    ]
    assert compare.shown(1.5012, 1.5) == "1.50" and compare.shown(9.96, 10, 1, at_most=True) == "10.0"
    # another number of runs (--imp-seeds) is reported, not held to the 3-seed job's goals
    other = {**report_, "imp": {**report_["imp"], "runs": 8}}
    assert [g["text"] for g in compare.goals(other)] == ["81%", "1.60x"]


def test_the_imp_job_is_reported_with_and_without_sparse_training():
    def job(train, wall, sparse_levels):
        return {
            "steps_per_level": 300,
            "levels": 66,
            "sparse_levels": sparse_levels,
            "wall_s": wall,
            "per_level_s": {"train": train},
            "extrapolated_wall_s": 60.0 * wall / 2,
            "extrapolated_fraction_of_limit": 30 / wall,
        }

    lines = report.sparse_lines(job(0.3, 24.0, 30), job(0.4, 30.0, 0))
    assert "| auto (default) | 30 of 66 | 24.0 s | 0.300 s | 12.0 min | 125% |" in lines
    assert "| off | 0 of 66 | 30.0 s | 0.400 s | 15.0 min | 100% |" in lines
    assert lines[-1] == "Without / with: training 1.33x, the job at 20 epochs per level 1.25x."


def test_the_imp_jobs_layout_is_reported_with_the_rows_behind_it(monkeypatch, tmp_path):
    from speed.imp import job_layout

    from ticketlab.sweep.layout import Layout

    # injected timings: the choice and the rows come from the sweep's own decision, ordered by job time
    monkeypatch.setenv("TICKETLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    fake = {Layout(2, 1, 1): 1.0, Layout(1, 2, 3): 1.6}

    def measured(spec, device, data_root):
        return lambda layouts, densities: {d: {layout: fake.get(layout, 9.0) for layout in layouts} for d in densities}

    monkeypatch.setattr("ticketlab.sweep.choose.measured", measured)
    chosen = job_layout(3)
    assert chosen["layout"] == "2x1x1" and chosen["runs"] == 3 and chosen["source"] == "measured"
    assert list(chosen["shares"]) == ["0.5", "0.0884", "0.0156"]
    first, second = chosen["rows"][:2]
    assert (first["layout"], first["job_seconds_per_step"]) == ("2x1x1", 1.5)  # 3 runs on 2 workers: 1.5 x 1.0
    assert (second["layout"], second["job_seconds_per_step"]) == ("1x2x3", 1.6)
    line = report.job_layout_lines(chosen)[0]
    assert "(measured): 2x1x1 for 3 runs" in line and "0.5 (33% of the levels)" in line  # 66 levels of 3 runs in thirds
    assert "2x1x1 1000.00 (1500.00); 1x2x3 1600.00 (1600.00)" in line


def test_the_imp_job_sets_the_sparse_mode_for_its_workers_and_restores_it(monkeypatch):
    from speed.imp import sparse_mode

    from ticketlab.training import sparse

    monkeypatch.delenv(sparse.ENV, raising=False)
    with sparse_mode("off"):
        assert os.environ[sparse.ENV] == "off"
    assert sparse.ENV not in os.environ
    monkeypatch.setenv(sparse.ENV, "on")
    with pytest.raises(RuntimeError), sparse_mode("auto"):
        assert os.environ[sparse.ENV] == "auto"
        raise RuntimeError
    assert os.environ[sparse.ENV] == "on"


def test_the_imp_job_reads_the_layout_its_sweep_chose():
    from speed.imp import _chosen_layout

    lines = ["lenet300 (fashion-mnist, batch 60): layout 1x2x4 for 8 runs (measured)", "run abc finished"]
    assert _chosen_layout(lines) == "1x2x4" and _chosen_layout(["nothing"]) is None
