"""The measured layout (processes x threads x stacked K) of a sweep: candidates, the choice from injected
timings, the cache (key, hit, miss, damage), overrides. No timing is asserted: timings are injected."""

import json

import pytest
import torch
from typer.testing import CliRunner

from ticketlab.cli import app
from ticketlab.config.spec import ExperimentSpec
from ticketlab.sweep import SweepSpec, expand, run_sweep
from ticketlab.sweep.choose import choose_layout
from ticketlab.sweep.layout import (
    Layout,
    cache_file,
    cache_key,
    candidates,
    choose,
    decide,
    density_points,
    job_seconds,
    machine_id,
    read_rows,
    snap_density,
    write_rows,
)
from ticketlab.sweep.measure import Workload, random_mask, time_layouts, workload_key
from ticketlab.sweep.plan import level_densities

L = Layout.parse
BASE = {
    "model": "mlp:784-16-10",
    "dataset": "synthetic",
    "val_size": 200,
    "recipe": {"steps": "20it", "eval_every": "10it"},
    "method": {"name": "oneshot", "criterion": "magnitude"},
    "densities": [0.5],
}


class Fake:
    """An injected measurement: fixed seconds per step per layout (and density point, where ``seconds`` takes
    two arguments), recording the layouts and points it was asked for."""

    def __init__(self, seconds):
        self.seconds, self.asked, self.points = seconds, [], []

    def __call__(self, layouts, densities):
        self.asked.append(set(layouts))
        self.points.append(list(densities))
        two = self.seconds.__code__.co_argcount == 2
        return {
            d: {layout: self.seconds(layout, d) if two else self.seconds(layout) for layout in layouts}
            for d in densities
        }


def test_layout_text_round_trips_and_bad_text_names_the_field():
    assert L("2x1x4") == Layout(2, 1, 4) and str(Layout(2, 1, 4)) == "2x1x4" and L(" 1 X 2 X 3 ") == Layout(1, 2, 3)
    for bad in ("2x1", "0x1x1", "axbxc", "2x1x4x1"):
        with pytest.raises(ValueError, match="layout must be PROCESSESxTHREADSxSTACK"):
            L(bad)
    with pytest.raises(ValueError, match="layout"):
        SweepSpec(base=BASE, layout="2-1-4")
    assert SweepSpec(base=BASE, layout="auto").layout == "auto"
    assert SweepSpec(base=BASE, layout="remeasure").layout == "remeasure"


