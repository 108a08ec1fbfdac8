"""Statistics over seeds: mean ± std per ticket kind and density, Welch's t-test stars vs a baseline.

A "ticket kind" (``label``) is one set-up: every spec field except the seed and the fields that cannot
change a level's numbers (:data:`NOT_SETUP`), plus the control. Its label names the method, its criterion
and control, and every other set-up field on which the results differ (``lottery · lr=0.02``,
``synflow on saw:snip``), so runs of different set-ups are never averaged as if they were seeds. Within a
kind, a seed counts once: the same seed's level recorded by two runs (e.g. one with and one without a
control) is one sample, not two. Densities are grouped by the level's target density (iterative levels
land on exact counts k = round(d·N), so the measured density differs slightly between models), rounded to
4 significant digits.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from ticketlab.analysis.results import TICKET, is_ticket

ALPHA = 0.05  # 000 §4.3: significance threshold, as Tanaka et al. 2020

# Spec fields that do not change a level's numbers: the seed (what seeds are for), which other densities
# and controls the run also computed (each is its own row), whether scores were saved, TensorBoard export.
NOT_SETUP = frozenset({"seed", "densities", "controls", "save_scores"})
# Fields the label already shows, or that are aliases of shown ones.
SHOWN = frozenset({"method", "criterion", "method.name", "method.criterion", "control"})
SPEC_FIELDS = ("model", "dataset", "init", "val_size", "split_seed", "bn_momentum", "bn_eps", "dropout", "exempt",
               "recipe", "method", "end_on_best")


def density_key(frame: pd.DataFrame) -> pd.Series:
    """The density a row is grouped under: its target density where recorded, else its measured one."""
    measured = frame["density"].astype(float)
    if "target_density" in frame:
        key = frame["target_density"].astype(float).where(frame["target_density"].notna(), measured)
    else:
        key = measured
    return key.map(lambda d: float(f"{d:.4g}"))


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def setup_fields(frame: pd.DataFrame) -> list[str]:
    """The spec columns of ``frame`` (``load_results`` flattens specs to dotted names) that define a set-up."""
    return [
        c for c in frame.columns
        if c.split(".")[0] in SPEC_FIELDS and c not in NOT_SETUP and c not in SHOWN
    ]


def varying_fields(frame: pd.DataFrame) -> list[str]:
    """The set-up fields whose value differs between rows."""
    return [c for c in setup_fields(frame) if frame[c].map(_text).nunique() > 1]


GLOBAL = ("method.rounds", "init", "model", "dataset")  # named wherever the results mix them


def _base(row: pd.Series) -> str:
    criterion = _text(row.get("criterion"))
    return _text(row.get("method")) + (f"({criterion})" if criterion else "")


def labels(frame: pd.DataFrame) -> pd.Series:
    """One readable name per ticket kind, e.g. ``lottery``, ``multishot(synflow) [reinit]``,
    ``snip on xavier``, ``lottery · lenet300``, ``lottery(snip) ×10``, ``lottery · lr=0.02``. Init, model,
    dataset and rounds are named wherever the results mix them; any other set-up field where it differs
    between rows of the same method and criterion (a field one method ignores, e.g. K for one-shot SNIP,
    does not split another)."""
    if not len(frame):
        return pd.Series([], dtype=str)
    base = frame.apply(_base, axis=1)
    shared = [c for c in varying_fields(frame) if c in GLOBAL]
    own = {b: [c for c in varying_fields(frame[base == b]) if c not in GLOBAL] for b in base.unique()}

    def one(row: pd.Series, name: str) -> str:
        text = name
        for col in [*shared, *own[name]]:
            value = _text(row.get(col))
            if col == "method.rounds":  # e.g. IMS beside ISS
                text += f" ×{int(row[col])}" if int(row.get(col) or 1) > 1 else ""
            elif col == "init":
                text += f" on {value}"
            elif col in ("model", "dataset"):
                text += f" · {value}"
            else:
                text += f" · {col.removeprefix('recipe.').removeprefix('method.options.')}={value}"
        control = row.get("control")
        return text + ("" if is_ticket(control) else f" [{control}]")

    return pd.Series([one(row, name) for (_, row), name in zip(frame.iterrows(), base)], index=frame.index)


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``label`` and ``density_key`` columns added (a copy; control ``"ticket"`` for the
    ticket, also where a table of an older version left it empty)."""
    out = frame.copy()
    if "control" not in out:
        out["control"] = TICKET
    out["control"] = out["control"].map(lambda c: TICKET if is_ticket(c) else _text(c))
    out["label"] = labels(out)
    out["density_key"] = density_key(out)
    return out


