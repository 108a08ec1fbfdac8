"""Sweeps: a grid over any spec fields, expanded to validated specs and run by local processes or Ray.

A sweep file is a ``base`` spec plus a ``grid`` of dotted field paths (``method.name``, ``seed``,
``recipe.lr``, ``method.options.regrow``) or template variables (``h`` in ``model: "mlp:784-{h}-10"``)
mapped to value lists. A template variable whose values are mappings couples several fields in one grid
axis: ``model: "{net.model}"`` and ``recipe: "{net.recipe}"`` with ``net: [{model: vgg19, recipe:
cifar_vgg}, ...]`` give each model its own recipe instead of every model every recipe. Every grid point is
an ordinary run in the run store, so a finished run is skipped and an interrupted sweep resumes by running
it again.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ticketlab.config.keyvalue import parse_key_value, set_path
from ticketlab.config.problems import problem
from ticketlab.config.spec import ExperimentSpec
from ticketlab.experiment.check import check_spec
from ticketlab.sweep.layout import MODES, Layout

_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")


class SweepSpec(BaseModel):
    """A sweep file: ``base`` spec, ``grid`` of values, and how to run it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    executor: Literal["local", "ray"] = "local"
    workers: int | None = Field(
        None,
        ge=1,
        description="local: worker processes (default: measured, see layout); "
        "ray: tasks an architecture's runs are spread over (default 8)",
    )
    threads_per_worker: int | None = Field(
        None, ge=1, description="torch threads per worker (local default: measured, see layout; ray: 1)"
    )
    address: str | None = None  # ray: cluster address (default: a local instance)
    out: str = "runs"
    device: str = "auto"  # as every command: CUDA where there is one
    batch: int | None = Field(
        None,
        ge=1,
        description="runs handed to one worker task, trained stacked (local default: measured, see layout; "
        "ray: an architecture's runs shared evenly among the tasks, at most 16 per task, on CUDA, else 1)",
    )
    layout: str | None = Field(
        None,
        description="local: PROCESSESxTHREADSxSTACK, e.g. 2x1x4, auto (default, also $TICKETLAB_LAYOUT): "
        "timed once per machine and workload and cached (ticketlab.sweep.layout), or remeasure (timed "
        "again, cache replaced); workers, threads_per_worker and batch fix one part each",
    )
    tensorboard: bool = False

    @field_validator("layout")
    @classmethod
    def _layout(cls, value: str | None) -> str | None:
        if value is not None and value.strip().lower() not in MODES:
            Layout.parse(value)
        return value

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid key {key!r} has no values")
        return grid


def load_sweep(path: str | os.PathLike) -> SweepSpec:
    """Read a sweep YAML file (``base``, ``grid`` and executor settings); each problem is one line naming the
    file (an empty file too: it would run the all-defaults experiment)."""
    from ticketlab.config.problems import field_problems
    from ticketlab.config.yamlfile import load_mapping

    data = load_mapping(path, "sweep", "a 'base' spec and a 'grid', e.g. 'grid: {seed: [0, 1]}'")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise ValueError(field_problems(exc, f"{path}: ", SweepSpec)) from None


def set_base(sweep: SweepSpec, assignments: Iterable[str]) -> SweepSpec:
    """The sweep with ``key=value`` assignments (dotted spec paths, YAML values) applied to its base,
    e.g. ``recipe.steps=1ep`` for a reduced-budget run of a suite; a key also in the grid is rejected."""
    base = copy.deepcopy(sweep.base)
    for text in assignments:
        key, value = parse_key_value(text, "--set", "recipe.steps=1ep")
        if key in sweep.grid:
            raise ValueError(f"--set {key}: {key!r} is a grid key of this sweep; change the grid instead")
        set_path(base, key, value)
    return sweep.model_copy(update={"base": base})


# -- expansion ----------------------------------------------------------------------------------------
def template_variables(base: Any) -> set[str]:
    """The grid keys used as ``{name}`` (or ``{name.key}``) placeholders in any string of ``base``."""
    return {name.partition(".")[0] for name in _placeholders(base)}


def _placeholders(base: Any) -> set[str]:
    if isinstance(base, str):
        return set(_VARIABLE.findall(base))
    if isinstance(base, dict):
        return set().union(*(_placeholders(v) for v in base.values())) if base else set()
    if isinstance(base, (list, tuple)):
        return set().union(*(_placeholders(v) for v in base)) if base else set()
    return set()


_MISSING = object()


def _value_of(values: dict[str, Any], name: str) -> Any:
    """The value of placeholder ``name`` (``h`` or ``net.model``); _MISSING when its grid key is not given."""
    key, *path = name.split(".")
    if key not in values:
        return _MISSING
    value = values[key]
    for part in path:
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"{{{name}}}: the grid value {values[key]!r} of {key!r} has no key {part!r}")
        value = value[part]
    return value


def _substitute(base: Any, values: dict[str, Any]) -> Any:
    if isinstance(base, str):
        whole = _VARIABLE.fullmatch(base)
        if whole and (value := _value_of(values, whole.group(1))) is not _MISSING:  # "{lr}" alone keeps its type
            return value

        def text(m: re.Match[str]) -> str:
            value = _value_of(values, m.group(1))
            return m.group(0) if value is _MISSING else str(value)

        return _VARIABLE.sub(text, base)
    if isinstance(base, dict):
        return {k: _substitute(v, values) for k, v in base.items()}
    if isinstance(base, list):
        return [_substitute(v, values) for v in base]
    return base


def instantiate(base: dict[str, Any], point: dict[str, Any]) -> ExperimentSpec:
    """The spec of one grid point: template variables substituted, dotted paths set, then validated.

    A key used as ``{key}`` or ``{key.field}`` in ``base`` is a template variable; any other key is a spec
    field path.
    Validation errors name the grid point, so a typo in a grid value points at its key.
    """
    variables = template_variables(base)
    where = ", ".join(f"{k}={v!r}" for k, v in point.items())
    try:
        data = _substitute(copy.deepcopy(base), {k: v for k, v in point.items() if k in variables})
        for key, value in point.items():
            if key not in variables:
                set_path(data, key, value, "grid key")
        return check_spec(ExperimentSpec.model_validate(data))
    except ValidationError as exc:
        problems = "; ".join(problem(e, ExperimentSpec) for e in exc.errors())
        raise ValueError(f"grid point ({where}): {problems}") from None
    except ValueError as exc:
        raise ValueError(f"grid point ({where}): {exc}") from None


def grid_points(sweep: SweepSpec) -> list[tuple[dict[str, Any], ExperimentSpec]]:
    """Every grid point (key -> value) with its validated spec, in grid order; points giving an
    already-seen run id are dropped (e.g. a value equal to the base's)."""
    keys = list(sweep.grid)
    seen: set[str] = set()
    out = []
    for combo in itertools.product(*(sweep.grid[k] for k in keys)):
        point = dict(zip(keys, combo))
        spec = instantiate(sweep.base, point)
        if spec.run_id() not in seen:
            seen.add(spec.run_id())
            out.append((point, spec))
    return out


def expand(sweep: SweepSpec) -> list[ExperimentSpec]:
    """The cartesian product of the grid as validated specs, one per distinct run id."""
    return [spec for _, spec in grid_points(sweep)]
