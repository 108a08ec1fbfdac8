"""Density schedules: which densities an iterative or multi-shot method passes through."""

from __future__ import annotations

from typing import Literal


def iterative_densities(target: float, K: float, start: float = 1.0) -> list[float]:
    """Densities of iterative pruning levels 1, 2, ...: ``start * K**l`` until the target, which is the last
    level exactly (its step may be smaller than K)."""
    if not 0 < K < 1:
        raise ValueError(f"K must be in (0, 1), got {K}")
    if not 0 < target <= start:
        raise ValueError(f"target density must be in (0, {start}], got {target}")
    out: list[float] = []
    density = start
    while density > target * (1 + 1e-9):
        density = max(density * K, target)
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
