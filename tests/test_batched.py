"""run_experiments writes the same run directories as run_experiment, spec by spec, training stacked."""

import json
from pathlib import Path

import pytest
import torch

import ticketlab.experiment.lockstep as batched
from ticketlab.config.recipe import Recipe
from ticketlab.config.spec import ExperimentSpec, MethodSpec
from ticketlab.experiment.lockstep import run_experiments
from ticketlab.experiment.run import run_experiment
from ticketlab.files import load_tensors

RECIPE = Recipe(steps="20it", batch_size=100, lr=0.1, momentum=0.9, eval_every="10it")
# how long and how a level ran (stacked or alone), not what it computed
TIMING = {"train_time", "score_time", "mask_cost_seconds", "time_s", "stacked"}


def spec(**kw) -> ExperimentSpec:
    base = dict(model="mlp:784-32-16-10", dataset="synthetic", val_size=200, recipe=RECIPE)
    base.update(kw)
    return ExperimentSpec(**base)


def close(a, b, path: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            if k not in TIMING:
                close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, abs=1e-4, nan_ok=True), path
    else:
        assert a == b, path


def compare_trees(left: Path, right: Path) -> int:
    files = sorted(p.relative_to(left) for p in left.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(right) for p in right.rglob("*") if p.is_file())
    for rel in files:
        if rel.suffix == ".json":
            close(json.loads((left / rel).read_text()), json.loads((right / rel).read_text()), str(rel))
        elif rel.suffix == ".txt":  # the key of a shared dense level (dense/<name>/key.txt)
            assert (left / rel).read_text() == (right / rel).read_text(), rel
        elif rel.name == "mask.safetensors" or rel.parts[0] == "inits":
            a, b = load_tensors(left / rel)[0], load_tensors(right / rel)[0]
            assert all(torch.equal(a[k], b[k]) for k in a), rel
        else:
            a, b = load_tensors(left / rel)[0], load_tensors(right / rel)[0]
            assert all(torch.allclose(a[k].double(), b[k].double(), atol=1e-5) for k in a), rel
    return len(files)


@pytest.fixture
def count_stacked(monkeypatch):
    calls = []
    real = batched.train_many

    def counting(models, *args, **kwargs):
        calls.append(len(models))
        return real(models, *args, **kwargs)

    monkeypatch.setattr(batched, "train_many", counting)
    return calls


def test_lottery_seeds_and_presets_equal_sequential_runs(tmp_path, count_stacked):
    specs = [spec(seed=s, densities=(0.6,)) for s in (0, 1, 2)]
    specs.append(spec(seed=3, densities=(0.6,), method=MethodSpec(name="sgimp:50%"), controls=("reinit",)))
    specs.append(spec(seed=4, densities=(0.6,), method=MethodSpec(name="lr_rewind")))
    results = run_experiments(specs, tmp_path / "batched")
    for s in specs:
        run_experiment(s, tmp_path / "sequential")
    assert [r.spec for r in results] == specs
    assert compare_trees(tmp_path / "batched", tmp_path / "sequential") > 40
    # level 0 of all five runs is one stack; later levels stack the three lottery seeds with sgimp/lr_rewind
    # where their step ranges agree (lr_rewind and sgimp restart the LR at step 20, lottery at 0)
    assert count_stacked[0] == 5 and max(count_stacked) == 5 and len(count_stacked) >= 4


def test_early_stopped_levels_equal_sequential_runs(tmp_path, count_stacked):
    """Each stacked run stops on its own; late rewinding's snapshot step holds its stop off, so it is not
    stacked with runs that may stop before that step."""
    recipe = Recipe(steps="60it", batch_size=50, lr=0.2, momentum=0.9, eval_every="3it", early_stop={"patience": 2})
    specs = [spec(seed=s, densities=(0.6,), recipe=recipe) for s in (0, 1, 2)]
    specs.append(spec(seed=3, densities=(0.6,), recipe=recipe, method=MethodSpec(name="late_rewind:30it")))
    results = run_experiments(specs, tmp_path / "batched")
    for s in specs:
        run_experiment(s, tmp_path / "sequential")
    compare_trees(tmp_path / "batched", tmp_path / "sequential")
    stops = [row["stopped_step"] for r in results for row in r.rows]
    assert any(step < 60 for step in stops) and len(set(stops)) > 1
    assert results[3].rows[0]["stopped_step"] >= 30
    assert count_stacked and max(count_stacked) == 3  # the three lottery seeds; late_rewind's level 0 apart


def test_upfront_methods_and_other_architectures_group_apart(tmp_path, count_stacked):
    specs = [
        spec(seed=0, method=MethodSpec(name="snip"), densities=(0.5, 0.2)),
        spec(
            seed=1,
            method=MethodSpec(name="oneshot", criterion="magnitude"),
            densities=(0.5,),
            controls=("shuffle_mask",),
        ),
        spec(seed=2, method=MethodSpec(name="synflow", rounds=5), densities=(0.3,)),
        spec(seed=0, model="mlp:784-16-10", method=MethodSpec(name="snip"), densities=(0.5,)),  # alone: plain train()
    ]
    run_experiments(specs, tmp_path / "batched")
    for s in specs:
        run_experiment(s, tmp_path / "sequential")
    compare_trees(tmp_path / "batched", tmp_path / "sequential")
    assert count_stacked and max(count_stacked) == 3


