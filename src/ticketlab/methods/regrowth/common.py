"""What double-pruning and scored-pruning share (001 §5; the precise rules are ours, see ``double`` and
``scored``): iterative levels whose masks may take back weights pruned earlier, and the value a returning
weight starts from.

Both are GIMP levels (002 algorithm 5, ``methods.levels``) with the step counts of a rewinding preset
(``base``) that start from the rewound reference (:class:`Regrowing`); with ``regrow: 0`` they are that
preset exactly, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ticketlab.masks import Mask, masked_state
from ticketlab.methods.context import Job
from ticketlab.methods.iterative import gimp_steps
from ticketlab.methods.levels import Gimp, GimpSteps, Level
from ticketlab.models import StateDict
from ticketlab.registry import split_name

PRESETS = ("lottery", "gimp", "finetune", "late_rewind", "lr_rewind", "sgimp")


class RegrowthOptions(BaseModel):
    """``regrow``: the most a regrowth may bring back, as a fraction of the weights kept. ``base``: the
    rewinding preset whose steps the levels use (``lottery``, ``lr_rewind``, ``sgimp:75%`` ...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    regrow: float = Field(0.1, ge=0, le=1, description="most returning weights per event, as a fraction of those kept")
    base: str = Field("lottery", description="rewinding preset of the levels: lottery, lr_rewind, sgimp:75% ...")

    @field_validator("base")
    @classmethod
    def _preset(cls, base: str) -> str:
        if split_name(base)[0] not in PRESETS:
            raise ValueError(f"base: {base!r} is not a rewinding preset; allowed: {', '.join(PRESETS)}")
        return base.strip().lower()


def base_steps(job: Job, base: str) -> GimpSteps:
    """The GIMP step counts of the ``base`` preset, with the spec's explicit train/retrain/rewind fields."""
    as_preset = job.spec.method.model_copy(update={"name": base, "options": {}})
    return gimp_steps(as_preset, job.total_steps, job.steps_per_epoch)


def rewound_reference(previous: StateDict | None, rewind: StateDict, mask: Mapping[str, torch.Tensor]) -> StateDict:
    """The value every weight rewinds to: the level's rewind snapshot where a weight was active in it
    (non-zero), else the value it had at the last rewind point where it was. Parameters outside the mask
    (biases, BatchNorm) are the rewind snapshot's. For ``lottery`` this is the initialisation everywhere,
    the "rewound value" a returning weight starts from in double- and scored-pruning."""
    out = {k: v.clone() for k, v in rewind.items()}
    if previous is not None:
        for name in mask:
            out[name] = torch.where(rewind[name] != 0, rewind[name], previous[name])
    return out


def budget(mask: Mapping[str, torch.Tensor], fraction: float, scope: str) -> int | dict[str, int]:
    """floor(fraction * kept): over the whole mask (global scope) or per layer (layerwise)."""

    def floor(kept: int) -> int:
        return math.floor(fraction * kept + 1e-9)  # 0.29 * 100 is 28.999...: not a reason to lose one

    if scope == "global":
        return floor(sum(int(m.sum()) for m in mask.values()))
    return {n: floor(int(m.sum())) for n, m in mask.items()}


class Regrowing(Gimp):
    """GIMP levels in which a weight pruned earlier may return: every level starts from the rewound
    reference (``rewound_reference``), so a returning weight starts from its rewound value, and the
    others exactly where the ``base`` preset starts them."""

    def __init__(self, job: Job, base: str) -> None:
        super().__init__(job, base_steps(job, base))
        self.reference: StateDict | None = None

    def start(self, previous: Level, mask: Mask) -> StateDict:
        assert self.reference is not None
        return masked_state(self.reference, mask)

    def finished(self, level: Level, last: bool) -> None:
        self.reference = rewound_reference(self.reference, level.rewind, level.mask)
