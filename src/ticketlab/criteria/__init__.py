"""Scoring criteria: (model, mask, context) -> one score tensor per masked weight, higher = keep.

``score("snip", model, mask, ctx)`` looks a name up in :data:`CRITERIA`; ``"stacked(A, B)"`` (000's
algorithm 1) and ``"stacked_signed(A, B)"`` compose any two names (nesting allowed). Every criterion scores
the masked network from a clean state and leaves the model's weights, buffers, gradients and train/eval
mode exactly as they were.
One file per criterion registers it; ``scoring`` parses names and composes them; ``learned`` is the
meta-learned criterion ``meta:<path>``; ``saw`` initialises a model with a criterion's scores.
"""

from ticketlab.criteria import (  # noqa: F401  (register)
    grasp,
    learned,
    magnitude,
    ntk_sap,
    phew,
    prospr,
    random_erk,
    snip,
    supermask,
    synflow,
)
from ticketlab.criteria.base import CRITERIA, DATA_AWARE, Criterion, Scores, ScoringContext
from ticketlab.criteria.scoring import (
    PARAMETRIC,
    STACKED,
    STACKED_SIGNED,
    Parametric,
    Stack,
    criterion_names,
    is_data_aware,
    parse,
    score,
    stacked,
)

__all__ = [
    "CRITERIA", "DATA_AWARE", "PARAMETRIC", "STACKED", "STACKED_SIGNED", "Criterion", "Parametric", "Scores",
    "ScoringContext", "Stack", "criterion_names", "is_data_aware", "parse", "score", "stacked",
]  # fmt: skip
