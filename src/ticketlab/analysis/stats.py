"""Statistics over seeds: mean ± std per ticket kind and density, Welch's t-test stars vs a baseline.

A "ticket kind" (``label``) is one set-up: every spec field except the seed and the fields that cannot
change a level's numbers (:data:`NOT_SETUP`), the scoring rounds that ran, the environment that can change
the numbers (CPU threads, device, BLAS, torch ...: the run id stays the spec's, so levels of one spec
trained under two environments are two set-ups), plus the control. Its label names the method, its criterion
and control, and every other set-up field on which the results differ (``lottery · lr=0.02``,
``synflow on saw:snip``), so runs of different set-ups are never averaged as if they were seeds. Within a
kind, a seed counts once: the same seed's level recorded by two runs (e.g. one with and one without a
control) is one sample, not two. Densities are grouped by the level's target density (iterative levels
land on exact counts k = round(d·N), so the measured density differs slightly between models), rounded to
4 significant digits.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pandas as pd
from scipy import stats as sps

from ticketlab.analysis.results import TICKET, is_ticket
from ticketlab.config.spec import MethodSpec
from ticketlab.methods import resolve_criterion

ALPHA = 0.05  # 000 §4.3: significance threshold, as Tanaka et al. 2020

# Spec fields that do not change a level's numbers: the seed (what seeds are for), which other densities
# and controls the run also computed (each is its own row), whether scores were saved, TensorBoard export.
NOT_SETUP = frozenset({"seed", "densities", "controls", "save_scores"})
# Fields the label already shows, or that are aliases of shown ones.
SHOWN = frozenset({"method", "criterion", "method.name", "method.criterion", "control"})
# Column prefixes of the set-up: the spec's fields (``load_results`` flattens them to dotted names), the
# scoring rounds that ran (``rounds``) and the environment that can change the numbers (``env.*``:
# torch, device, processor, threads, BLAS, ticketlab version; ``ticketlab.hardware.environment``).
SPEC_FIELDS = (
    "model",
    "dataset",
    "init",
    "val_size",
    "split_seed",
    "bn_momentum",
    "bn_eps",
    "dropout",
    "exempt",
    "recipe",
    "method",
    "end_on_best",
    "rounds",
    "env",
)


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
    """The columns of ``frame`` that define a set-up (see :data:`SPEC_FIELDS`). Where the rounds that ran
    are known (``rounds``), the spec's ``method.rounds`` (unset = the method's default) is not one: SynFlow
    left at its default and SynFlow with ``rounds: 100`` ran the same."""
    return [
        c
        for c in frame.columns
        if c.split(".")[0] in SPEC_FIELDS
        and c not in NOT_SETUP
        and c not in SHOWN
        and not (c == "method.rounds" and "rounds" in frame.columns)
    ]


def varying_fields(frame: pd.DataFrame) -> list[str]:
    """The set-up fields whose value differs between rows; for the environment (``env.*``), between the rows
    that recorded one (levels recorded before it was have none: their label says ``env=?``)."""
    recorded = env_recorded(frame)
    return [
        c
        for c in setup_fields(frame)
        if (frame.loc[recorded, c] if c.startswith("env.") else frame[c]).map(_text).nunique() > 1
    ]


def env_recorded(frame: pd.DataFrame) -> pd.Series:
    """Whether each row recorded the environment its level ran in."""
    columns = [c for c in frame.columns if c.startswith("env.")]
    return frame[columns].map(_text).ne("").any(axis=1) if columns else pd.Series(False, index=frame.index)


GLOBAL = ("rounds", "method.rounds", "init", "model", "dataset")  # named wherever the results mix them
# Fields that vary from level to level within one run (``env.sparse_path``: the levels that took the sparse
# path, ``training.sparse``): they split a ticket kind only where one of its density cells mixes them, so a
# run whose sparser levels took the path stays one curve, and no cell pools the two set-ups.
PER_CELL = frozenset({"env.sparse_path"})


def _mixed_in_a_cell(frame: pd.DataFrame, col: str) -> bool:
    """Whether some (control, density) cell of ``frame`` holds rows with different values of ``col``."""
    keys = [frame["control"].map(_text) if "control" in frame else pd.Series("", index=frame.index), density_key(frame)]
    return bool((frame[col].map(_text).groupby(keys).nunique() > 1).any())


@cache
def _implied_criterion(method: str) -> str | None:
    """The criterion the method name alone implies (magnitude for iterative methods, the name itself for
    the criterion shorthand), which the label leaves out; None for methods that need one named."""
    try:
        return resolve_criterion(MethodSpec(name=method))
    except ValueError:
        return None


def _base(row: pd.Series) -> str:
    method, criterion = _text(row.get("method")), _text(row.get("criterion"))
    return method + (f"({criterion})" if criterion and criterion != _implied_criterion(method) else "")


def _field_text(col: str, row: pd.Series) -> str:
    """How a varying set-up field reads in a label."""
    value = _text(row.get(col))
    if col in ("rounds", "method.rounds"):  # e.g. IMS beside ISS, one-shot SynFlow beside 100 rounds
        return f" ×{int(row[col])}" if value and int(row[col]) > 1 else ""
    if col == "init":
        return f" on {value}"
    if col in ("model", "dataset"):
        return f" · {value}"
    return f" · {col.removeprefix('recipe.').removeprefix('method.options.').removeprefix('env.')}={value}"


def labels(frame: pd.DataFrame) -> pd.Series:
    """One readable name per ticket kind, e.g. ``lottery``, ``multishot(synflow) [reinit]``,
    ``snip on xavier``, ``lottery · lenet300``, ``lottery(snip) ×10``, ``lottery · lr=0.02``,
    ``snip · threads=2``. Init, model, dataset and rounds are named wherever the results mix them; any
    other set-up field where it differs between rows of the same method and criterion (a field one method
    ignores, e.g. K for one-shot SNIP, does not split another). Levels recorded before the environment was
    read ``env=?`` beside those of the same kind that recorded it."""
    if not len(frame):
        return pd.Series([], dtype=str)
    base = frame.apply(_base, axis=1)
    shared = [c for c in varying_fields(frame) if c in GLOBAL]
    own = {
        b: [
            c
            for c in varying_fields(frame[base == b])
            if c not in GLOBAL and (c not in PER_CELL or _mixed_in_a_cell(frame[base == b], c))
        ]
        for b in base.unique()
    }

    recorded = env_recorded(frame)
    mixed = {b: bool(recorded[base == b].any()) for b in base.unique()}  # some of the kind's rows have an env

    def one(row: pd.Series, name: str, has_env: bool) -> str:
        text = name + "".join(
            _field_text(col, row) for col in [*shared, *own[name]] if has_env or not col.startswith("env.")
        )
        text += " · env=?" if mixed[name] and not has_env else ""
        control = row.get("control")
        return text + ("" if is_ticket(control) else f" [{control}]")

    return pd.Series(
        [one(row, name, has) for (_, row), name, has in zip(frame.iterrows(), base, recorded)], index=frame.index
    )


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``label`` and ``density_key`` columns added (a copy; control ``"ticket"`` for the
    ticket, also where a table of an older version left it empty or NaN). A frame
    that already has labels keeps them: a part of a tidy frame (e.g. one model's rows) keeps the labels of
    the whole, which name what differs in the whole (``lottery · lenet5``, not ``lottery``)."""
    out = frame.copy()
    if "control" not in out:
        out["control"] = TICKET
    out["control"] = out["control"].map(lambda c: TICKET if is_ticket(c) else _text(c))
    if "label" not in out:
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
    """The label of the baseline: an exact label, else the one ticket (no control) whose method, whose
    ``method(criterion)`` or whose criterion is ``baseline`` (``snip`` finds ``oneshot(snip)``), tried in
    that order; several tickets matching, or none, is a ValueError listing them or the labels."""
    t = tidy(frame)
    names = sorted(t["label"].unique())
    if baseline in names:
        return baseline
    tickets = t[t["control"] == TICKET]
    keys = {
        "method": tickets["method"].map(_text) if "method" in tickets else None,
        "method(criterion)": tickets.apply(_base, axis=1) if len(tickets) else None,
        "criterion": tickets["criterion"].map(_text) if "criterion" in tickets else None,
    }
    for what, key in keys.items():
        if key is None:
            continue
        matches = sorted(tickets.loc[key == baseline, "label"].unique())
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ValueError(f"baseline: {what} {baseline!r} names several tickets, pick one of: {', '.join(matches)}")
    raise ValueError(
        f"baseline: {baseline!r} is not a method, criterion or ticket in the results; allowed: {', '.join(names)}"
    )


