"""Training and evaluation: the trainer core every way of training runs on (``core``), one model
(``loop``), K models of one architecture stacked in one pass (``stacked``), the fused SGD and Adam steps for MLPs
(``fused_sgd``) and its sparse variant for pruned layers (``sparse``), evaluation (``evaluate``)."""

from ticketlab.training.core import Progress, TrainResult, plan_steps, steps_per_epoch
from ticketlab.training.evaluate import evaluate
from ticketlab.training.loop import MaskUpdate, TrainHooks, train
from ticketlab.training.stacked import train_many, vectorizable

__all__ = [
    "MaskUpdate", "Progress", "TrainHooks", "TrainResult", "evaluate", "plan_steps", "steps_per_epoch", "train",
    "train_many", "vectorizable",
]  # fmt: skip
