"""Search spec fields with Optuna instead of a grid; successive halving stops weak trials early.

A tune file is a ``base`` spec (with ``{name}`` templates where useful, e.g. ``model: "mlp:784-{h}-10"``
for the layer-size search baseline of 004 §3.6) plus a ``search`` of dotted field paths or template
variables mapped to distributions. Every trial is an ordinary run in the run store, so rerunning a
study reads finished trials back instead of training them again.

``trials`` counts distinct points. The sampler can propose a point it has already tried (TPE does so often
in a small categorical space); such a repeat is not trained again and not counted: Optuna is told the earlier
trial's outcome and samples again. The study ends early when a finite space has been tried in full, or when
the sampler proposes only repeats :data:`REPEAT_LIMIT` times in a row.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ticketlab.config.spec import ExperimentSpec
from ticketlab.sweep import instantiate

OBJECTIVES = {"val_acc": "maximize", "val_loss": "minimize"}  # trials are chosen on validation; test is only reported
REPEAT_LIMIT = 50  # proposals in a row that repeat a tried point before the study stops


class Distribution(BaseModel):
    """One of ``{int: [lo, hi]}``, ``{float: [lo, hi], log: true}``, ``{choice: [a, b, ...]}``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    int_: tuple[int, int] | None = Field(None, alias="int")
    float_: tuple[float, float] | None = Field(None, alias="float")
    choice: list[Any] | None = None
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Distribution:
        kinds = [k for k in ("int_", "float_", "choice") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of int: [lo, hi], float: [lo, hi] or choice: [values]")
        bounds = self.int_ or self.float_
        if bounds is not None and bounds[0] > bounds[1]:
            raise ValueError(f"low {bounds[0]} is above high {bounds[1]}")
        if self.choice is not None and not self.choice:
            raise ValueError("choice needs at least one value")
        if self.log and (bounds is None or bounds[0] <= 0):
            raise ValueError("log needs int/float bounds above 0")
        return self

    def size(self) -> float:
        """How many distinct values the distribution can take (``math.inf`` for a continuous float range)."""
        if self.int_ is not None:
            return (self.int_[1] - self.int_[0]) // int(self.step or 1) + 1
        if self.float_ is not None:
            return math.inf if self.step is None else math.floor((self.float_[1] - self.float_[0]) / self.step) + 1
        return len({repr(v) for v in self.choice or ()})

    def suggest(self, trial: Any, name: str) -> Any:
        if self.int_ is not None:
            return trial.suggest_int(name, *self.int_, step=int(self.step or 1), log=self.log)
        if self.float_ is not None:
            return trial.suggest_float(name, *self.float_, step=self.step, log=self.log)
        return trial.suggest_categorical(name, self.choice)


class TuneSpec(BaseModel):
    """A tune file: ``base`` spec, ``search`` space, objective, budget and pruner."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, Distribution]
    objective: Literal["val_acc", "val_loss"] = "val_acc"
    trials: int = Field(20, ge=1)
    pruner: Literal["successive_halving", "none"] = "successive_halving"
    min_resource: int = Field(1, ge=1, description="evaluations before the first successive-halving rung")
    reduction_factor: int = Field(3, ge=2)
    seed: int = 0  # of the sampler
    out: str = "runs"
    device: str = "auto"  # as every command: CUDA where there is one

    @model_validator(mode="after")
    def _search_not_empty(self) -> TuneSpec:
        if not self.search:
            raise ValueError("search: give at least one field or template variable to search")
        return self

    @property
    def direction(self) -> str:
        return OBJECTIVES[self.objective]


def load_tune(path: str | os.PathLike) -> TuneSpec:
    """Read a tune YAML file; each problem is one line naming the file."""
    from ticketlab.config.problems import field_problems
    from ticketlab.config.yamlfile import load_mapping

    data = load_mapping(
        path, "tune file", "a 'base' spec and a 'search', e.g. 'search: {recipe.lr: {float: [0.01, 0.1]}}'"
    )
    try:
        return TuneSpec.model_validate(data)
    except ValidationError as exc:
        raise ValueError(field_problems(exc, f"{path}: ", TuneSpec)) from None


def set_tune_base(spec: TuneSpec, assignments: Iterable[str]) -> TuneSpec:
    """The tune spec with ``--set key=value`` applied to its base (e.g. ``recipe.steps=1ep``); a key that is
    searched is rejected."""
    from ticketlab.config.keyvalue import apply_sets, parse_key_value

    for text in assignments:
        key, _ = parse_key_value(text, "--set", "recipe.steps=1ep")
        if key in spec.search:
            raise ValueError(f"--set {key}: {key!r} is searched by this tune file; change its search instead")
    return spec.model_copy(update={"base": apply_sets(spec.base, assignments)})


@dataclass
class Trial:
    number: int
    params: dict[str, Any]
    state: str  # complete, pruned, failed
    value: float | None
    run_id: str | None
    evaluations: int = 0  # intermediate values reported before it ended
    error: str = ""  # why a failed trial failed (one line)


@dataclass
class TuneResult:
    direction: str
    objective: str
    trials: list[Trial] = field(default_factory=list)  # distinct points, in the order they were tried
    repeats: int = 0  # proposals that repeated a tried point (not trained, not in ``trials``)
    stopped: str = ""  # why the study ended before ``trials`` points ("" when it did not)

    @property
    def best(self) -> Trial | None:
        done = [t for t in self.trials if t.state == "complete" and t.value is not None and not math.isnan(t.value)]
        if not done:
            return None
        pick = max if self.direction == "maximize" else min
        return pick(done, key=lambda t: t.value)


def objective_value(rows: list[dict[str, Any]], objective: str) -> float:
    """The objective of a finished run: its value on the last (sparsest) ticket level, controls aside."""
    tickets = [r for r in rows if not r.get("control")]
    last = max(tickets, key=lambda r: r["level"])
    return float(last[objective])


def tune(
    spec: TuneSpec,
    *,
    out: str | os.PathLike | None = None,
    on_trial: Any = None,
    data_root: str | os.PathLike | None = None,
) -> TuneResult:
    """Run an Optuna study over ``spec.search``: each trial instantiates the base spec with the sampled
    values and runs it; the objective's metric at every evaluation is reported so the successive-halving
    pruner can stop trials that fall behind at a rung."""
    # long: Optuna's study, objective and pruning in one place
    import optuna

    from ticketlab.experiment.run import run_experiment

    root = Path(out if out is not None else spec.out)
    # validate the space before training anything: an impossible field fails now, by name
    probe = {name: _any_value(dist) for name, dist in spec.search.items()}
    instantiate(spec.base, probe)

    # a failed trial is reported through on_trial with its error in one line; optuna would log a traceback
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    pruner = (
        optuna.pruners.SuccessiveHalvingPruner(min_resource=spec.min_resource, reduction_factor=spec.reduction_factor)
        if spec.pruner == "successive_halving"
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        direction=spec.direction, sampler=optuna.samplers.TPESampler(seed=spec.seed), pruner=pruner
    )
    result = TuneResult(spec.direction, spec.objective)
    tried: dict[str, Trial] = {}  # point -> its trial

    def objective(trial: optuna.Trial) -> float:
        params = {name: dist.suggest(trial, name) for name, dist in spec.search.items()}
        earlier = tried.get(_point(params))
        if earlier is not None:  # a repeat: the earlier outcome, nothing trained
            trial.set_user_attr("repeat_of", earlier.number)
            if earlier.state == "complete" and earlier.value is not None:
                return earlier.value
            raise optuna.TrialPruned()
        run_spec: ExperimentSpec = instantiate(spec.base, params)
        trial.set_user_attr("run_id", run_spec.run_id())
        reported = {"n": 0}

        def progress(step: int, total: int, row: dict | None) -> None:
            if row is None or row.get(spec.objective) is None:
                return
            # one resource unit per evaluation, counted across levels, so rungs compare equal training
            trial.report(float(row[spec.objective]), reported["n"])
            reported["n"] += 1
            trial.set_user_attr("evaluations", reported["n"])
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            run = run_experiment(run_spec, root, device=spec.device, data_root=data_root, progress=progress, log=None)
        except (RuntimeError, ValueError) as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            raise
        # a run read back from the store (finished before) reported nothing: count its levels' evaluations
        evaluated = sum(
            h.get(spec.objective) is not None for row in run.rows if not row.get("control") for h in row["history"]
        )
        trial.set_user_attr("evaluations", max(reported["n"], evaluated))
        return objective_value(run.rows, spec.objective)

    def callback(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        if "repeat_of" in frozen.user_attrs:
            result.repeats += 1
            return
        state = {"COMPLETE": "complete", "PRUNED": "pruned"}.get(frozen.state.name, "failed")
        trial = Trial(
            frozen.number,
            dict(frozen.params),
            state,
            frozen.value,
            frozen.user_attrs.get("run_id"),
            frozen.user_attrs.get("evaluations", 0),
            frozen.user_attrs.get("error", ""),
        )
        result.trials.append(trial)
        tried[_point(trial.params)] = trial
        if on_trial is not None:
            on_trial(trial)

    size = math.prod(dist.size() for dist in spec.search.values())
    in_a_row = 0
    while len(result.trials) < spec.trials:
        if len(result.trials) >= size:
            result.stopped = f"every one of the {size} points of the search space was tried"
            break
        if in_a_row >= REPEAT_LIMIT:
            result.stopped = f"the sampler proposed only tried points {REPEAT_LIMIT} times in a row"
            break
        before = len(result.trials)
        study.optimize(objective, n_trials=1, callbacks=[callback], catch=(RuntimeError, ValueError))
        in_a_row = 0 if len(result.trials) > before else in_a_row + 1
    return result


def _point(params: dict[str, Any]) -> str:
    """A point of the search space as a key (values compared as JSON, keys in order)."""
    return json.dumps(params, sort_keys=True, default=repr)


def _any_value(dist: Distribution) -> Any:
    if dist.int_ is not None:
        return dist.int_[0]
    if dist.float_ is not None:
        return dist.float_[0]
    return dist.choice[0]
