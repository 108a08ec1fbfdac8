import pytest
from typer.testing import CliRunner

from ticketlab.cli import app
from ticketlab.cli import common as cli_common

runner = CliRunner()
cli_common.console.width = cli_common.err.width = 200  # tables unwrapped, so the tests can read them


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.mark.parametrize("command", [[], ["train"], ["prune"], ["run"], ["data"], ["data", "list"]])
def test_help_everywhere(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0 and "Usage" in result.output


def test_train_prints_table(tmp_path):
    result = invoke(
        "train",
        "--model",
        "mlp:784-32-10",
        "--dataset",
        "synthetic",
        "--steps",
        "1ep",
        "--val-size",
        "100",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    assert "test acc" in result.output and "early-stop step" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "lenet301"], "unknown model 'lenet301'. Did you mean 'lenet300'"),
        (["--dataset", "mnits"], "unknown dataset 'mnits'"),
        (["--steps", "20epochs"], "invalid duration '20epochs'"),
        (["--optimizer", "rmsprop"], "optimizer"),
        (["--device", "tpu"], "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got 'tpu'"),
    ],
)
def test_bad_names_give_one_clear_line(args, message):
    result = invoke("train", "--dataset", "synthetic", *args)
    assert result.exit_code == 2
    assert message in result.output.replace("\n", " ")
    assert "Traceback" not in result.output


def test_prune_writes_levels_and_prints_table(tmp_path):
    result = invoke(
        "prune",
        "--model",
        "mlp:784-32-10",
        "--dataset",
        "synthetic",
        "--method",
        "lottery",
        "--density",
        "0.64",
        "--steps",
        "30it",
        "--val-size",
        "100",
        "--out",
        str(tmp_path),
        "--device",
        "cpu",
        "--control",
        "reinit",
    )
    assert result.exit_code == 0, result.output
    assert "early-stop step" in result.output and "reinit" in result.output
    run_dir = next(p for p in tmp_path.iterdir() if p.name != "inits")
    for level in ("level_00", "level_01", "level_02"):
        assert (run_dir / level / "mask.safetensors").exists() and (run_dir / level / "final.safetensors").exists()
    assert (run_dir / "accuracy_vs_density.png").exists()


def test_prune_bad_method_and_criterion(tmp_path):
    result = invoke("prune", "--dataset", "synthetic", "--method", "lotery", "--density", "0.5", "--out", str(tmp_path))
    assert result.exit_code == 2 and "unknown method 'lotery'" in result.output and "Traceback" not in result.output
    result = invoke(
        "prune", "--dataset", "synthetic", "--criterion", "snipp", "--density", "0.5", "--out", str(tmp_path)
    )
    assert result.exit_code == 2 and "snip" in result.output


def test_run_spec_file(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "model: mlp:784-32-10\ndataset: synthetic\nval_size: 100\ndensities: [0.5]\n"
        "recipe: {steps: 20it, batch_size: 50}\nmethod: {name: snip}\n"
    )
    result = invoke("run", str(spec), "--out", str(tmp_path / "runs"), "--device", "cpu")
    assert result.exit_code == 0, result.output
    spec.write_text("model: lenet300\ndensities: [0]\nrecipe: {stpes: 20it}\n")
    result = invoke("run", str(spec), "--out", str(tmp_path / "runs"))
    assert result.exit_code == 2
    assert "densities" in result.output and "recipe.stpes" in result.output


def test_data_list():
    result = invoke("data", "list")
    assert result.exit_code == 0 and "fashion-mnist" in result.output


def test_key_value_pairs_are_read_as_yaml():
    from ticketlab.config.keyvalue import parse_key_value

    assert parse_key_value(" recipe.lr =0.05", "--set", "recipe.lr=0.1") == ("recipe.lr", 0.05)
    assert parse_key_value("thresholds=[0.1, 0.2]", "--option", "regrow=0.1") == ("thresholds", [0.1, 0.2])
    assert parse_key_value("steps=1ep", "--set", "recipe.steps=1ep") == ("steps", "1ep")
    assert parse_key_value("criterion=", "--set", "method.criterion=snip") == ("criterion", None)
    assert parse_key_value("name=a=b", "--set", "method.name=lottery") == ("name", "a=b")  # the first = splits


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prune", "-o", "regrow"], "--option takes key=value, e.g. --option regrow=0.1; got 'regrow'"),
        (["prune", "-o", " =0.1"], "--option takes key=value, e.g. --option regrow=0.1; got ' =0.1'"),
        (
            ["prune", "-o", "thresholds=[0.1,"],
            "--option thresholds: '[0.1,' is not a YAML value, e.g. --option regrow=0.1",
        ),
        (
            ["sweep", "{sweep}", "--set", "recipe.steps"],
            "--set takes key=value, e.g. --set recipe.steps=1ep; got 'recipe.steps'",
        ),
        (
            ["meta", "fit", "t.csv", "-p", "forest=3"],
            "--param takes model.key=value, e.g. --param forest.n_estimators=100; got 'forest=3'",
        ),
        (
            ["meta", "fit", "t.csv", "-p", "forest.n_estimators"],
            "--param takes model.key=value, e.g. --param forest.n_estimators=100; got 'forest.n_estimators'",
        ),
    ],
)
def test_malformed_key_value_flags_give_one_line_naming_the_flag_with_an_example(args, message, tmp_path):
    import yaml

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": {"dataset": "synthetic"}, "grid": {"seed": [0]}}))
    args = [str(sweep) if a == "{sweep}" else a for a in args]
    result = invoke(*args, "--out", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert [line for line in result.output.splitlines() if line.strip()] == [f"error: {message}"]
