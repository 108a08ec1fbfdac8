"""Experiment specs: one frozen, validated object describes a whole run (model, data, recipe, method).

The run id hashes only the fields that differ from their defaults (OpenLTH's trick): adding a field with
a default later keeps every existing run directory valid. This layer checks types and values; names are
checked against the registries where a run starts (``ticketlab.experiment.check``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ticketlab.config.recipe import DurationField, Recipe
from ticketlab.config.recipes import expand_recipe
from ticketlab.registry import split_name

UPFRONT = ("oneshot", "multishot")  # methods that prune at initialisation and need a criterion
SAW = "saw"  # init prefix of scores as weights (ticketlab.criteria.saw)


def sparsity_to_density(sparsity: float) -> float:
    """1 - sparsity, rounded to 12 decimals so that sparsity 0.95 is density 0.05 exactly (same run id)."""
    return round(1.0 - float(sparsity), 12)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MethodSpec(_Frozen):
    """How the mask is found. ``name`` is a method (``lottery``, ``sgimp:75%``, ``oneshot`` ...) or, as a
    shorthand, a criterion (``snip`` = one-shot SNIP; ``synflow`` = 100-round multi-shot SynFlow)."""

    name: str = "lottery"
    criterion: str | None = None  # default: magnitude for iterative methods; required for upfront ones
    scope: Literal["global", "layerwise"] = "global"
    K: float = Field(0.8, gt=0, lt=1, description="per-level keep fraction of iterative pruning")
    # None: the method's own number (1; 100 for the synflow shorthand), so an explicit 1 is one round. A spec
    # that leaves it out keeps the run id it had when the default was 1 (unset fields are not hashed).
    rounds: int | None = Field(None, ge=1, description="scoring rounds: upfront multi-shot, or per level (IMS)")
    round_schedule: Literal["exponential", "linear"] = "exponential"
    train: DurationField | None = None  # gimp: dense training length (default: the recipe's)
    retrain: DurationField | None = None
    rewind_params: DurationField | None = None
    rewind_lr: DurationField | None = None
    pruning_batches: int = Field(10, ge=1)
    pruning_samples_per_class: int = Field(10, ge=1)
    include_bias: bool = False  # synflow: keep |b| in the linearised pass (Synaptic-Flow code)
    fail_on_collapse: bool = False
    options: dict[str, Any] = Field(
        default_factory=dict, description="method-specific options, validated by the method"
    )

    @field_validator("name")
    @classmethod
    def _normalised_name(cls, name: str) -> str:
        return name.strip().lower()


class ExperimentSpec(_Frozen):
    """A whole run: the same spec always gives the same results and the same run directory."""

    model: str = "lenet300"
    dataset: str = "fashion-mnist"
    init: str = "kaiming_normal"
    seed: int = 0
    val_size: int = Field(5000, ge=0)
    split_seed: int = 0
    bn_momentum: float = Field(0.1, ge=0, le=1)
    bn_eps: float = Field(1e-5, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    exempt: tuple[str, ...] = ()
    recipe: Recipe = Recipe()
    method: MethodSpec = Field(default_factory=MethodSpec)
    densities: tuple[float, ...] = (0.05,)
    controls: tuple[str, ...] = ()
    end_on_best: bool = False
    save_scores: bool = False

    @model_validator(mode="before")
    @classmethod
    def _density_or_sparsity(cls, data: Any) -> Any:
        # ``density`` (one or a list) and ``sparsity`` (= 1 - density) are ways to write ``densities``; only
        # ``densities`` is stored, so a spec written either way has the same run id
        if not isinstance(data, dict) or not ({"density", "sparsity"} & data.keys()):
            return data
        given = [k for k in ("densities", "density", "sparsity") if k in data]
        if len(given) > 1:
            raise ValueError(
                f"{' and '.join(given)}: give one of densities, density or sparsity (= 1 - density), not both"
            )
        data = dict(data)
        key = given[0]
        values = data.pop(key)
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        if key == "sparsity":
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                    raise ValueError(f"sparsity: {v!r} is not in [0, 1) (sparsity = fraction of weights pruned)")
            values = [sparsity_to_density(v) for v in values]
        data["densities"] = values
        return data

    @field_validator("recipe", mode="before")
    @classmethod
    def _named_recipe(cls, value: Any) -> Any:
        # "cifar_wrn" or {name: cifar_wrn, steps: 2ep}: expanded to the recipe's fields, so the run id is
        # that of the spec writing them out (ticketlab.config.recipes)
        return expand_recipe(value)

    @field_validator("controls")
    @classmethod
    def _controls(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n.lower() for n in names))

    @field_validator("densities")
    @classmethod
    def _densities(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        if not values:
            raise ValueError("give at least one target density in (0, 1]")
        for d in values:
            if not 0 < d <= 1:
                raise ValueError(f"{d} is not in (0, 1] (density = fraction of weights kept; sparsity = 1 - density)")
        return tuple(sorted(set(values), reverse=True))

    @field_validator("init")
    @classmethod
    def _init(cls, name: str) -> str:
        key, arg = split_name(name)
        if key == SAW:  # scores as weights: one spelling per criterion keeps run ids and stored inits unique
            if not arg:
                raise ValueError(f"init {name!r}: scores as weights are written saw:<criterion>, e.g. saw:snip")
            return f"{SAW}:{''.join(arg.lower().split())}"
        return name

    @model_validator(mode="after")
    def _saw_controls(self) -> ExperimentSpec:
        if split_name(self.init)[0] == SAW and self.controls:
            raise ValueError(
                f"controls: not available with init {self.init!r} (controls draw fresh weights of the spec's "
                "init, and scores as weights need data); run them with a data-free init"
            )
        return self

    def non_default(self) -> dict[str, Any]:
        """The fields that differ from their defaults, recursively, in JSON form."""
        return _non_default(self)

    def run_id(self) -> str:
        text = json.dumps(self.non_default(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _non_default(obj: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in type(obj).model_fields.items():
        value = getattr(obj, name)
        default = field.get_default(call_default_factory=True)
        if isinstance(value, BaseModel):
            nested = _non_default(value)
            if nested:
                out[name] = nested
        elif value != default:
            out[name] = json.loads(type(obj).model_validate(obj).model_dump_json(include={name}))[name]
    return out


def load_spec(path: str | os.PathLike, sets: Iterable[str] = ()) -> ExperimentSpec:
    """Read a YAML spec, with ``--set key=value`` assignments (dotted paths, YAML values) applied; unknown
    keys, wrong types and impossible values are rejected by field name, each problem one line naming the
    file (or the ``--set`` that gave the value). An empty file is refused: it would run the all-defaults
    experiment."""
    from ticketlab.config.keyvalue import apply_sets
    from ticketlab.config.problems import problem
    from ticketlab.config.yamlfile import load_mapping

    sets = list(sets)
    data = apply_sets(
        load_mapping(path, "spec", "model, dataset, densities and a method, e.g. 'densities: [0.05]'"), sets
    )
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        keys = {text.partition("=")[0].strip() for text in sets}
        lines = []
        for error in exc.errors():
            line = problem(error, ExperimentSpec)
            field = line.partition(": ")[0]
            lines.append(
                f"--set {line}" if any(field == k or field.startswith(k + ".") for k in keys) else f"{path}: {line}"
            )
        raise ValueError("\n".join(lines)) from None