PREFERRED_BASELINE = "lottery"  # IMP, the lottery ticket hypothesis' own method (003)


def default_baseline(frame: pd.DataFrame, metric: str = "test_acc") -> tuple[str, str]:
    """The baseline when none is given, and why: the lottery ticket (IMP) where the results have one (the
    label ``lottery`` where several lottery kinds exist, e.g. ``lottery(movement)`` beside it), else the
    ticket kind (no control) with the most samples (density x seed) of ``metric``, so that most
    cells can be tested; among equals the first by name. Returns (label, reason)."""
    t = samples(frame, metric)
    tickets = t[t["control"] == TICKET]
    if tickets.empty:
        raise ValueError(f"baseline: no ticket has a value of {metric!r}; give --baseline")
    counts = tickets.groupby("label").size()
    lottery = sorted(tickets.loc[tickets["method"].map(_text) == PREFERRED_BASELINE, "label"].unique())
    if PREFERRED_BASELINE in lottery or len(lottery) == 1:  # plain "lottery": IMP with magnitude pruning
        return (PREFERRED_BASELINE if PREFERRED_BASELINE in lottery else lottery[0]), "the lottery ticket (IMP)"
    pool = lottery or sorted(counts.index)
    best = max(pool, key=lambda label: counts[label])  # first of the largest: sorted by name
    if lottery:
        return best, "of the lottery tickets, the one with the most samples"
    return best, "no lottery ticket in the results: the ticket kind with the most samples (density x seed)"


