"""Iterative methods whose masks may take back weights pruned earlier (001 §5): double- and scored-pruning."""

from ticketlab.methods.regrowth import double, scored  # noqa: F401  (registers)
