"""Where a running experiment stands, for people watching it: which level of how many trains now, the steps
of the current training, the time since the start and an estimate of the time left.

The number of levels comes from the spec (the same schedules the methods run: ``iterative_densities`` for
iterative methods, one level per density for pruning at initialisation and TOM, the sweep grid for
supermasks); a method registered elsewhere (a plugin) tells it with a ``levels(spec) -> N`` attribute of
its function, else shows ``level k`` alone. The
estimate of the time left assumes the trainings still to come take as long per step as those of this session
and as many steps as the current one: an estimate, said to be one (``~``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ticketlab.config.spec import ExperimentSpec
from ticketlab.methods import METHODS, options_of, resolve_method
from ticketlab.schedules import iterative_densities

ITERATIVE = frozenset(
    {"gimp", "finetune", "lottery", "late_rewind", "lr_rewind", "sgimp", "double_pruning", "scored_pruning"}
)
# methods that train the dense level, then one level per target density (each with the spec's controls)
ONE_LEVEL_PER_DENSITY = frozenset({"oneshot", "multishot", "tom", "iter_snip", "force", "edge_popup", "gem_miner"})
UNTRAINED = "untrained"  # supermask sweep points: evaluated, not trained
COMPLEMENT = "complement"  # double pruning: the complement network trained after a level


@dataclass(frozen=True)
class LevelPlan:
    """``last``: the index of the last level (level 0 is the dense network, so a run has ``last`` pruned
    levels); ``trainings``: how many networks the run trains in all (levels, controls, extras). None where
    the method is not one this module knows."""

    last: int | None
    trainings: int | None


def level_plan(spec: ExperimentSpec) -> LevelPlan:
    """How many levels and trainings ``spec``'s method will run (see the module docstring)."""
    key, _ = resolve_method(spec.method)
    controls = len(spec.controls)
    if key in ITERATIVE:
        last = len(iterative_densities(spec.densities, spec.method.K))
        extra = last - 1 if key == "double_pruning" and options_of(spec.method).regrow > 0 else 0
        return LevelPlan(last, 1 + last * (1 + controls) + extra)
    if key in ONE_LEVEL_PER_DENSITY:
        last = len(spec.densities)
        return LevelPlan(last, 1 + last * (1 + controls))
    if key == "supermask":
        from ticketlab.methods.supermask import sweep_densities

        options = options_of(spec.method)
        points = (
            options.thresholds if options.thresholds is not None else sweep_densities(spec.densities, spec.method.K)
        )
        return LevelPlan(len(points), 1 + (1 + controls if options.train_best else 0))
    levels = getattr(METHODS.get(key), "levels", None)  # a method from elsewhere may say: fn.levels(spec) -> N
    return LevelPlan(int(levels(spec)), None) if callable(levels) else LevelPlan(None, None)


