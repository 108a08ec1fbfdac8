"""What a run records beside its numbers: the method, criterion and rounds it ran as, the environment that can
change its numbers (and a warning when a run resumes under another), what done.json counts, and the
evaluation cadence the CLI and API ask for. Issue "Results a researcher can trust", items 2 and 3."""

import json
import shutil

import pytest
import torch

import ticketlab
from ticketlab.analysis.stats import labels, summarize
from ticketlab.config.recipe import Recipe
from ticketlab.config.spec import ExperimentSpec, MethodSpec
from ticketlab.experiment.run import EnvironmentChangedWarning, run_experiment
from ticketlab.hardware.environment import FIELDS, environment
from ticketlab.methods import Resolved, resolve_method
from ticketlab.store import RunDir


def spec(**kw):
    base = dict(
        model="mlp:784-16-10",
        dataset="synthetic",
        val_size=200,
        densities=(0.5,),
        recipe={"steps": "30it", "eval_every": "10it"},
        method={"name": "snip"},
    )
    return ExperimentSpec.model_validate({**base, **kw})


# -- rounds: unset = the method's default, explicit 1 = one round ---------------------------------------
def test_run_ids_of_specs_without_rounds_are_those_of_the_base_commit():
    # computed with ticketlab at 842d7a4, where MethodSpec.rounds defaulted to 1
    assert ExperimentSpec().run_id() == "44136fa355b3"
    assert ExperimentSpec.model_validate({"method": {"name": "synflow"}, "densities": [0.1]}).run_id() == "ca8f968e6b20"
    snip = {"method": {"name": "snip"}, "recipe": {"steps": "1ep"}, "densities": [0.1]}
    assert ExperimentSpec.model_validate(snip).run_id() == "db265968bb10"
    ims = {"method": {"name": "lottery", "criterion": "snip", "rounds": 10}}
    assert ExperimentSpec.model_validate(ims).run_id() == "872bc140d79a"
    one_shot_synflow = {"method": {"name": "synflow", "rounds": 1}, "densities": [0.1]}
    assert ExperimentSpec.model_validate(one_shot_synflow).run_id() != "ca8f968e6b20"  # another computation


def test_explicit_one_round_is_one_shot_synflow():
    assert resolve_method(MethodSpec(name="synflow")) == ("multishot", 100)
    assert resolve_method(MethodSpec(name="synflow", rounds=1)) == ("oneshot", 1)
    assert resolve_method(MethodSpec(name="synflow", rounds=7)) == ("multishot", 7)
    assert resolve_method(MethodSpec(name="snip")) == ("oneshot", 1)
    assert resolve_method(MethodSpec(name="lottery")) == ("lottery", 1)
    assert Resolved.of(MethodSpec(name="lottery")) == Resolved("lottery", "magnitude", 1)
    assert Resolved.of(MethodSpec(name="supermask")).criterion == "large_final_same_sign"
    assert Resolved.of(MethodSpec(name="tom")).criterion is None


@pytest.fixture(scope="module")
def resolved_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resolved")
    runs = {
        "synflow": run_experiment(spec(method={"name": "synflow"}), root, device="cpu"),
        "synflow1": run_experiment(spec(method={"name": "synflow", "rounds": 1}), root, device="cpu"),
        "lottery": run_experiment(
            spec(method={"name": "lottery"}, densities=(0.64,), controls=("reinit",)), root, device="cpu"
        ),
    }
    return root, runs


def test_levels_record_what_ran_and_the_results_show_it(resolved_runs):
    root, runs = resolved_runs
    level = RunDir(runs["synflow"].path).level(1).metrics()
    assert (level["method_key"], level["criterion"], level["rounds"]) == ("multishot", "synflow", 100)
    level = RunDir(runs["synflow1"].path).level(1).metrics()
    assert (level["method_key"], level["criterion"], level["rounds"]) == ("oneshot", "synflow", 1)
    assert RunDir(runs["synflow"].path).spec()["method"]["rounds"] is None  # the spec as written: unset
    frame = ticketlab.load_results(root).set_index(["run_id", "level", "control"])
    for name, rounds, criterion in (
        ("synflow", 100, "synflow"),
        ("synflow1", 1, "synflow"),
        ("lottery", 1, "magnitude"),
    ):
        rows = frame.loc[runs[name].path.name]
        assert set(rows["rounds"]) == {rounds} and set(rows["criterion"]) == {criterion}
    # one-shot SynFlow is its own kind; the implied criterion is not repeated in the label
    tickets = ticketlab.load_results(root).query("level == 1 and control == 'ticket'")
    assert sorted(labels(tickets)) == ["lottery", "synflow", "synflow ×100"]