def samples(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The tidy rows that are samples of ``metric``: one per ticket kind, density and seed."""
    t = tidy(frame)
    t = t[t[metric].notna()]
    if "seed" in t:
        t = t.drop_duplicates(subset=["label", "density_key", "seed"], keep="first")
    return t


def summarize(frame: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """Mean, std (ddof=1, NaN for one seed) and count of ``metric`` per label and density, plus the mean
    kept-weight count (for accuracy vs parameter count) and the model."""
    t = samples(frame, metric)
    agg = {"mean": (metric, "mean"), "std": (metric, "std"), "n": (metric, "size")}
    if "kept" in t:
        agg["kept"] = ("kept", "mean")
    if "model" in t:
        agg["model"] = ("model", "first")
    out = t.groupby(["label", "density_key"], sort=True).agg(**agg).reset_index()
    return out.sort_values(["label", "density_key"], ascending=[True, False], kind="stable").reset_index(drop=True)


def welch_p(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> float:
    """Two-sided Welch's t-test p-value (unequal variances). NaN when a side has fewer than two values or
    both sides are constant (no variance: the test is undefined)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    if np.var(a) == 0 and np.var(b) == 0:
        return float("nan")
    return float(sps.ttest_ind(a, b, equal_var=False).pvalue)


def baseline_label(frame: pd.DataFrame, baseline: str) -> str:
    """The label of the baseline: an exact label, or a method name whose ticket (no control) has one
    label; anything else is a ValueError listing the labels."""
    t = tidy(frame)
    names = sorted(t["label"].unique())
    if baseline in names:
        return baseline
    matches = sorted(t.loc[(t["method"] == baseline) & (t["control"] == TICKET), "label"].unique())
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValueError(f"baseline: method {baseline!r} names several tickets, pick one of: {', '.join(matches)}")
    raise ValueError(f"baseline: {baseline!r} is not a method or ticket in the results; allowed: {', '.join(names)}")


def significance_table(
    frame: pd.DataFrame, baseline: str, metric: str = "test_acc", alpha: float = ALPHA
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The table of 000 figure 5.14: one row per ticket kind, one column per density (ascending), cells
    the mean ``metric`` over seeds, and ``p < alpha`` of Welch's t-test against the baseline at the same
    density marked. Rows are sorted by the mean at the lowest density, best first, as in 5.14.

    Returns (means, p-values, significant) frames with the same index (label) and columns (density).
    """
    base = baseline_label(frame, baseline)
    t = samples(frame, metric)
    means = t.pivot_table(index="label", columns="density_key", values=metric, aggfunc="mean")
    means = means.reindex(sorted(means.columns), axis=1)
    pvalues = pd.DataFrame(np.nan, index=means.index, columns=means.columns)
    groups = {key: g[metric].to_numpy() for key, g in t.groupby(["label", "density_key"])}
    for label in means.index:
        if label == base:
            continue
        for d in means.columns:
            if (label, d) in groups and (base, d) in groups:
                pvalues.loc[label, d] = welch_p(groups[(label, d)], groups[(base, d)])
    significant = pvalues < alpha
    order = means.iloc[:, 0].sort_values(ascending=False, na_position="last").index if len(means.columns) else means.index
    return means.loc[order], pvalues.loc[order], significant.loc[order]


def format_significance(means: pd.DataFrame, significant: pd.DataFrame, scale: float = 100.0) -> pd.DataFrame:
    """Cells as 5.14 prints them: ``91.86*`` (percent, two decimals, ``*`` = significant), ``–`` if absent."""
    out = pd.DataFrame("–", index=means.index, columns=[f"{c:g}" for c in means.columns])
    for i, label in enumerate(means.index):
        for j, d in enumerate(means.columns):
            value = means.iat[i, j]
            if pd.notna(value):
                out.iat[i, j] = f"{value * scale:.2f}" + ("*" if bool(significant.iat[i, j]) else "")
    out.index.name = "ticket"
    return out


def winning_table(frame: pd.DataFrame) -> pd.DataFrame:
    """003's winning-ticket flag per ticket kind and density: ``k/n`` of the seeds whose ticket matched
    the dense test accuracy no later than the dense run's early-stop step (``–``: flag not computable)."""
    t = tidy(frame)
    if "winning" not in t:
        return pd.DataFrame()
    columns = sorted(t["density_key"].unique(), reverse=True)
    out = pd.DataFrame("–", index=sorted(t["label"].unique()), columns=[f"{c:g}" for c in columns])
    for (label, d), g in t.groupby(["label", "density_key"]):
        flags = [bool(v) for v in g["winning"] if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if flags:
            out.loc[label, f"{d:g}"] = f"{sum(flags)}/{len(flags)}"
    out.index.name = "ticket"
    return out