def clock(seconds: float) -> str:
    """``0:03:07``: hours, minutes, seconds."""
    s = max(0, int(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class RunStatus:
    """Follows one run: ``begin`` once, ``step`` from the trainer's progress callback, ``finished`` for every
    level written or read back. Safe to read from another thread (a display refreshing itself)."""

    def __init__(self, on_change: Callable[[RunStatus], None] | None = None) -> None:
        self.on_change = on_change
        self.spec: ExperimentSpec | None = None
        self.path: Path | None = None
        self.plan = LevelPlan(None, None)
        self.started = time.monotonic()
        self.rows: list[dict[str, Any]] = []
        self.step_done, self.step_total = 0, 0
        self.evaluating = False
        self._training = False  # inside a training (between its first progress call and its level's record)
        self._trained = 0  # trainings finished in this session
        self._steps = 0  # steps trained in this session
        self._train_seconds = 0.0  # wall time of this session's trainings (evaluations and scoring included)
        self._training_started = 0.0
        self._length = 0  # steps of the current training
        self._first = 0  # its start step
        self._eta: float | None = None
        self._eta_at = 0.0

    # -- events --------------------------------------------------------------------------------------
    def begin(self, spec: ExperimentSpec, path: Path) -> None:
        self.spec, self.path, self.plan = spec, path, level_plan(spec)
        self.started = time.monotonic()
        self._changed()

    def step(self, step: int, total: int, row: dict[str, float] | None) -> None:
        """The trainer's progress callback (``row == {}``: an evaluation is about to start)."""
        now = time.monotonic()
        if not self._training:
            self._training, self._training_started, self._first, self._length = True, now, step, total - step
        else:
            self._steps += max(0, step - self.step_done)
        self.step_done, self.step_total = step, total
        self.evaluating = row is not None and not row
        self._estimate(now)
        self._changed()

    def finished(self, row: dict[str, Any], resumed: bool) -> None:
        """A level (or control) was recorded, or read back from an earlier session."""
        self.rows.append({**row, "resumed": resumed})
        if self._training and not resumed:
            self._train_seconds += time.monotonic() - self._training_started
            self._trained += 1
        self._training, self.evaluating = False, False
        self.step_done = self.step_total = 0
        self._estimate(time.monotonic())
        self._changed()

    # -- views ---------------------------------------------------------------------------------------
    @property
    def last(self) -> int | None:
        return self.plan.last

    def current(self) -> tuple[int, str]:
        """(level, control) that trains now or next: the controls of the last finished level first (and
        double pruning's complement), then the next level; for supermasks the best point of the sweep."""
        tickets = {r["level"] for r in self.rows if not r.get("control")}
        done = {(r["level"], r.get("control") or "") for r in self.rows}
        level = max(tickets, default=-1)
        swept = [r for r in self.rows if r.get("control") == UNTRAINED]
        if swept and self.plan.last is not None and len({r["level"] for r in swept}) >= self.plan.last:
            from ticketlab.methods.supermask import best_point

            level = swept[best_point(swept)]["level"]
            if level not in tickets:
                return level, ""
        if level >= 1 and self.spec is not None:
            for name in self.spec.controls:
                if (level, name) not in done:
                    return level, name
            key, _ = resolve_method(self.spec.method)
            if (
                key == "double_pruning"
                and self.plan.last is not None
                and level < self.plan.last
                and options_of(self.spec.method).regrow > 0
                and (level, COMPLEMENT) not in done
            ):
                return level, COMPLEMENT
        if self.plan.last is not None and level >= self.plan.last:
            return self.plan.last, ""  # every level finished: the run is writing its summary
        return level + 1, ""

    @property
    def done(self) -> bool:
        """Every planned training finished (False where the plan is unknown)."""
        trainings = self.plan.trainings
        return trainings is not None and sum(1 for r in self.rows if r.get("control") != UNTRAINED) >= trainings

    def label(self, level: int | None = None, control: str | None = None) -> str:
        """``level 3/14`` (``level 3/14 reinit`` for a control); the current one by default."""
        if level is None:
            level, control = self.current()
        of = f"/{self.plan.last}" if self.plan.last is not None else ""
        return f"level {level}{of}" + (f" {control}" if control else "")

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float | None:
        """Estimated seconds left (counting down between progress calls), None until there is a rate."""
        if self._eta is None:
            return None
        return max(0.0, self._eta - (time.monotonic() - self._eta_at))

    def line(self, row: dict[str, Any], resumed: bool = False) -> str:
        """One line for a finished level: what it reached, how long it took, the time so far and left."""
        acc = row.get("test_acc")
        text = f"{self.label(row['level'], row.get('control') or '')}: density {row['density']:.4f}"
        text += f", test acc {acc:.4f}" if acc is not None else ""
        if resumed:
            return text + " (already done)"
        took = (row.get("train_time") or 0.0) + (row.get("score_time") or 0.0)
        left = self.remaining()
        return f"{text} ({took:.1f} s) · {clock(self.elapsed())} elapsed" + (
            f", ~{clock(left)} left" if left is not None else ""
        )

    # -- internals -----------------------------------------------------------------------------------
    def _estimate(self, now: float) -> None:
        steps = self._steps + (self.step_done - self._first if self._training else 0)
        seconds = self._train_seconds + (now - self._training_started if self._training else 0.0)
        trainings = self.plan.trainings
        if trainings is None or steps <= 0 or seconds <= 0:
            self._eta = None if trainings is None or self._trained == 0 else self._eta
            return
        finished = sum(1 for r in self.rows if r.get("control") != UNTRAINED)
        after = max(0, trainings - finished - (1 if self._training else 0))
        left_now = max(0, self.step_total - self.step_done) if self._training else 0
        per_training = self._length if self._length > 0 else steps / max(1, self._trained)
        self._eta = seconds / steps * (left_now + after * per_training)
        self._eta_at = now

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)