def test_done_json_counts_levels_and_controls_apart(resolved_runs):
    _, runs = resolved_runs
    done = json.loads((runs["lottery"].path / "done.json").read_text())
    # levels 0 (dense), 1 (0.8) and 2 (0.64), each pruned level with its reinit control: 5 trainings
    assert done == {"levels": 3, "controls": 2}
    assert json.loads((runs["synflow"].path / "done.json").read_text()) == {"levels": 2, "controls": 0}


def test_runs_recorded_before_rounds_were_resolved_read_back_as_they_ran(resolved_runs, tmp_path):
    """A run directory as ticketlab wrote it before: spec rounds 1 for 'the default', no env.json, levels
    without method_key/criterion/rounds/env. SynFlow's 100 rounds are what the results must say."""
    _, runs = resolved_runs
    old = tmp_path / runs["synflow"].path.name
    shutil.copytree(runs["synflow"].path, old)
    (old / "env.json").unlink()
    spec_json = json.loads((old / "spec.json").read_text())
    spec_json["method"]["rounds"] = 1
    (old / "spec.json").write_text(json.dumps(spec_json))
    for metrics in old.glob("level_*/metrics.json"):
        row = json.loads(metrics.read_text())
        for key in ("method_key", "criterion", "rounds", "env"):
            del row[key]
        metrics.write_text(json.dumps(row))
    assert RunDir(old).spec()["method"]["rounds"] is None
    assert ExperimentSpec.model_validate(RunDir(old).spec()).run_id() == old.name
    frame = ticketlab.load_results(tmp_path)
    assert set(frame["rounds"]) == {100} and set(frame["method_key"]) == {"multishot"}
    assert set(frame["criterion"]) == {"synflow"}
    assert not any(c.startswith("env.") for c in frame.columns)


# -- the environment ---------------------------------------------------------------------------------------
def test_environment_fields():
    env = environment(torch.device("cpu"))
    assert tuple(env) == FIELDS
    assert env["device"] == "cpu" and env["device_name"] is None and env["torch"] == torch.__version__
    assert env["threads"] == torch.get_num_threads()
    assert env["blas"] == "openblas" or env["blas"].startswith("torch:")
    json.dumps(env)  # plain JSON


def _threads(n):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    return previous


def test_same_spec_under_two_thread_counts_is_two_setups(tmp_path):
    s = spec()
    frames = []
    for threads in (1, 2):
        previous = _threads(threads)
        try:
            run = run_experiment(s, tmp_path / f"t{threads}", device="cpu")
        finally:
            torch.set_num_threads(previous)
        assert run.path.name == s.run_id()  # the run id stays the spec's
        assert json.loads((run.path / "env.json").read_text())["threads"] == threads
        frames.append(ticketlab.load_results(tmp_path / f"t{threads}"))
    import pandas as pd

    both = pd.concat(frames, ignore_index=True)
    assert set(both["env.threads"]) == {1, 2}
    summary = summarize(both[both.level == 1])
    assert len(summary) == 2 and list(summary["n"]) == [1, 1]
    assert sorted(summary["label"]) == ["snip · threads=1", "snip · threads=2"]


