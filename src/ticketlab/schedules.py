"""Density schedules: which densities an iterative or multi-shot method passes through."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

SNAP = 0.01  # relative distance under which a level goes straight to its target


def iterative_densities(targets: float | Sequence[float], K: float, start: float = 1.0) -> list[float]:
    """Densities of iterative pruning levels 1, 2, ...: each level keeps K of the previous one, except that
    no level passes a target: every target density is a level exactly (that level's step may be smaller
    than K), so results exist at each density asked for. The smallest target is the last level. A step
    that would land less than 1% above a target goes to the target itself, so that, e.g., 0.8**18 =
    0.018014 and a target of 0.018 give one level, not a second one that keeps 99.9% of the first."""
    if not 0 < K < 1:
        raise ValueError(f"K must be in (0, 1), got {K}")
    targets = sorted(
        {float(targets)} if isinstance(targets, (int, float)) else {float(t) for t in targets}, reverse=True
    )
    if not targets or not 0 < targets[-1] <= targets[0] <= start:
        raise ValueError(f"target densities must be in (0, {start}], got {targets}")
    out: list[float] = []
    density = start
    for target in targets:
        while density > target * (1 + 1e-9):
            density = density * K if density * K > target * (1 + SNAP) else target
            out.append(density)
    return out


def multishot_densities(
    target: float, rounds: int, kind: Literal["exponential", "linear"] = "exponential", start: float = 1.0
) -> list[float]:
    """Densities of rounds 1..n of multi-shot pruning from ``start`` to ``target``.

    Exponential (SynFlow's default): round r keeps ``start * (target/start)**(r/n)``; linear:
    ``start - (start - target) * r / n``. The last round is the target exactly.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if kind == "exponential":
        out = [start * (target / start) ** (r / rounds) for r in range(1, rounds + 1)]
    elif kind == "linear":
        out = [start - (start - target) * r / rounds for r in range(1, rounds + 1)]
    else:
        raise ValueError(f"round_schedule must be 'exponential' or 'linear', got {kind!r}")
    out[-1] = target
    return out
