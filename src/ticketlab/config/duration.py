"""Durations written ``40ep`` (epochs) or ``1500it`` (optimiser steps), as everywhere in ticketlab."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ep|it)\s*$")


@dataclass(frozen=True)
class Duration:
    """A length of training. Fractional epochs are allowed (``0.5ep``); steps are whole.

    Durations have no order: whether ``2ep`` is longer than ``100it`` depends on the steps per epoch, so
    compare ``d.steps(steps_per_epoch)``.
    """

    amount: float
    unit: str  # "ep" or "it"

    @classmethod
    def parse(cls, text: str | Duration) -> Duration:
        if isinstance(text, Duration):
            return text
        if re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", str(text)):  # 20 or "20": epochs or steps? never guessed
            number = str(text).strip()
            raise ValueError(
                f"duration {number!r} has no unit: write a number followed by 'ep' (epochs) or 'it' (steps), "
                f"'{number}ep' or '{number}it'"
            )
        match = _PATTERN.match(str(text))
        if match is None:
            raise ValueError(
                f"invalid duration {text!r}: write a number followed by 'ep' (epochs) or 'it' "
                "(steps), e.g. '40ep' or '1500it'"
            )
        amount, unit = float(match.group(1)), match.group(2)
        if unit == "it" and amount != int(amount):
            raise ValueError(f"invalid duration {text!r}: a step count must be a whole number")
        return cls(amount, unit)

    def steps(self, steps_per_epoch: int) -> int:
        """Number of optimiser steps this duration stands for."""
        if self.unit == "it":
            return int(self.amount)
        return round(self.amount * steps_per_epoch)

    def __str__(self) -> str:
        amount = int(self.amount) if self.amount == int(self.amount) else self.amount
        return f"{amount}{self.unit}"
