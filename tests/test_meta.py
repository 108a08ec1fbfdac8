"""Meta-learned scores (000 §3.2, §5.2, appendix B): features against explicit computations, regressors on
targets they must fit, persistence, the ``meta:<path>`` criterion inside a run, and the CLI end to end."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from ticketlab import cli
from ticketlab.cli import common as cli_common
from ticketlab.config.recipe import Recipe
from ticketlab.config.spec import ExperimentSpec, MethodSpec
from ticketlab.criteria import ScoringContext, is_data_aware, parse, score
from ticketlab.criteria.features import (
    EXTENDED,
    FeatureSpec,
    activation_stats,
    compute_features,
    feature_matrix,
    rank_per_layer,
    scale_global,
    scale_per_layer,
)
from ticketlab.criteria.learned import load_meta_model
from ticketlab.experiment.run import run_experiment
from ticketlab.masks import Mask, prunable_parameters
from ticketlab.metalearn.fit import MetaModel, fit_models, select_columns, split_rows
from ticketlab.metalearn.table import build_table, load_table, save_table
from ticketlab.models import build_model, initialize

FAST = {"forest": {"n_estimators": 4}, "mlp": {"epochs": 2, "batch_size": 256}}
cli_common.console.width = cli_common.err.width = 200


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()


def batches(in_shape=(4,), classes=2, n=2, size=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(size, *in_shape, generator=g, dtype=torch.float64),
            torch.randint(0, classes, (size,), generator=g),
        )
        for _ in range(n)
    ]


def small_mlp():
    return initialize(build_model("mlp:784-16-10", input_shape=(1, 28, 28)), seed=0)


def image_ctx(n=2, size=20):
    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(size, 1, 28, 28, generator=g), torch.randint(0, 10, (size,), generator=g)) for _ in range(n)]
    return ScoringContext(batches=data, input_shape=(1, 28, 28))


# ---- features ---------------------------------------------------------------------------------------


def test_scaling_and_ranks_by_hand():
    values = {"a": torch.tensor([[2.0, -1.0], [5.0, -1.0]]), "b": torch.tensor([3.0, 3.0])}
    per_layer = scale_per_layer(values)
    torch.testing.assert_close(per_layer["a"], torch.tensor([[0.5, 0.0], [1.0, 0.0]], dtype=torch.float64))
    assert torch.equal(per_layer["b"], torch.zeros(2, dtype=torch.float64))  # constant layer: all 0
    together = scale_global(values)  # one min (-1) and max (5) over both tensors
    torch.testing.assert_close(together["b"], torch.tensor([4 / 6, 4 / 6], dtype=torch.float64))
    ranks = rank_per_layer({"a": torch.tensor([3.0, 1.0, 1.0, 2.0])})["a"]  # average ranks 4, 1.5, 1.5, 3
    torch.testing.assert_close(ranks, torch.tensor([1.0, 0.5 / 3, 0.5 / 3, 2 / 3], dtype=torch.float64))


def test_score_features_are_the_criteria_scaled_to_0_1_per_layer():
    model, ctx = small_mlp(), image_ctx()
    mask = Mask.ones(model)
    spec = FeatureSpec(ranks=True)
    got = compute_features(model, mask, ctx, spec)
    assert list(got) == ["magnitude", "snip", "grasp", "synflow", *(f"rank_{c}" for c in spec.criteria)]
    for name in spec.criteria:
        raw = score(name, model, mask, ctx)
        for layer, s in raw.items():
            expected = (s.double() - s.min()) / (s.max() - s.min())
            torch.testing.assert_close(got[name][layer], expected)
            assert float(got[name][layer].min()) == 0.0 and float(got[name][layer].max()) == 1.0
            assert float(got[f"rank_{name}"][layer].min()) >= 0.0 and float(got[f"rank_{name}"][layer].max()) == 1.0


def test_activation_features_equal_an_explicit_loop_over_samples():
    model, data = tiny_net(), batches()
    mask = Mask(
        {"0.weight": torch.ones(3, 4, dtype=torch.bool), "2.weight": torch.tensor([[1, 0, 1], [1, 1, 0]]).bool()}
    )
    stats = activation_stats(model, mask, data)
    w0, b0 = model[0].weight.detach(), model[0].bias.detach()
    w2, b2 = model[2].weight.detach() * mask["2.weight"], model[2].bias.detach()
    samples = torch.cat([x for x, _ in data])
    # layer 0: input neuron j is pixel j; output neuron i its pre-activation; layer 2: input = ReLU(h)
    h = [samples[n] @ w0.T + b0 for n in range(len(samples))]
    a = [torch.relu(v) for v in h]
    o = [a[n] @ w2.T + b2 for n in range(len(samples))]
    for i in range(3):
        for j in range(4):
            assert stats["in_max"]["0.weight"][i, j] == max(float(samples[n, j]) for n in range(len(samples)))
            assert stats["out_max"]["0.weight"][i, j] == pytest.approx(max(float(v[i]) for v in h))
            assert stats["in_mean"]["0.weight"][i, j] == pytest.approx(
                sum(float(samples[n, j]) for n in range(len(samples))) / len(samples)
            )
    for i in range(2):
        for j in range(3):
            assert stats["in_mean"]["2.weight"][i, j] == pytest.approx(sum(float(v[j]) for v in a) / len(a))
            assert stats["out_mean"]["2.weight"][i, j] == pytest.approx(sum(float(v[i]) for v in o) / len(o))
            assert stats["out_max"]["2.weight"][i, j] == pytest.approx(max(float(v[i]) for v in o))


def test_extended_features_weight_norm_and_network_wide_scaling():
    model, data = tiny_net(), batches()
    mask = Mask(
        {"0.weight": torch.ones(3, 4, dtype=torch.bool), "2.weight": torch.tensor([[1, 0, 1], [1, 1, 0]]).bool()}
    )
    got = compute_features(model, mask, ScoringContext(batches=data, input_shape=(4,)), FeatureSpec(extended=True))
    assert list(got)[-len(EXTENDED) :] == list(EXTENDED)
    w = {k: p.detach() * mask[k] for k, p in prunable_parameters(model).items()}
    norms = {k: float(torch.sqrt((v**2).sum())) for k, v in w.items()}
    lo, hi = min(norms.values()), max(norms.values())
    for k in w:
        assert torch.allclose(got["layer_norm"][k], torch.full_like(w[k], (norms[k] - lo) / (hi - lo)))
    torch.testing.assert_close(got["weight"], scale_global(w))
    torch.testing.assert_close(got["in_max"], scale_global(activation_stats(model, mask, data)["in_max"]))
    for column in EXTENDED:
        every = torch.cat([v.flatten() for v in got[column].values()])
        assert float(every.min()) >= 0 and float(every.max()) <= 1


def test_conv_channel_statistics_with_groups():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 6, 3, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 3 * 3, 2)).double()
    data = batches(in_shape=(4, 5, 5))
    stats = activation_stats(model, Mask.ones(model), data)
    x = torch.cat([b for b, _ in data])
    y = model[0](x).detach()
    # output channel o of group o // 3 reads input channels 2 * (o // 3) + j
    for o in range(6):
        for j in range(2):
            c = 2 * (o // 3) + j
            assert torch.all(stats["in_max"]["0.weight"][o, j] == x[:, c].max())
            assert torch.allclose(stats["in_mean"]["0.weight"][o, j], x[:, c].mean().expand(3, 3))
        assert torch.all(stats["out_max"]["0.weight"][o] == y[:, o].max())


def test_features_score_the_masked_network_and_leave_the_model_alone():
    model, ctx = small_mlp(), image_ctx()
    mask = Mask(
        {
            k: torch.rand(v.shape, generator=torch.Generator().manual_seed(3)) < 0.5
            for k, v in prunable_parameters(model).items()
        }
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spec = FeatureSpec(ranks=True, extended=True)
    got = compute_features(model, mask, ctx, spec)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    zeroed = mask.apply(initialize(build_model("mlp:784-16-10", input_shape=(1, 28, 28)), seed=0))
    again = compute_features(zeroed, mask, ctx, spec)
    for column in got:
        torch.testing.assert_close(got[column], again[column])


# ---- regressors ---------------------------------------------------------------------------------------


def linear_frame(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4)).astype(np.float32)
    frame = pd.DataFrame(x, columns=["magnitude", "snip", "grasp", "synflow"])
    frame["target"] = (0.1 * x[:, 0] + 0.3 * x[:, 1] - 0.2 * x[:, 2] + 0.5 * x[:, 3] + 0.2).astype(np.float64)
    frame.attrs["ticketlab"] = {"features": ["magnitude", "snip", "grasp", "synflow"], "target": "scores"}
    return frame


def test_exact_linear_target_is_fitted_and_every_model_reloads_identically(tmp_path):
    frame = linear_frame()
    result, fitted = fit_models(frame, tmp_path, params=FAST)
    rows = result.set_index("model")
    assert list(rows.index) == ["linear", "sgd", "tree", "forest", "mlp"]
    assert rows.loc["linear", "r2_train"] > 1 - 1e-9 and rows.loc["linear", "r2_test"] > 1 - 1e-9
    assert rows.loc["linear", "mse_test"] < 1e-12
    assert rows.loc["tree", "r2_train"] == 1.0  # an unlimited tree memorises (000 table 5.2)
    assert rows.loc["tree", "r2_test"] < 1.0
    x = frame[["magnitude", "snip", "grasp", "synflow"]].to_numpy(np.float32)
    for name, model in fitted.items():
        again = MetaModel.load(tmp_path / f"{name}.json")
        assert np.array_equal(model.predict(x), again.predict(x)), name
        assert again.columns == model.columns and again.info["metrics"]["r2_test"] == rows.loc[name, "r2_test"]
    assert (tmp_path / "mlp.safetensors").exists() and (tmp_path / "forest.skops").exists()
    assert MetaModel.load(tmp_path / "mlp.safetensors").columns == model.columns  # by the model file too
    mlp = fitted["mlp"].predict(x)
    assert ((mlp > 0) & (mlp < 1)).all()  # sigmoid output


def test_split_is_seeded_disjoint_and_complete():
    train, test = split_rows(100, 0.2, seed=5)
    assert len(test) == 20 and not set(train) & set(test) and sorted([*train, *test]) == list(range(100))
    assert np.array_equal(split_rows(100, 0.2, seed=5)[1], test) and not np.array_equal(
        split_rows(100, 0.2, 6)[1], test
    )
    with pytest.raises(ValueError, match="test_size"):
        split_rows(100, 1.0, 0)


def test_feature_sets_and_errors():
    frame = linear_frame(50)
    assert select_columns(frame, "base") == ["magnitude", "snip", "grasp", "synflow"]
    assert select_columns(frame, ["snip"]) == ["snip"]
    with pytest.raises(ValueError, match="extended"):
        select_columns(frame, "extended")
    with pytest.raises(ValueError, match="allowed"):
        fit_models(frame, models=["linear", "boosting"])
    with pytest.raises(ValueError, match="mlp params"):
        fit_models(frame, models=["mlp"], params={"mlp": {"epoch": 1}})


# ---- the criterion meta:<path> ------------------------------------------------------------------------


def fit_on_features(tmp_path, spec=FeatureSpec()):
    """A linear meta model fitted on the features of the tiny MLP with the SynFlow feature as target."""
    model, ctx = small_mlp(), image_ctx()
    mask = Mask.ones(model)
    values = compute_features(model, mask, ctx, spec)
    x = feature_matrix(values, spec.columns(), list(mask))
    frame = pd.DataFrame(x, columns=spec.columns())
    frame["target"] = x[:, spec.columns().index("synflow")] * 0.5 + x[:, 0] * 0.25
    frame.attrs["ticketlab"] = {"features": spec.columns(), "target": "scores"}
    fit_models(frame, tmp_path, models=["linear"])
    return tmp_path / "linear.json"


def test_meta_criterion_returns_the_models_predictions(tmp_path):
    path = fit_on_features(tmp_path, FeatureSpec(extended=True))
    model, ctx = small_mlp(), image_ctx()
    mask = Mask(
        {
            k: torch.rand(v.shape, generator=torch.Generator().manual_seed(1)) < 0.7
            for k, v in prunable_parameters(model).items()
        }
    )
    name = f"meta:{path}"
    assert parse(name) == name and is_data_aware(name)
    got = score(name, model, mask, ctx)
    assert list(got) == list(mask)
    meta = load_meta_model(path)
    features = compute_features(model, mask, ctx, FeatureSpec(extended=True))
    expected = meta.predict(feature_matrix(features, meta.columns, list(mask)))
    start = 0
    for k, s in got.items():
        assert s.shape == mask[k].shape and torch.isfinite(s).all()
        assert (s[~mask[k]] == 0).all()  # pruned weights carry no signal
        flat = torch.as_tensor(expected[start : start + s.numel()]).reshape(s.shape)
        torch.testing.assert_close(s[mask[k]], flat[mask[k]])
        start += s.numel()
    stacked = score(f"stacked({name}, synflow)", model, mask, ctx)
    assert all(torch.isfinite(v).all() for v in stacked.values())


def test_meta_names_parse_keep_the_path_case_and_fail_early(tmp_path):
    path = fit_on_features(tmp_path)
    upper = tmp_path / "Models"
    upper.mkdir()
    (upper / "linear.json").write_text(path.read_text())
    (upper / "linear.skops").write_bytes((tmp_path / "linear.skops").read_bytes())
    assert parse(f"META:{upper}/linear.json") == f"meta:{upper}/linear.json"
    assert parse(f"stacked(SNIP, meta:{upper}/linear.json)") == ("snip", f"meta:{upper}/linear.json", False)
    with pytest.raises(FileNotFoundError, match="no fitted meta model"):
        parse(f"meta:{tmp_path}/missing.json")
    with pytest.raises(ValueError, match="malformed"):
        parse("meta:")
    with pytest.raises(ValueError, match="takes no argument"):
        parse("snip:3")


def test_a_oneshot_run_with_the_meta_criterion_completes(tmp_path):
    path = fit_on_features(tmp_path / "models")
    spec = ExperimentSpec(
        model="mlp:784-16-10",
        dataset="synthetic",
        val_size=200,
        recipe=Recipe(steps="10it", eval_every=None),
        method=MethodSpec(name="oneshot", criterion=f"meta:{path}"),
        densities=(0.1,),
    )
    result = run_experiment(spec, tmp_path / "runs", device="cpu")
    level = result.table().set_index("level").loc[1]
    assert level["kept"] == round(0.1 * level["total"]) and level["test_acc"] is not None


# ---- table and CLI --------------------------------------------------------------------------------------


def test_table_targets_are_the_reference_tickets_and_features_the_stored_init(tmp_path):
    reference = MethodSpec(name="synflow", rounds=3)  # UMS: cheap, no training before its ticket
    kw = dict(
        density=0.2,
        reference=reference,
        recipe=Recipe(steps="5it", eval_every=None),
        val_size=200,
        root=tmp_path,
        device="cpu",
    )
    frame = build_table("mlp:784-16-10", "synthetic", target="mask", **kw)
    spec = ExperimentSpec(
        model="mlp:784-16-10",
        dataset="synthetic",
        val_size=200,
        recipe=kw["recipe"],
        method=reference,
        densities=(0.2,),
    )
    mask = Mask.load(tmp_path / spec.run_id() / "level_01" / "mask.safetensors")
    layers = list(frame["layer"].cat.categories)  # model order
    assert layers == ["layers.0.weight", "layers.1.weight"] and sorted(mask) == layers
    assert np.array_equal(
        frame["target"].to_numpy(), np.concatenate([mask[k].flatten().numpy() for k in layers]).astype(np.float32)
    )
    assert frame["target"].sum() == mask.kept()
    assert list(frame.columns) == ["seed", "layer", "index", "magnitude", "snip", "grasp", "synflow", "target"]
    init = next((tmp_path / "inits").iterdir())
    from ticketlab.files import load_tensors

    weights = load_tensors(init)[0]
    first = frame[frame["layer"] == "layers.0.weight"]
    w = weights["layers.0.weight"].abs().flatten().double()
    np.testing.assert_allclose(first["magnitude"].to_numpy(), ((w - w.min()) / (w.max() - w.min())).numpy(), rtol=1e-6)
    scores = build_table("mlp:784-16-10", "synthetic", target="scores", seeds=(0, 1), **kw)
    assert set(scores["seed"]) == {0, 1} and len(scores) == 2 * len(frame)
    for _, group in scores.groupby(["seed", "layer"], observed=True):
        assert group["target"].min() == 0 and group["target"].max() == 1
    for suffix in (".csv.gz", ".parquet"):
        if suffix == ".parquet":
            pytest.importorskip("pyarrow")
        back = load_table(save_table(scores, tmp_path / f"table{suffix}"))
        assert back.attrs == scores.attrs
        np.testing.assert_array_equal(back["target"].to_numpy(np.float32), scores["target"].to_numpy())


def test_cli_build_fit_and_prune_with_the_fitted_model(tmp_path):
    runner = CliRunner()
    table = tmp_path / "table.csv.gz"
    result = runner.invoke(cli.app, [
        "meta", "build", "--model", "mlp:784-16-10", "--dataset", "synthetic", "--density", "0.2", "--reference",
        "synflow", "--rounds", "3", "--steps", "5it", "--val-size", "200", "--extended", "--ranks",
        "--runs", str(tmp_path / "runs"), "--out", str(table), "--device", "cpu",
    ], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "rank_synflow" in result.output and table.exists()
    models = tmp_path / "models"
    result = runner.invoke(cli.app, [
        "meta", "fit", str(table), "--out", str(models), "--features", "extended",
        "-p", "forest.n_estimators=3", "-p", "mlp.epochs=1",
    ], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("linear", "sgd", "tree", "forest", "mlp"):
        assert f"│ {name}" in result.output and (models / f"{name}.json").exists()
    assert "R² (held-out)" in result.output and "MSE (held-out)" in result.output
    metrics = json.loads((models / "metrics.json").read_text())
    assert len(metrics["features"]) == 14
    result = runner.invoke(cli.app, [
        "prune", "--model", "mlp:784-16-10", "--dataset", "synthetic", "--method", "oneshot", "--criterion",
        f"meta:{models}/mlp.json", "--density", "0.2", "--steps", "5it", "--val-size", "200",
        "--out", str(tmp_path / "runs"), "--device", "cpu",
    ], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli.app, ["meta", "fit", str(table), "--models", "linear,boosting"])
    assert result.exit_code == 2 and "allowed: linear, sgd, tree, forest, mlp" in result.output


@pytest.mark.parametrize("command", [["meta"], ["meta", "build"], ["meta", "fit"]])
def test_meta_help(command):
    result = CliRunner().invoke(cli.app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output
