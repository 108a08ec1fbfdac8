"""Iterative pruning as GIMP (002 algorithm 5) and its named presets.

Level 0 trains the dense network for ``train`` steps. Level l >= 1 prunes the previous level's trained
weights to ``density_{l-1} * K`` (any criterion; ``rounds`` > 1 makes the prune step multi-shot = IMS),
rewinds the parameters ``rewind_params`` steps back along the previous level's trajectory, rewinds the
LR schedule ``rewind_lr`` steps from where the previous level ended, and retrains ``retrain`` steps.

Presets with T = the training length (002 §3.1-3.3):
  finetune        rewind_params 0, rewind_lr 0, retrain T   (constant final LR: past the schedule's end)
  lottery         rewind_params T, rewind_lr T, retrain T   (IMP, weights back to step 0; 003)
  late_rewind:k   rewind_params T-k, rewind_lr T-k, retrain T-k (stable weight rewinding to step k)
  lr_rewind       rewind_params 0, rewind_lr T, retrain T   (Renda et al. 2020)
  sgimp:X%        rewind_params X%·T, rewind_lr T, retrain T (002 algorithm 6, default X = 75)

The level loop is ``methods.levels.run_levels`` with GIMP's default hooks; this module resolves the step
counts of each preset.
"""

from __future__ import annotations

from ticketlab.config.duration import Duration
from ticketlab.config.spec import MethodSpec
from ticketlab.methods.context import Job
from ticketlab.methods.levels import Gimp, GimpSteps, run_levels
from ticketlab.methods.registry import METHODS
from ticketlab.registry import split_name


def gimp_steps(method: MethodSpec, total: int, spe: int) -> GimpSteps:
    """The four GIMP step counts of a method spec, presets resolved, explicit fields overriding them."""
    key, arg = split_name(method.name)
    T = method.train.steps(spe) if method.train is not None else total
    if key == "finetune":
        base = GimpSteps(T, T, 0, 0)
    elif key in ("lottery", "gimp"):
        base = GimpSteps(T, T, T, T)
    elif key == "late_rewind":
        if arg is None:
            raise ValueError("method late_rewind needs the rewind step, e.g. late_rewind:500it or late_rewind:1ep")
        k = Duration.parse(arg).steps(spe)
        if not 0 <= k < T:
            raise ValueError(f"late_rewind step {arg} must lie inside the training (0 <= k < {T} steps)")
        base = GimpSteps(T, T - k, T - k, T - k)
    elif key == "lr_rewind":
        base = GimpSteps(T, T, 0, T)
    elif key == "sgimp":
        text = (arg or "75%").rstrip("%")
        try:
            x = float(text) / 100
        except ValueError:
            raise ValueError(f"sgimp takes a percentage of training to rewind, e.g. sgimp:75%, got {arg!r}") from None
        if not 0 <= x <= 1:
            raise ValueError(f"sgimp percentage must be within 0% and 100%, got {arg!r}")
        base = GimpSteps(T, T, round(x * T), T)
    else:
        raise ValueError(f"{method.name!r} is not an iterative method")

    def pick(value: Duration | None, default: int) -> int:
        return default if value is None else value.steps(spe)

    steps = GimpSteps(
        base.train,
        pick(method.retrain, base.retrain),
        pick(method.rewind_params, base.rewind_params),
        pick(method.rewind_lr, base.rewind_lr),
    )
    if steps.rewind_params > min(steps.train, steps.retrain):
        raise ValueError(
            f"rewind_params ({steps.rewind_params} steps) must not exceed the steps trained per level "
            f"(train {steps.train}, retrain {steps.retrain})"
        )
    return steps


def _iterative(job: Job) -> None:
    run_levels(job, Gimp(job, gimp_steps(job.spec.method, job.total_steps, job.steps_per_epoch)))


for _name in ("gimp", "finetune", "lottery", "late_rewind", "lr_rewind", "sgimp"):
    METHODS.register(_name)(_iterative)
