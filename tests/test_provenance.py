"""What a run records beside its numbers: the environment that can change them (and a warning when a run
resumes under another). Issue "Results a researcher can trust", item 2."""

import json
import shutil

import pytest
import torch

import ticketlab
from ticketlab.analysis.stats import labels, summarize
from ticketlab.config.spec import ExperimentSpec
from ticketlab.experiment.run import EnvironmentChangedWarning, run_experiment
from ticketlab.hardware.environment import FIELDS, environment
from ticketlab.store import RunDir


def spec(**kw):
    base = dict(
        model="mlp:784-16-10", dataset="synthetic", val_size=200, densities=(0.5,),
        recipe={"steps": "30it", "eval_every": "10it"}, method={"name": "snip"},
    )
    return ExperimentSpec.model_validate({**base, **kw})


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

    frame = pd.DataFrame([
        {"method": "snip", "density": 0.1, "test_acc": 0.9, "seed": 0, "env.threads": 1, "env.torch": "2"},
        {"method": "snip", "density": 0.1, "test_acc": 0.8, "seed": 0, "env.threads": None, "env.torch": None},
        {"method": "snip", "density": 0.1, "test_acc": 0.7, "seed": 1, "env.threads": 1, "env.torch": "2"},
    ])
    assert labels(frame).tolist() == ["snip", "snip · env=?", "snip"]
    assert list(summarize(frame)["n"]) == [2, 1]