def test_candidates_fill_the_cores_and_never_exceed_the_runs():
    # 3 runs on 2 cores: one process with both threads or one (stacks 1, 2, 3), or two one-thread processes
    assert candidates(3, 2) == [
        *(L(f"1x1x{k}") for k in (1, 2, 3)),
        *(L(f"1x2x{k}") for k in (1, 2, 3)),
        L("2x1x1"),
        L("2x1x2"),
    ]
    assert candidates(1, 2) == [L("1x1x1"), L("1x2x1")]  # a lone run: all the cores as threads, or fewer
    assert candidates(1, 6) == [L("1x1x1"), L("1x2x1"), L("1x4x1"), L("1x6x1")]
    eight = candidates(8, 6)
    assert {c.processes for c in eight} == {1, 2, 4, 6}
    assert {c.threads for c in eight if c.processes == 2} == {1, 2, 3}
    assert all(c.processes * c.threads <= 6 for c in eight)
    assert all(c.stack <= -(-8 // c.processes) for c in eight)
    assert max(c.stack for c in candidates(100, 1)) == 16
    assert candidates(5, 4, cuda=True) == [L("1x1x1"), L("1x1x2"), L("1x1x4"), L("1x1x5")]
    assert candidates(8, 2, processes=2, threads=1) == [L("2x1x1"), L("2x1x2"), L("2x1x4")]
    assert candidates(8, 2, stack=3) == [L("1x1x3"), L("1x2x3"), L("2x1x3")]
    assert candidates(1, 2, threads=2) == [L("1x2x1")]


def test_the_chooser_picks_the_least_estimated_job_time():
    # hand-computed: 3 runs; 2x1x1 shares 3 runs' levels between 2 workers (sweep.plan.balance): 1.5 x 1.0 s;
    # 1x2x1 3 x 0.6 s; 1x2x3 one stack of 1.4 s; 2x1x2 one stack per worker, 2.1 s
    rows = {L("2x1x1"): 1.0, L("1x2x3"): 1.4, L("2x1x2"): 2.1, L("1x2x1"): 0.6}
    assert job_seconds(L("2x1x1"), 1.0, 3) == 1.5 and job_seconds(L("1x2x1"), 0.6, 3) == pytest.approx(1.8)
    assert job_seconds(L("2x1x2"), 2.1, 3) == 2.1 and job_seconds(L("2x1x4"), 4.0, 2) == 4.0  # one stack at least
    assert job_seconds(L("2x1x2"), 2.0, 5) == 3.0  # 3 stacks on 2 workers
    assert choose(rows, 3) == L("1x2x3")
    rows[L("1x2x3")] = 1.9
    assert choose(rows, 3) == L("2x1x1")  # 1.5 < 1.8 < 1.9 < 2.1
    assert choose(rows, 2) == L("2x1x1")  # one run per worker, 1.0, beats 2 x 0.6 and 1.9
    # ties: fewer processes first
    assert choose({L("2x1x1"): 1.0, L("1x2x2"): 1.0}, 2) == L("1x2x2")
    assert choose(rows, 3, among=[L("2x1x1"), L("2x1x2")]) == L("2x1x1")
    with pytest.raises(ValueError, match="no measured layout"):
        choose(rows, 3, among=[L("4x1x1")])


def test_cache_hit_miss_and_key(tmp_path):
    machine = machine_id(torch.device("cpu"))
    assert set(machine) == {"cpu", "cores", "torch", "gemm", "device"} and machine["torch"] == torch.__version__
    spec = ExperimentSpec.model_validate(BASE)
    key = cache_key(machine, workload_key(spec, torch.device("cpu")))
    assert key["workload"]["model"] == "mlp:784-16-10" and key["workload"]["batch_size"] == spec.recipe.batch_size
    among = candidates(3, 2)
    fake = Fake(lambda layout: 1.0 / layout.stack + layout.processes)
    first = decide(key, among, 3, fake, root=tmp_path)
    assert first.source == "measured" and fake.asked == [set(among)] and first.layout == L("1x1x3")
    assert cache_file(key, tmp_path).exists()
    again = decide(key, among, 3, fake, root=tmp_path)
    assert again.source == "cache" and len(fake.asked) == 1 and again.layout == first.layout
    assert again.rows == first.rows
    # a bigger job needs more candidates: only the missing ones are measured, the rest read back
    bigger = candidates(8, 2)
    decide(key, bigger, 8, fake, root=tmp_path)
    assert fake.asked[1] == set(bigger) - set(among)
    # another batch size, machine or torch version is another key, another file
    other = cache_key({**machine, "torch": "0.0"}, key["workload"])
    assert cache_file(other, tmp_path) != cache_file(key, tmp_path)
    batch = cache_key(machine, {**key["workload"], "batch_size": 7})
    assert cache_file(batch, tmp_path) != cache_file(key, tmp_path)
    assert decide(batch, among, 3, fake, root=tmp_path).source == "measured"


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # truncated
        lambda text: json.dumps({**json.loads(text), "rows": {"1x2x1": 0.5}}),  # a time changed: checksum fails
        lambda text: json.dumps({**json.loads(text), "key": {"version": 1, "machine": {}, "workload": {}}}),
        lambda text: "not json",
    ],
)
def test_a_damaged_cache_file_is_detected_and_measured_again(tmp_path, damage):
    key = cache_key({"cpu": "x", "cores": 2}, {"model": "m"})
    among = candidates(3, 2)
    write_rows(key, {layout: 1.0 for layout in among}, tmp_path)
    path = cache_file(key, tmp_path)
    path.write_text(damage(path.read_text()))
    logged = []
    fake = Fake(lambda layout: 5.0 if layout == L("2x1x2") else 10.0)
    decision = decide(key, among, 3, fake, root=tmp_path, log=logged.append)
    assert decision.source == "measured" and fake.asked == [set(among)]  # nothing of the damaged file used
    assert decision.layout == L("2x1x2") and "measuring again" in logged[0]
    assert read_rows(key, tmp_path)[L("2x1x2")] == 5.0  # rewritten, sound


