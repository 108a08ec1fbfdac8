"""The five regressors of 000 §5.2.2, fitted on a meta table, scored by R² and MSE (tables 5.1-5.3).

``linear`` LinearRegression and ``sgd`` SGDRegressor (000 table 5.1), ``tree`` DecisionTreeRegressor and
``forest`` RandomForestRegressor (table 5.2) with sklearn's defaults, except that the forest defaults to 30
trees with at least 10 samples per leaf: with sklearn's 100 unlimited trees 000's forest took 2 GB on disk;
``mlp`` (table 5.3) is the PyTorch MLP n-64-32-1 with ReLU and a sigmoid output, trained on MSE. 000 used
SGD at lr 0.001 (and reports it did not reach the linear models' loss); our default is Adam at 0.001,
``params={"mlp": {"optimizer": "sgd"}}`` gives 000's. Any constructor argument is overridable the same
way (``{"forest": {"n_estimators": 100}}``).

The held-out split is a seeded random 20% of the rows. A fitted model is saved as ``<name>.json`` (what it
reads: feature columns, target, metrics, the table's metadata) beside ``<name>.skops`` (sklearn, via skops;
joblib if skops is missing) or ``<name>.safetensors`` (the MLP); :meth:`MetaModel.load` takes either path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ticketlab.criteria.features import EXTENDED
from ticketlab.criteria.learned import MetaMLP, MetaModel
from ticketlab.files import atomic_write_json
from ticketlab.metalearn.table import feature_columns
from ticketlab.registry import Registry

REGRESSORS = ("linear", "sgd", "tree", "forest", "mlp")
FOREST_DEFAULTS = {"n_estimators": 30, "min_samples_leaf": 10}
MLP_DEFAULTS = {"hidden": (64, 32), "optimizer": "adam", "lr": 1e-3, "epochs": 10, "batch_size": 1024}


# -- regressors ---------------------------------------------------------------------------------------
Fitter = Callable[[np.ndarray, np.ndarray, dict[str, Any], int], tuple[Any, dict[str, Any]]]
FITTERS: Registry[Fitter] = Registry("meta regressor")


def _sklearn(module: str, cls: str, defaults: dict[str, Any] | None = None, seeded: bool = True) -> Fitter:
    """A fitter for ``module.cls`` (imported when fitting: sklearn is not needed to load an MLP)."""

    def fit(x: np.ndarray, y: np.ndarray, params: dict[str, Any], seed: int) -> tuple[Any, dict[str, Any]]:
        import importlib

        kwargs = {**(defaults or {}), **({"random_state": seed} if seeded else {}), **params}
        return getattr(importlib.import_module(module), cls)(**kwargs).fit(x, y), kwargs

    return fit


FITTERS.register("linear")(_sklearn("sklearn.linear_model", "LinearRegression", seeded=False))
FITTERS.register("sgd")(_sklearn("sklearn.linear_model", "SGDRegressor"))
FITTERS.register("tree")(_sklearn("sklearn.tree", "DecisionTreeRegressor"))
FITTERS.register("forest")(_sklearn("sklearn.ensemble", "RandomForestRegressor", FOREST_DEFAULTS))


@FITTERS.register("mlp")
def fit_mlp(x: np.ndarray, y: np.ndarray, params: dict[str, Any], seed: int) -> tuple[MetaMLP, dict[str, Any]]:
    """Minibatch training on MSE; initialisation and batch order come from ``seed`` alone."""
    unknown = set(params) - set(MLP_DEFAULTS)
    if unknown:
        raise ValueError(f"mlp params: unknown {sorted(unknown)}; allowed: {', '.join(MLP_DEFAULTS)}")
    p = {**MLP_DEFAULTS, **params}
    p["hidden"] = [int(h) for h in p["hidden"]]
    if p["optimizer"] not in ("adam", "sgd"):
        raise ValueError(f"mlp params: optimizer {p['optimizer']!r} is not one of adam, sgd")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MetaMLP(x.shape[1], p["hidden"])
    opt_cls = torch.optim.Adam if p["optimizer"] == "adam" else torch.optim.SGD
    opt = opt_cls(model.parameters(), lr=float(p["lr"]))
    xs, ys = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.float32))
    g = torch.Generator().manual_seed(seed)
    curve = []
    for _ in range(int(p["epochs"])):
        order = torch.randperm(len(xs), generator=g)
        total = 0.0
        for start in range(0, len(xs), int(p["batch_size"])):
            idx = order[start : start + int(p["batch_size"])]
            loss = torch.nn.functional.mse_loss(model(xs[idx]), ys[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        curve.append(total / len(xs))
    model.eval()
    p["train_curve"] = curve  # per-epoch training MSE (000 figure 5.8)
    return model, p


# -- fitting and evaluation ---------------------------------------------------------------------------
def select_columns(frame: pd.DataFrame, features: str | Sequence[str] = "base") -> list[str]:
    """``base``: the criteria scores (and their ranks, if the table has them); ``extended``: every feature
    column (000 appendix B); or an explicit list of columns."""
    available = feature_columns(frame)
    if isinstance(features, str) and features in ("base", "extended"):
        if features == "base":
            return [c for c in available if c not in EXTENDED]
        missing = [c for c in EXTENDED if c not in available]
        if missing:
            raise ValueError(f"features: 'extended' needs a table built with extended features (missing {missing})")
        return available
    columns = [features] if isinstance(features, str) else list(features)
    missing = [c for c in columns if c not in available]
    if missing or not columns:
        raise ValueError(f"features: {missing or columns} not in the table; allowed: base, extended, or of {available}")
    return columns


def split_rows(n: int, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) row indices: a seeded random ``test_size`` fraction is held out."""
    if not 0 < test_size < 1:
        raise ValueError(f"test_size: {test_size} is not in (0, 1)")
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(test_size * n))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def fit_models(
    frame: pd.DataFrame,
    out: str | os.PathLike | None = None,
    *,
    features: str | Sequence[str] = "base",
    models: Sequence[str] = REGRESSORS,
    test_size: float = 0.2,
    seed: int = 0,
    params: dict[str, dict[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[pd.DataFrame, dict[str, MetaModel]]:
    """Fit each regressor on the training rows; one result row per model with R² and MSE on train and
    held-out rows (000 tables 5.1-5.3) and, if ``out`` is given, the saved model's descriptor path."""
    from sklearn.metrics import mean_squared_error, r2_score

    params = params or {}
    unknown = [m for m in [*models, *params] if m not in FITTERS]
    if unknown:
        raise ValueError(f"models: unknown {unknown}; allowed: {', '.join(REGRESSORS)}")
    columns = select_columns(frame, features)
    x = frame[columns].to_numpy(np.float32)
    y = frame["target"].to_numpy(np.float64)
    train_rows, test_rows = split_rows(len(frame), test_size, seed)
    table_meta = frame.attrs.get("ticketlab", {})
    rows, fitted = [], {}
    for name in models:
        started = time.perf_counter()
        estimator, used = FITTERS.get(name)(x[train_rows], y[train_rows], dict(params.get(name, {})), seed)
        fit_time = time.perf_counter() - started
        model = MetaModel(name, columns, estimator)
        pred_train, pred_test = model.predict(x[train_rows]), model.predict(x[test_rows])
        row = {
            "model": name,
            "r2_train": float(r2_score(y[train_rows], pred_train)),
            "r2_test": float(r2_score(y[test_rows], pred_test)),
            "mse_train": float(mean_squared_error(y[train_rows], pred_train)),
            "mse_test": float(mean_squared_error(y[test_rows], pred_test)),
            "fit_time": fit_time,
        }
        model.info = {
            "target": table_meta.get("target"), "params": _jsonable(used), "metrics": dict(row),
            "split": {"test_size": test_size, "seed": seed, "train_rows": len(train_rows), "test_rows": len(test_rows)},
            "table": table_meta,
        }  # fmt: skip
        if out is not None:
            row["path"] = str(model.save(out))
        rows.append(row)
        fitted[name] = model
        if log:
            log(f"{name}: R² train {row['r2_train']:.4f} held-out {row['r2_test']:.4f}, "
                f"MSE train {row['mse_train']:.3g} held-out {row['mse_test']:.3g} ({fit_time:.1f} s)")  # fmt: skip
    result = pd.DataFrame(rows)
    if out is not None:
        atomic_write_json(Path(out) / "metrics.json", {"features": columns, "rows": rows})
    return result, fitted


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)