def significance_table(
    frame: pd.DataFrame, baseline: str, metric: str = "test_acc", alpha: float = ALPHA
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The table of 000 figure 5.14: one row per ticket kind, one column per density, cells the mean
    ``metric`` over seeds, and ``p < alpha`` of Welch's t-test against the baseline at the same density
    marked. Rows are sorted by the mean at the lowest density, best first, as in 5.14; columns run densest
    first, as every table and plot of a report (5.14 itself runs sparsest first).

    Returns (means, p-values, significant) frames with the same index (label) and columns (density).
    """
    base = baseline_label(frame, baseline)
    t = samples(frame, metric)
    means = t.pivot_table(index="label", columns="density_key", values=metric, aggfunc="mean")
    means = means.reindex(sorted(means.columns, reverse=True), axis=1)
    pvalues = pd.DataFrame(np.nan, index=means.index, columns=means.columns)
    groups = {key: g[metric].to_numpy() for key, g in t.groupby(["label", "density_key"])}
    for label in means.index:
        if label == base:
            continue
        for d in means.columns:
            if (label, d) in groups and (base, d) in groups:
                pvalues.loc[label, d] = welch_p(groups[(label, d)], groups[(base, d)])
    significant = pvalues < alpha
    order = (
        means.iloc[:, -1].sort_values(ascending=False, na_position="last").index if len(means.columns) else means.index
    )
    return means.loc[order], pvalues.loc[order], significant.loc[order]


def format_significance(means: pd.DataFrame, significant: pd.DataFrame, scale: float = 100.0) -> pd.DataFrame:
    """Cells as 5.14 prints them: ``91.86*`` (percent, two decimals, ``*`` = significant), ``–`` if absent."""
    out = pd.DataFrame("–", index=means.index, columns=[f"{c:g}" for c in means.columns])
    for i, _label in enumerate(means.index):
        for j, _d in enumerate(means.columns):
            value = means.iat[i, j]
            if pd.notna(value):
                out.iat[i, j] = f"{value * scale:.2f}" + ("*" if bool(significant.iat[i, j]) else "")
    out.index.name = "ticket"
    return out


def winning_table(frame: pd.DataFrame) -> pd.DataFrame:
    """003's winning-ticket flag per ticket kind and density: ``k/n`` of the seeds whose ticket, at its
    early-stop step, matched the dense run's test accuracy at the dense run's early-stop step no later than
    that step (``–``: flag not computable). A seed counts once: runs of one set-up that differ only in their
    densities share the dense level."""
    t = tidy(frame)
    if "winning" not in t:
        return pd.DataFrame()
    columns = sorted(t["density_key"].unique(), reverse=True)
    out = pd.DataFrame("–", index=sorted(t["label"].unique()), columns=[f"{c:g}" for c in columns])
    t = t[t["winning"].notna()]
    if "seed" in t:
        t = t.drop_duplicates(subset=["label", "density_key", "seed"], keep="first")
    for (label, d), g in t.groupby(["label", "density_key"]):
        flags = [bool(v) for v in g["winning"] if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if flags:
            out.loc[label, f"{d:g}"] = f"{sum(flags)}/{len(flags)}"
    out.index.name = "ticket"
    return out