def test_the_sweep_runs_the_chosen_layout_and_overrides_skip_the_measurement(monkeypatch, tmp_path):
    monkeypatch.setenv("TICKETLAB_CACHE_DIR", str(tmp_path))  # a cache of its own: no other test's rows
    sweep = SweepSpec(base=BASE, grid={"seed": [0, 1, 2]})
    pending = expand(sweep)
    fake = Fake(lambda layout: {L("1x2x3"): 1.0}.get(layout, 9.0))
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    chosen = choose_layout(sweep, pending, measure_for=lambda spec: fake)
    assert (chosen.processes, chosen.threads) == (1, 2) and chosen.size(pending[0]) == 3
    assert len(fake.asked) == 1
    # fixed by the sweep: nothing measured
    for fixed in (SweepSpec(base=BASE, grid={"seed": [0, 1, 2]}, layout="2x1x2"),):
        chosen = choose_layout(fixed, pending, measure_for=lambda spec: fake)
        assert (chosen.processes, chosen.threads, chosen.size(pending[0])) == (2, 1, 2)
    monkeypatch.setenv("TICKETLAB_LAYOUT", "2x1x1")
    chosen = choose_layout(sweep, pending, measure_for=lambda spec: fake)
    assert (chosen.processes, chosen.threads, chosen.size(pending[0])) == (2, 1, 1) and len(fake.asked) == 1
    # the file's layout wins over the environment, the file's workers over its layout
    both = SweepSpec(base=BASE, grid={"seed": [0, 1, 2]}, layout="1x2x3", workers=2, threads_per_worker=1)
    chosen = choose_layout(both, pending, measure_for=lambda spec: fake)
    assert (chosen.processes, chosen.threads, chosen.size(pending[0])) == (2, 1, 3)
    # remeasure: timed again though cached, and the new rows replace the old
    again = Fake(lambda layout: {L("2x1x2"): 1.0}.get(layout, 9.0))
    monkeypatch.setenv("TICKETLAB_LAYOUT", "auto")
    assert choose_layout(sweep, pending, measure_for=lambda spec: again).size(pending[0]) == 3  # cached: 1x2x3
    assert again.asked == []
    redo = SweepSpec(base=BASE, grid={"seed": [0, 1, 2]}, layout="remeasure")
    chosen = choose_layout(redo, pending, measure_for=lambda spec: again)
    assert (chosen.processes, chosen.threads, chosen.size(pending[0])) == (2, 1, 2) and len(again.asked) == 1
    assert choose_layout(sweep, pending, measure_for=lambda spec: fake).processes == 2  # the new rows, cached
    monkeypatch.setenv("TICKETLAB_LAYOUT", "two")
    with pytest.raises(ValueError, match="TICKETLAB_LAYOUT must be"):
        choose_layout(sweep, pending, measure_for=lambda spec: fake)


def test_a_sweep_records_the_threads_and_stack_it_ran_with(tmp_path, monkeypatch):
    monkeypatch.setenv("TICKETLAB_LAYOUT", "1x2x2")
    lottery = {**BASE, "method": {"name": "lottery", "K": 0.5}}
    sweep = SweepSpec(base=lottery, grid={"seed": [0, 1, 2]})
    report = run_sweep(sweep, out=tmp_path)
    assert not report.failed and len(report.outcomes) == 3
    stacks = []
    for spec in expand(sweep):
        run = tmp_path / spec.run_id()
        assert json.loads((run / "env.json").read_text())["threads"] == 2
        level = json.loads((run / "level_01" / "metrics.json").read_text())
        assert level["env"]["threads"] == 2
        stacks.append(level["stacked"])
    assert sorted(stacks) == [1, 2, 2]  # batches of 2 and 1


def test_cli_layout_option_and_bad_value(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps({"base": BASE, "grid": {"seed": [0]}}))
    result = CliRunner().invoke(app, ["sweep", str(path), "--out", str(tmp_path / "runs"), "--layout", "1x1"])
    assert result.exit_code == 2 and "layout" in result.output and not (tmp_path / "runs").exists()
    result = CliRunner().invoke(app, ["sweep", str(path), "--out", str(tmp_path / "runs"), "--layout", "1x1x1"])
    assert result.exit_code == 0, result.output
    assert "layout 1x1x1" in result.output


def test_time_layouts_measures_each_candidate_in_its_processes():
    spec = ExperimentSpec.model_validate(BASE)
    workload = Workload.of(spec, (1, 28, 28), 10, "cpu")
    rows = time_layouts(workload, [L("1x1x1"), L("1x1x2"), L("2x1x1")], [1.0, 0.125], budget=0.01)
    assert set(rows) == {1.0, 0.125}
    for point in rows.values():
        assert set(point) == {L("1x1x1"), L("1x1x2"), L("2x1x1")}
        assert all(seconds > 0 for seconds in point.values())


def test_a_failed_timing_runs_one_run_per_process_and_caches_nothing(tmp_path):
    key = cache_key({"cpu": "x", "cores": 2}, {"model": "m"})

    def broken(layouts, densities):
        raise RuntimeError("out of memory")

    logged = []
    decision = decide(key, candidates(3, 2), 3, broken, root=tmp_path, log=logged.append)
    assert decision.layout == L("2x1x1") and decision.source == "timing failed"
    assert "out of memory" in logged[0] and not cache_file(key, tmp_path).exists()


