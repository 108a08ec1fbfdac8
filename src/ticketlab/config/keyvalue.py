"""``key=value`` pairs of the repeatable command-line flags that set spec fields or options
(``--option regrow=0.1``, ``--set recipe.steps=1ep``, ``--param forest.n_estimators=100``): one parser, so
every flag reads values and reports mistakes the same way. It lives here, not in ``ticketlab.cli``, because
``ticketlab.sweep`` (below the CLI) applies ``--set`` itself."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any


def parse_key_value(text: str, flag: str, example: str, form: str = "key=value") -> tuple[str, Any]:
    """``"recipe.lr=0.1"`` -> ``("recipe.lr", 0.1)``: the key stripped, the value read as YAML (``0.1`` a
    float, ``[1, 2]`` a list, ``1ep`` a string, nothing ``None``).

    A malformed pair raises ``ValueError`` with one line naming the flag and an example, e.g.
    ``--set takes key=value, e.g. --set recipe.steps=1ep; got 'recipe.steps'``; ``form`` is what the
    message says the flag takes (``model.key=value`` for a key the caller splits further).
    """
    import yaml

    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"{flag} takes {form}, e.g. {flag} {example}; got {text!r}")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError:
        raise ValueError(f"{flag} {key}: {value.strip()!r} is not a YAML value, e.g. {flag} {example}") from None


def set_path(data: dict[str, Any], dotted: str, value: Any, what: str = "--set") -> None:
    """``data`` with ``value`` at the dotted path (``recipe.steps``), groups made on the way; a named group
    (``recipe: cifar_wrn``) becomes ``{name: cifar_wrn}`` so that its fields can be overridden."""
    node = data
    *parents, leaf = dotted.split(".")
    for name in parents:
        child = node.get(name)
        if child is None:
            child = node[name] = {}
        elif isinstance(child, str):  # a named group (recipe: cifar_wrn) whose fields are being overridden
            child = node[name] = {"name": child}
        elif not isinstance(child, dict):
            raise ValueError(f"{what} {dotted!r}: {name!r} is not a group of fields")
        node = child
    node[leaf] = value


def apply_sets(data: dict[str, Any], assignments: Iterable[str], example: str = "recipe.steps=1ep") -> dict[str, Any]:
    """A copy of ``data`` with every ``--set key=value`` applied (dotted spec paths, YAML values)."""
    out = copy.deepcopy(data)
    for text in assignments:
        key, value = parse_key_value(text, "--set", example)
        set_path(out, key, value)
    return out