def test_resume_and_non_batchable_methods_fall_back(tmp_path, monkeypatch):
    """A finished spec is read back, not retrained; a method outside BATCHED_METHODS runs sequentially."""
    specs = [spec(seed=s, densities=(0.8,)) for s in (0, 1)]
    run_experiments(specs, tmp_path)
    monkeypatch.setattr(batched, "train_many", lambda *a, **k: pytest.fail("finished levels were retrained"))
    monkeypatch.setattr(batched, "train", lambda *a, **k: pytest.fail("finished levels were retrained"))
    again = run_experiments(specs, tmp_path)
    assert [len(r.rows) for r in again] == [2, 2]
    monkeypatch.setattr(batched, "BATCHED_METHODS", frozenset())
    fallback = []
    monkeypatch.setattr(batched, "run_experiment", lambda s, *a, **k: fallback.append(s) or run_experiment(s, *a, **k))
    run_experiments(specs, tmp_path)
    assert fallback == specs


def test_a_failing_spec_does_not_stop_the_others(tmp_path):
    specs = [spec(seed=0, densities=(0.8,)), spec(seed=1, densities=(0.8,), method=MethodSpec(name="late_rewind"))]
    with pytest.raises(ValueError, match="late_rewind needs the rewind step"):
        run_experiments(specs, tmp_path)
    assert (tmp_path / specs[0].run_id() / "done.json").exists()


def test_failures_come_back_per_spec_and_messages_per_run(tmp_path, count_stacked):
    specs = [spec(seed=s, densities=(0.8,)) for s in (0, 1)]
    specs.append(
        spec(seed=2, densities=(0.8,), recipe=RECIPE.model_copy(update={"batch_size": 5000}))
    )  # > 1800 examples
    messages: dict[str, list[str]] = {}

    def log_for(s: ExperimentSpec):
        return messages.setdefault(s.run_id(), []).append

    results = run_experiments(specs, tmp_path, log_for=log_for, return_exceptions=True)
    assert [type(r).__name__ for r in results[:2]] == ["RunResult", "RunResult"]
    assert isinstance(results[2], ValueError) and "batch_size 5000" in str(results[2])
    assert count_stacked[0] == 2  # the two good seeds still trained stacked
    assert [len(messages[s.run_id()]) for s in specs[:2]] == [2, 2]  # one line per level, each in its own run's log
    with pytest.raises(ValueError, match="batch_size 5000"):
        run_experiments(specs, tmp_path)


def test_methods_run_as_coroutines_on_the_schedulers_own_thread(tmp_path, monkeypatch):
    """No OS thread per method: each would keep an OpenMP pool of its own, and while those pools exist
    every parallel region of the stacked training is slower (measured 1.4-1.7x per step; see _Worker)."""
    import threading

    from ticketlab.methods.context import Job

    seen: set[int] = set()
    real = Job.record

    def record(self, *args, **kwargs):
        seen.add(threading.get_ident())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Job, "record", record)
    before = threading.active_count()
    results = run_experiments([spec(seed=0), spec(seed=1)], tmp_path)
    assert all(not isinstance(r, BaseException) for r in results)
    assert seen == {threading.get_ident()} and threading.active_count() == before


def test_a_level_trains_one_run_at_a_time_where_that_measures_faster(tmp_path, count_stacked, monkeypatch):
    """Where a lone model can take the sparse path, the scheduler asks stack_choice whether the level's
    trainings run faster one at a time; told so, it trains them alone, with the same results."""
    from ticketlab.training import sparse, stack_choice

    asked = []

    def decide(model, masks, recipe, input_shape, num_classes, device):
        asked.append(len(masks))
        return stack_choice.Verdict(False, {"stacked": 2e-3, "sequential": 1e-3}, "measured")

    monkeypatch.setattr(stack_choice, "decide", decide)
    sparse.set_mode("on")
    try:
        specs = [spec(seed=s, densities=(0.3,), method=MethodSpec(name="lottery", K=0.3)) for s in (0, 1)]
        lines: list[str] = []
        run_experiments(specs, tmp_path / "batched", log=lines.append)
        for s in specs:
            run_experiment(s, tmp_path / "sequential")
    finally:
        sparse.set_mode(None)
    compare_trees(tmp_path / "batched", tmp_path / "sequential")
    assert count_stacked == [2]  # level 0 (dense) stacked; level 1 asked and trained alone
    assert asked == [2]
    assert any("a level's 2 trainings one at a time (stacked 2.00 ms, sequential 1.00 ms" in line for line in lines)
