"""``key=value`` pairs of the repeatable command-line flags that set spec fields or options
(``--option regrow=0.1``, ``--set recipe.steps=1ep``, ``--param forest.n_estimators=100``): one parser, so
every flag reads values and reports mistakes the same way. It lives here, not in ``ticketlab.cli``, because
``ticketlab.sweep`` (below the CLI) applies ``--set`` itself."""

from __future__ import annotations

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
