"""What a run is, as frozen, validated data: durations, training recipes (and the documents' named ones)
and experiment specs.

This layer checks types and values only; names (models, datasets, methods, criteria, controls,
initialisations) are checked against their registries where a run starts (``ticketlab.experiment``).
"""

from ticketlab.config.duration import Duration
from ticketlab.config.recipe import DurationField, EarlyStop, Recipe
from ticketlab.config.recipes import RECIPES, named_recipe
from ticketlab.config.spec import UPFRONT, ExperimentSpec, MethodSpec, load_spec

__all__ = [
    "RECIPES",
    "UPFRONT",
    "Duration",
    "DurationField",
    "EarlyStop",
    "ExperimentSpec",
    "MethodSpec",
    "Recipe",
    "load_spec",
    "named_recipe",
]