def test_density_points_stand_for_the_jobs_levels():
    # the ladder: 1 stays unmasked, anything below is a half-octave point, never 1
    assert snap_density(1.0) == 1.0 and snap_density(0.8) == pytest.approx(2**-0.5, abs=1e-6)
    assert snap_density(0.5) == 0.5 and snap_density(0.3) == pytest.approx(2**-1.5, abs=1e-6)
    assert snap_density(1e-9) == pytest.approx(2**-10, abs=1e-6)
    assert density_points([1.0]) == {1.0: 1.0} and density_points([1.0, 1.0, 1.0, 1.0]) == {1.0: 1.0}
    assert density_points([1.0, 0.5]) == {1.0: 0.5, 0.5: 0.5}
    # IMP K = 0.8 to 1%: 22 levels in parts of 7, 8, 7; medians 0.8^3 = 0.512, 0.8^11 = 0.0859, 0.8^18 = 0.018
    imp = ExperimentSpec.model_validate(
        {**BASE, "densities": [0.01], "method": {"name": "lottery", "K": 0.8, "scope": "layerwise"}}
    )
    levels = level_densities(imp)
    assert len(levels) == 22 and levels[0] == 1.0 and levels[-1] == 0.01
    points = density_points(levels)
    assert points == pytest.approx({0.5: 7 / 22, round(2**-3.5, 6): 8 / 22, 2**-6: 7 / 22})
    assert level_densities(ExperimentSpec.model_validate(BASE)) == [1.0, 0.5]  # oneshot: dense, then its target


def test_the_layout_is_chosen_on_the_jobs_density_mix_and_cached_per_point(tmp_path):
    # hand-computed, 4 runs (one stack of 4, or a stack of 2 per worker): dense, 1x2x4 takes 1.0 s a step and
    # 2x1x2 1.1 s; at 1/64 density 1.0 and 0.5 s. All dense, 1x2x4 wins; half the levels at 1/64: 1x2x4 1.0 s,
    # 2x1x2 (1.1 + 0.5) / 2 = 0.8 s
    key = cache_key({"cpu": "x", "cores": 2}, {"model": "m"})
    among = [L("1x2x4"), L("2x1x2")]
    times = {(L("1x2x4"), 1.0): 1.0, (L("2x1x2"), 1.0): 1.1, (L("1x2x4"), 2**-6): 1.0, (L("2x1x2"), 2**-6): 0.5}
    fake = Fake(lambda layout, density: times[layout, density])
    dense = decide(key, among, 4, fake, root=tmp_path)
    assert dense.layout == L("1x2x4") and dense.shares == {1.0: 1.0} and "timed at" not in dense.describe()
    mixed = decide(key, among, 4, fake, shares={1.0: 0.5, 2**-6: 0.5}, root=tmp_path)
    assert mixed.layout == L("2x1x2") and mixed.rows[L("2x1x2")] == pytest.approx(0.8)
    assert fake.points == [[1.0], [2**-6]]  # the dense point was read back, only the new one timed
    assert mixed.source == "measured" and "timed at densities 1, 0.0156" in mixed.describe()
    again = decide(key, among, 4, fake, shares={1.0: 0.5, 2**-6: 0.5}, root=tmp_path)
    assert again.source == "cache" and len(fake.points) == 2 and again.layout == L("2x1x2")
    assert read_rows({**key, "density": 2**-6}, tmp_path) == {L("1x2x4"): 1.0, L("2x1x2"): 0.5}
    only = decide(key, [L("2x1x2")], 4, fake, shares={1.0: 0.5, 2**-6: 0.5}, root=tmp_path)
    assert only.describe() == "layout 2x1x2 for 4 runs (only candidate)"  # nothing timed, nothing claimed


def test_choose_layout_times_a_pruning_job_at_its_levels_densities(monkeypatch, tmp_path):
    monkeypatch.setenv("TICKETLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    lottery = {**BASE, "densities": [0.01], "method": {"name": "lottery", "K": 0.8}}
    sweep = SweepSpec(base=lottery, grid={"seed": [0, 1, 2]})
    fake = Fake(lambda layout, density: layout.processes + density / layout.stack)
    chosen = choose_layout(sweep, expand(sweep), measure_for=lambda spec: fake)
    decision = next(iter(chosen.decisions.values()))
    assert fake.points == [sorted(decision.shares, reverse=True)] and len(decision.shares) == 3
    assert sum(decision.shares.values()) == pytest.approx(1.0)


def test_random_masks_keep_the_asked_share_of_every_prunable_layer():
    from ticketlab.models import build_model

    model = build_model("mlp:784-16-10", input_shape=(1, 28, 28), num_classes=10)
    mask = random_mask(model, (), 0.1, seed=0)
    assert {name: int(kept.sum()) for name, kept in mask.items()} == {
        "layers.0.weight": round(0.1 * 784 * 16),
        "layers.1.weight": 16,
    }
    assert all(bool(kept.all()) for kept in random_mask(model, (), 1.0, seed=0).values())
    assert not torch.equal(mask["layers.0.weight"], random_mask(model, (), 0.1, seed=1)["layers.0.weight"])