def test_resuming_under_another_environment_warns_and_records_it(tmp_path):
    s = spec(densities=(0.5, 0.2))
    run_experiment(s, tmp_path, device="cpu")
    run = RunDir(tmp_path / s.run_id())
    shutil.rmtree(run.path / "level_02")  # killed before its last level
    (run.path / "done.json").unlink()
    messages = []
    previous = _threads(2)
    try:
        run_experiment(s, tmp_path, device="cpu", log=messages.append)
    finally:
        torch.set_num_threads(previous)
    warnings = [m for m in messages if m.startswith("warning:")]
    assert len(warnings) == 1 and "threads 1 -> 2" in warnings[0] and "\n" not in warnings[0]
    assert run.level(1).metrics()["env"]["threads"] == 1
    assert run.level(2).metrics()["env"]["threads"] == 2
    assert run.env()["threads"] == 1  # env.json: the environment the run started under
    # a finished run read back under another environment: nothing is trained, nothing to warn about
    messages.clear()
    previous = _threads(2)
    try:
        run_experiment(s, tmp_path, device="cpu", log=messages.append)
    finally:
        torch.set_num_threads(previous)
    assert not [m for m in messages if m.startswith("warning:")]


def test_resume_warning_without_a_log_is_a_python_warning(tmp_path):
    s = spec()
    run_experiment(s, tmp_path, device="cpu")
    (tmp_path / s.run_id() / "done.json").unlink()
    previous = _threads(2)
    try:
        with pytest.warns(EnvironmentChangedWarning, match="threads 1 -> 2"):
            run_experiment(s, tmp_path, device="cpu")
    finally:
        torch.set_num_threads(previous)


def test_labels_of_levels_without_an_environment():
    import pandas as pd

    frame = pd.DataFrame(
        [
            {"method": "snip", "density": 0.1, "test_acc": 0.9, "seed": 0, "env.threads": 1, "env.torch": "2"},
            {"method": "snip", "density": 0.1, "test_acc": 0.8, "seed": 0, "env.threads": None, "env.torch": None},
            {"method": "snip", "density": 0.1, "test_acc": 0.7, "seed": 1, "env.threads": 1, "env.torch": "2"},
        ]
    )
    assert labels(frame).tolist() == ["snip", "snip · env=?", "snip"]
    assert list(summarize(frame)["n"]) == [2, 1]


# -- evaluation cadence -------------------------------------------------------------------------------------
def test_auto_eval_every_is_at_least_ten_evaluations_and_one_per_epoch():
    assert Recipe(steps="1ep", eval_every="auto").eval_interval(917) == 91  # 11 evaluations with the last
    assert Recipe(steps="20ep", eval_every="auto").eval_interval(917) == 917  # one per epoch
    assert Recipe(steps="5it", eval_every="auto").eval_interval(917) == 1
    assert Recipe(steps="1ep").eval_interval(917) == 917 and Recipe(eval_every=None).eval_interval(917) == 0
    assert Recipe(eval_every="auto").model_dump(mode="json")["eval_every"] == "auto"
    with pytest.raises(ValueError, match="or 'auto'"):
        Recipe(eval_every="often")


def test_recipe_default_keeps_its_run_ids_and_the_api_asks_for_auto(tmp_path):
    assert Recipe().eval_every is not None and str(Recipe().eval_every) == "1ep"  # what old run ids mean
    auto = spec(recipe={"steps": "30it", "eval_every": "auto"})
    assert auto.run_id() != spec(recipe={"steps": "30it"}).run_id()
    from ticketlab.api import DEFAULT_RECIPE

    assert Recipe(eval_every="auto") == DEFAULT_RECIPE
    result = ticketlab.prune(
        "mlp:784-16-10",
        "synthetic",
        "snip",
        0.5,
        recipe=Recipe(steps="30it", eval_every="auto"),
        val_size=200,
        out=tmp_path,
        device="cpu",
    )
    history = RunDir(result.path).level(0).metrics()["history"]
    assert [h["step"] for h in history] == list(range(0, 31, 3))  # 10 evaluations after the first


def test_cli_prune_evaluates_auto_by_default(tmp_path):
    from typer.testing import CliRunner

    from ticketlab.cli import app

    result = CliRunner().invoke(
        app,
        [
            "prune",
            "--model",
            "mlp:784-16-10",
            "--dataset",
            "synthetic",
            "--method",
            "snip",
            "--density",
            "0.5",
            "--steps",
            "30it",
            "--val-size",
            "200",
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    (run,) = [p for p in tmp_path.iterdir() if p.name not in ("inits", "dense")]
    assert json.loads((run / "spec.json").read_text())["recipe"]["eval_every"] == "auto"
    assert len(RunDir(run).level(1).metrics()["history"]) == 11
